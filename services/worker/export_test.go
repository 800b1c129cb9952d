package worker

import "github.com/rdev-dev/rdev/services/worker/internal/executor"

// WithExecutor returns cfg running jobs through exec instead of the
// configured executor.
func WithExecutor(cfg Config, exec executor.Executor) Config { cfg.exec = exec; return cfg }

// WithJitter returns cfg with the backoff's jitter drawn from jitter.
func WithJitter(cfg Config, jitter func() float64) Config { cfg.jitter = jitter; return cfg }
