package localexec

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitExit blocks until process pid, a child of ours, has exited, without
// reaping it (WNOWAIT): exec.Cmd.Wait does that later.
func waitExit(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// awaitGroupExit waits, for at most limit, until no process of group pgid
// is running any more. It only observes: it never signals, since once the
// leader is reaped the group id may in time name another group.
//
// A killed process is counted as gone once it is a zombie: reaping orphans is
// the job of the system's init, and some (a container's pid 1 that is not an
// init) never do, so waiting for their zombies to disappear could be vain.
func awaitGroupExit(pgid int, limit time.Duration) {
	if !groupRunning(pgid) {
		return
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for groupRunning(pgid) {
		select {
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// groupRunning reports whether a process of group pgid is alive and not a
// zombie. Without /proc it can only tell whether the group has any member.
func groupRunning(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if state, group, ok := parseStat(stat); ok && group == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// parseStat returns the state and process group of a /proc/<pid>/stat line:
// "pid (comm) state ppid pgrp ...", where comm may hold spaces and ')'.
func parseStat(stat []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	return f[0][0], pgrp, err == nil
}
