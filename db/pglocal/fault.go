//go:build unix

package pglocal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fault injection for tests that prove what the gateway does when its database fails
// (server_faults_test.go, docs/resilience.md). None of this is used by the gateway itself.

// Kill crashes the cluster the way a power cut or the OOM killer would: SIGKILL to the
// postmaster and every backend (they share the postmaster's process group), no shutdown
// checkpoint. It waits until the postmaster has exited and releases the data directory, so a
// later Start on the same DataDir runs crash recovery from the WAL and listens on the same socket.
// Stop after Kill does nothing and returns nil. It returns an error when the processes cannot be
// signalled or the postmaster has not exited within 10 s.
func (s *Server) Kill() error {
	select {
	case <-s.exited:
	default:
		// The postmaster's pid is its process group's id (Setpgid in sysProcAttr).
		if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pglocal: kill postgres: %w", err)
		}
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			return errors.New("pglocal: postgres still running 10s after SIGKILL")
		}
	}
	// Backends orphaned by the postmaster's death stay in its process group; SIGKILL reached
	// them too, but they may take a moment to go: wait until none is left, or PostgreSQL's next
	// start finds the old shared memory still attached and refuses to run.
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(s.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			return errors.New("pglocal: postgres backends still running 10s after SIGKILL")
		}
		time.Sleep(pollEvery)
	}
	s.log.Info("pglocal: PostgreSQL killed (SIGKILL)", "data_dir", s.pgdata)
	s.stopOnce.Do(func() {
		s.closeFiles()
		if !strings.HasPrefix(s.sockDir, s.dataDir+string(filepath.Separator)) {
			_ = os.Remove(s.sockDir)
		}
	})
	return nil
}

// groupAlive reports whether a process of process group pgid is still running. Zombies do not
// count: they hold no shared memory, and whether they are reaped depends on who is PID 1.
// Without /proc it asks kill(2), zombies included.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after
		// its last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[0] != "X" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}
