// Package proc starts rdev processes for the benchmark harness, waits for
// their "rdev ready" line, stops them, and reads their memory use from
// /proc.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a running rdev process.
type Process struct {
	// Name labels the process in errors and logs (e.g. "streamer").
	Name string
	// HTTP is the base URL it serves, e.g. http://127.0.0.1:1234, if any.
	HTTP string
	// NATS is the client URL of its embedded NATS server, if any.
	NATS string
	// Log is the file its stderr goes to.
	Log string

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited closes
}

// Start runs bin with args, its stderr appended to logPath, and waits up to
// a minute (or until ctx ends) for its "rdev ready" line.
//
// The process gets its own process group, so a Ctrl-C at the terminal
// reaches only the harness, which then stops it in order; it is killed if
// the harness dies without stopping it.
func Start(ctx context.Context, name, bin, logPath string, args ...string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "rdev ready") {
				select {
				case ready <- sc.Text():
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()

	select {
	case line := <-ready:
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "http="); ok {
				p.HTTP = "http://" + v
			}
			if v, ok := strings.CutPrefix(f, "nats="); ok {
				p.NATS = v
			}
		}
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before it was ready (%w); see %s", name, p.err, logPath)
	case <-time.After(time.Minute):
		err = fmt.Errorf("%s not ready within a minute; see %s", name, logPath)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.Stop()
	return nil, err
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to 20s for a graceful exit, then kills
// the process. It is safe to call more than once.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.exited
	}
}

// Alive reports an error if the process has exited.
func (p *Process) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %w; see %s", p.Name, p.err, p.Log)
	default:
		return nil
	}
}

// Mem is a process's memory use in bytes, from /proc/<pid>/status.
type Mem struct {
	// RSS is the resident set size now (VmRSS).
	RSS int64
	// HWM is the peak resident set size since start (VmHWM).
	HWM int64
	// Anon is the anonymous part of RSS (RssAnon): heap, stacks, the
	// runtime's own memory; the process's alone.
	Anon int64
	// File is the file-backed part of RSS (RssFile): mostly the pages of
	// the executable it touched, shared with every process running the
	// same file and dropped by the kernel under pressure.
	File int64
}

// ReadMem reads the memory use of process pid.
func ReadMem(pid int) (Mem, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	for line := range strings.Lines(string(b)) {
		key, rest, ok := strings.Cut(line, ":")
		var v *int64
		switch key {
		case "VmRSS":
			v = &m.RSS
		case "VmHWM":
			v = &m.HWM
		case "RssAnon":
			v = &m.Anon
		case "RssFile":
			v = &m.File
		}
		if !ok || v == nil {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return Mem{}, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Mem{}, err
		}
		*v = kb << 10
	}
	if m.RSS == 0 {
		return Mem{}, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, nil
}

// CPU is the processor time a process used since it started.
type CPU struct {
	// Own is its user and system time (utime+stime).
	Own time.Duration
	// Children is that of its children it waited for (cutime+cstime).
	Children time.Duration
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// ReadCPU reads the processor time of process pid from /proc/<pid>/stat.
func ReadCPU(pid int) (CPU, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return CPU{}, err
	}
	// The command name (field 2) may hold spaces; fields count from its
	// closing parenthesis: utime is field 14 of the line.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 15 {
		return CPU{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	var ticks [4]int64
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return CPU{}, fmt.Errorf("/proc/%d/stat field %d: %w", pid, 14+i, err)
		}
	}
	tick := time.Second / clockTicks
	return CPU{Own: time.Duration(ticks[0]+ticks[1]) * tick, Children: time.Duration(ticks[2]+ticks[3]) * tick}, nil
}
