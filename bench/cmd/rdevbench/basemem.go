package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rdev-dev/rdev/bench/internal/proc"
)

// basemem reports what an idle worker and an idle streamer hold once
// they have started (separate processes, as memory runs them), split into
// anonymous memory (heap, stacks, the runtime's own: the process's alone)
// and file-backed memory (pages of the rdev binary it touched: shared by
// every process running that binary, clean, dropped by the kernel under
// pressure). The baseline is the minimal Go SSE broadcaster (rdevbench
// sse-broadcaster), idle, measured the same way in the same run.
func basemem(ctx context.Context, e *env, _ config) ([]figure, error) {
	figs := []figure{loadFigure("load average (1 min) at start")}
	up, worker, streamer, err := split(ctx, e, "basemem", 1)
	if err != nil {
		return figs, err
	}
	for _, p := range []*proc.Process{worker, streamer, up} {
		m, err := settle(ctx, p)
		if err != nil {
			return figs, err
		}
		figs = append(figs, memFigures(roleOf(p)+" idle", m)...)
	}
	e.stopAll()

	bc, err := startBroadcaster(ctx, e, "basemem-broadcaster")
	if err != nil {
		return figs, err
	}
	defer bc.Stop()
	m, err := settle(ctx, bc)
	if err != nil {
		return figs, err
	}
	figs = append(figs, memFigures("broadcaster idle (baseline)", m)...)
	self, err := os.Executable()
	if err != nil {
		return figs, err
	}
	for name, path := range map[string]string{"rdev binary": e.bin, "rdevbench binary (the broadcaster's)": self} {
		st, err := os.Stat(path)
		if err != nil {
			return figs, fmt.Errorf("%s: %w", name, err)
		}
		figs = append(figs, fig(name+" size", float64(st.Size())/mib, "MiB"))
	}
	return append(figs, loadFigure("load average (1 min) at end")), nil
}

// memFigures are m's resident set and its anonymous and file-backed parts.
func memFigures(who string, m proc.Mem) []figure {
	return []figure{
		fig(who+" VmRSS", float64(m.RSS)/mib, "MiB"),
		fig(who+" RssAnon", float64(m.Anon)/mib, "MiB"),
		fig(who+" RssFile", float64(m.File)/mib, "MiB"),
	}
}

// startBroadcaster starts the minimal Go SSE broadcaster (rdevbench
// sse-broadcaster: this binary) as the process name, its log beside
// rdev's.
func startBroadcaster(ctx context.Context, e *env, name string) (*proc.Process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return proc.Start(ctx, name, self, filepath.Join(e.logs, name+".log"), "sse-broadcaster")
}
