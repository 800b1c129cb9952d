package localexec

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// NiceIdle as a Config.Nice value runs a priority's commands in Linux's
// SCHED_IDLE class, below niceness 19: they get a CPU only when no other
// thread wants it, and a waking thread of any other class takes the CPU
// from them at once (a niceness only weighs their share). Low-priority
// jobs then use spare CPU alone; under a CPU-bound load of other work
// they make almost no progress.
const NiceIdle = 20

// start starts cmd with nice added to the worker's niceness (0: as is), or
// in SCHED_IDLE (NiceIdle).
//
// Linux keeps a niceness per thread, and a process forked by a thread
// starts with that thread's, so the command is niced before its first
// instruction, exec and dynamic loading included (setpriority on its pid
// after cmd.Start would come after those, and a short command would be
// done by then). An unprivileged process may raise a niceness but never
// lower it back, so the fork happens on a thread of its own, locked to a
// goroutine that ends without unlocking it: the runtime then ends the
// thread, and no other goroutine ever runs niced. New threads are not
// cloned from a locked one (the runtime's template thread makes them), so
// none inherits the niceness either.
func start(cmd *exec.Cmd, nice int) error {
	if nice == 0 {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go startNiced(cmd, nice, errc)
	return <-errc
}

// startNiced starts cmd from a niced thread that ends with the calling
// goroutine, and sends the result to errc.
func startNiced(cmd *exec.Cmd, nice int, errc chan<- error) {
	runtime.LockOSThread()
	tid := syscall.Gettid()
	if tid == syscall.Getpid() {
		// The main thread is never ended (the runtime parks it for good
		// instead), and its niceness is the one ps and top show for the
		// whole process: leave it as is and start from another thread,
		// which this goroutine keeps off the main one until then.
		done := make(chan struct{})
		go func() {
			defer close(done)
			startNiced(cmd, nice, errc)
		}()
		<-done
		runtime.UnlockOSThread()
		return
	}
	if nice == NiceIdle {
		// A thread may always lower its own class; it is never raised
		// back, for the thread ends with this goroutine.
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
			errc <- fmt.Errorf("set SCHED_IDLE: %w", err)
			return
		}
		errc <- cmd.Start()
		return
	}
	// The raw system call returns 20 - niceness.
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil {
		errc <- fmt.Errorf("read niceness: %w", err)
		return
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, min(20-raw+nice, 19)); err != nil {
		errc <- fmt.Errorf("set niceness: %w", err)
		return
	}
	errc <- cmd.Start()
}
