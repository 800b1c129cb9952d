// Package localexec is the executor.Executor adapter that runs commands as
// processes on the worker's own machine, each project's in a directory under
// one root.
//
// Every command runs in its own process group, so stopping it reaches every
// process it started (unless one deliberately leaves the group, with setsid
// for instance). A workspace is a directory, not a sandbox: the command runs
// as the worker's user and can read and write whatever that user can.
package localexec

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/executor"
)

// Config configures an Executor. The zero value of each field but Root
// selects its default.
type Config struct {
	// Root holds the workspaces: project p works in Root/p. Root and the
	// workspaces are created on demand, with mode 0o750.
	Root string
	// BaseEnv is the environment ("KEY=value" entries) every command starts
	// from. Default: PATH=/usr/local/bin:/usr/bin:/bin and LANG=C.UTF-8.
	// Nothing else of the worker's own environment (credentials included)
	// reaches commands unless the caller puts it here: the worker's wiring
	// adds its own PATH and the variables named for passthrough. HOME
	// follows (see Home); Spec.Env is added last and overrides all.
	BaseEnv []string
	// Home is the HOME of every command; "" is the project's workspace.
	// Point it at a directory holding a login (e.g. ~/.claude) to share
	// that login with the jobs.
	Home string
	// KillGrace is how long a stopped command's process group has between
	// SIGTERM and SIGKILL, and how long Exec waits for output from a process
	// that left the group and still holds stdout or stderr. Default 2s.
	KillGrace time.Duration
	// User, when set, is who every command runs as: rdev runs as root, its
	// jobs as an unprivileged user that cannot read the data directory
	// (JetStream files, NATS credentials). Each workspace is handed to this
	// user; Root is made traversable (0711) but not listable by others, and
	// every directory above Root must be traversable too.
	User *User
	// Nice is added to the worker's own niceness, as nice(1) -n does, for
	// the commands of each priority listed (at most 19 in all): the
	// system's own work (NATS, the API, this worker) and higher-priority
	// jobs then get the CPU before them when it is short. Values are 0 to
	// 19, or NiceIdle; a level not listed runs at the worker's niceness.
	Nice map[contracts.Priority]int
}

// User is a uid and gid to run commands as, without supplementary groups.
type User struct {
	UID, GID uint32
}

func (c *Config) setDefaults() {
	if c.BaseEnv == nil {
		c.BaseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	}
	if c.KillGrace == 0 {
		c.KillGrace = 2 * time.Second
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.Root == "" {
		return errors.New("localexec: Root is required")
	}
	if c.Home != "" && !filepath.IsAbs(c.Home) {
		return fmt.Errorf("localexec: Home %q is not an absolute path", c.Home)
	}
	if c.KillGrace < 0 {
		return fmt.Errorf("localexec: KillGrace %v is negative", c.KillGrace)
	}
	for p, n := range c.Nice {
		if _, err := contracts.ParsePriority(string(p)); err != nil || p == "" {
			return fmt.Errorf("localexec: Nice: unknown priority %q", p)
		}
		if (n < 0 || n > 19) && n != NiceIdle {
			return fmt.Errorf("localexec: Nice of %s is %d: want 0 to 19 or NiceIdle (a job may only get less CPU than the worker)", p, n)
		}
	}
	for _, kv := range c.BaseEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || !validEnvName(k) {
			return fmt.Errorf("localexec: BaseEnv entry %q is not KEY=value", kv)
		}
	}
	return nil
}

// Executor runs commands as local processes; it implements
// executor.Executor and is safe for concurrent use.
type Executor struct {
	root    string
	user    *User
	baseEnv []string
	home    string
	grace   time.Duration
	nice    map[contracts.Priority]int

	// devNull is every command's standard input, opened once: exec.Cmd
	// would open and close /dev/null for each command.
	devNull *os.File
	// bufs holds the relays' read buffers: two 64 KiB buffers per command
	// were most of what a short job allocated.
	bufs sync.Pool
}

var _ executor.Executor = (*Executor)(nil)

// New returns an Executor configured by cfg, with defaults applied.
func New(cfg Config) (*Executor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("localexec: root: %w", err)
	}
	if cfg.User != nil {
		if err := traversable(root); err != nil {
			return nil, err
		}
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("localexec: %w", err)
	}
	e := &Executor{root: root, user: cfg.User, baseEnv: slices.Clone(cfg.BaseEnv), home: cfg.Home, grace: cfg.KillGrace,
		nice: maps.Clone(cfg.Nice), devNull: devNull}
	e.bufs.New = func() any { return new([relayBuf]byte) }
	return e, nil
}

// traversable makes root reachable by another user: root itself 0711
// (its project list stays private), and checks every directory above.
func traversable(root string) error {
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fmt.Errorf("localexec: root: %w", err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		return fmt.Errorf("localexec: root: %w", err)
	}
	for dir := filepath.Dir(root); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("localexec: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("localexec: the job user cannot reach the workspaces: %s has mode %v (want o+x)", dir, fi.Mode().Perm())
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// Exec runs spec as described by executor.Executor.
//
// The command runs in its own process group. When ctx ends, the group gets
// SIGTERM, then SIGKILL after KillGrace; when the command's first process
// exits (by itself or not), whatever is left of the group gets SIGKILL, and
// Exec waits for those processes to die for at most KillGrace.
func (e *Executor) Exec(ctx context.Context, spec executor.Spec, stdout, stderr io.Writer) (int, error) {
	if ctx.Err() != nil {
		return -1, fmt.Errorf("command not started: %w", context.Cause(ctx))
	}
	cmd, err := e.command(spec)
	if err != nil {
		return -1, err
	}
	return e.run(ctx, cmd, stdout, stderr, spec.MergeStderr, e.nice[cmp.Or(spec.Priority, contracts.PriorityNormal)])
}

// command prepares spec to run, checking everything that would keep it from
// starting.
func (e *Executor) command(spec executor.Spec) (*exec.Cmd, error) {
	if len(spec.Command) == 0 {
		return nil, fmt.Errorf("%w: empty command", executor.ErrStart)
	}
	if !contracts.ValidProjectID(spec.Project) {
		return nil, fmt.Errorf("%w: project %q is not a DNS label", executor.ErrStart, spec.Project)
	}
	ws := filepath.Join(e.root, spec.Project)
	if err := os.MkdirAll(ws, 0o750); err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if u := e.user; u != nil {
		// The job writes in its workspace and nowhere else of rdev's.
		if err := os.Chown(ws, int(u.UID), int(u.GID)); err != nil {
			return nil, fmt.Errorf("%w: hand the workspace to the job user: %w", executor.ErrStart, err)
		}
		attr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}
	}
	dir, err := workDir(ws, spec.WorkDir)
	if err != nil {
		return nil, err
	}
	extra := spec.Env
	if len(spec.SecretEnv) > 0 {
		extra = maps.Clone(spec.Env)
		if extra == nil {
			extra = map[string]string{}
		}
		maps.Copy(extra, spec.SecretEnv) // in the process environment only
	}
	env, err := e.environ(ws, extra)
	if err != nil {
		return nil, err
	}
	path, err := lookPath(spec.Command[0], envPath(env), dir)
	if err != nil {
		return nil, err
	}
	return &exec.Cmd{
		Path:        path,
		Args:        slices.Clone(spec.Command),
		Env:         env,
		Dir:         dir,
		Stdin:       e.devNull,
		SysProcAttr: attr,
	}, nil
}

// workDir resolves rel inside the workspace ws. The check guards against
// mistakes, not attacks: the command itself can go anywhere.
func workDir(ws, rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", fmt.Errorf("%w: work dir %q is not relative", executor.ErrStart, rel)
	}
	dir := filepath.Join(ws, rel)
	if dir == ws {
		// The workspace itself, which command has just made sure is a
		// directory: nothing to resolve (a dozen system calls a job).
		return dir, nil
	}
	if !within(ws, dir) {
		return "", fmt.Errorf("%w: work dir %q escapes the workspace", executor.ErrStart, rel)
	}
	realWS, err := filepath.EvalSymlinks(ws)
	if err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("%w: work dir %q: %w", executor.ErrStart, rel, err)
	}
	if !within(realWS, realDir) {
		return "", fmt.Errorf("%w: work dir %q escapes the workspace through a symlink", executor.ErrStart, rel)
	}
	if fi, err := os.Stat(realDir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%w: work dir %q is not a directory", executor.ErrStart, rel)
	}
	return dir, nil
}

// within reports whether path is root or below it; both are clean.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// environ builds a command's environment: the base, HOME, then extra in a
// stable order. exec.Cmd keeps the last value of a repeated name.
func (e *Executor) environ(ws string, extra map[string]string) ([]string, error) {
	env := make([]string, 0, len(e.baseEnv)+1+len(extra))
	env = append(env, e.baseEnv...)
	env = append(env, "HOME="+cmp.Or(e.home, ws))
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if !validEnvName(k) || strings.ContainsRune(extra[k], 0) {
			return nil, fmt.Errorf("%w: invalid environment variable %q", executor.ErrStart, k)
		}
		env = append(env, k+"="+extra[k])
	}
	return env, nil
}

func validEnvName(k string) bool {
	return k != "" && !strings.ContainsAny(k, "=\x00")
}

// envPath returns the value of the last PATH entry of env.
func envPath(env []string) string {
	for _, kv := range slices.Backward(env) {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds the program name in the command's own PATH, not the
// worker's. A name with a '/' is taken as it is, relative to dir. Relative
// PATH entries are skipped, as os/exec does, so that a workspace file cannot
// stand in for a system program.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%w: %w", executor.ErrStart, err)
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		if p := filepath.Join(d, name); executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q not found in PATH %q", executor.ErrStart, name, path)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: %w", path, os.ErrPermission)
	}
	return nil
}

// run starts cmd and supervises it to the end. With merge, stderr goes to
// the stdout pipe (as 2>&1 does), so the two keep the order the command
// wrote them in, and the stderr writer gets nothing.
func (e *Executor) run(ctx context.Context, cmd *exec.Cmd, stdout, stderr io.Writer, merge bool, nice int) (int, error) {
	// The pipes are ours rather than exec.Cmd's: its WaitDelay would also cut
	// off a slow writer still draining output the command printed before
	// it exited, and that output must arrive complete.
	outR, outW, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return -1, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	if merge {
		cmd.Stderr = outW
	}
	startErr := start(cmd, nice)
	outW.Close() // the command holds its own copies
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return -1, fmt.Errorf("%w: %w", executor.ErrStart, startErr)
	}
	pgid := cmd.Process.Pid // Setpgid: the group is named after its leader

	// A writer failing cancels ctx too, so the command stops either way.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	relays := []*relay{
		newRelay(outR, stdout, "stdout", cancel, e.grace, &e.bufs),
		newRelay(errR, stderr, "stderr", cancel, e.grace, &e.bufs),
	}
	var wg sync.WaitGroup
	for _, r := range relays {
		wg.Go(r.run)
	}

	stopped := e.supervise(ctx, pgid)
	// The leader is a zombie until cmd.Wait reaps it, which keeps its pid,
	// and so the group id, from being reused: signalling the group is safe
	// up to that point, and not after.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	waitErr := cmd.Wait()

	for _, r := range relays {
		r.leaderExited()
	}
	relaysDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(relaysDone)
	}()
	cut := false
	select {
	case <-relaysDone:
	case <-ctx.Done():
		cut = true
		stopAt := time.Now().Add(e.grace)
		for _, r := range relays {
			r.stop(stopAt)
		}
		<-relaysDone
	}
	awaitGroupExit(pgid, e.grace)

	if stopped || cut {
		return -1, fmt.Errorf("command stopped: %w", context.Cause(ctx))
	}
	for _, r := range relays {
		if r.err != nil {
			return -1, r.err
		}
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return -1, fmt.Errorf("wait: %w", waitErr)
	}
	return exitCode(cmd.ProcessState), nil
}

// supervise waits for the group leader pid to exit, without reaping it.
// When ctx ends first, it sends the group SIGTERM, then SIGKILL after the
// grace period, and reports that it did.
func (e *Executor) supervise(ctx context.Context, pid int) (stopped bool) {
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitExit(pid)
	}()
	done := ctx.Done()
	var kill *time.Timer
	var killC <-chan time.Time
	defer func() {
		if kill != nil {
			kill.Stop()
		}
	}()
	for {
		select {
		case <-exited:
			return stopped
		case <-done:
			done, stopped = nil, true
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			kill = time.NewTimer(e.grace)
			killC = kill.C
		case <-killC:
			killC = nil
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// exitCode reports a finished process's status as shells do: its exit
// status, or 128+signal when a signal killed it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
