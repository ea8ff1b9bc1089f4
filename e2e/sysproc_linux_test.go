package e2e_test

import "syscall"

// sysProcAttr has the kernel kill the child when the thread that started it dies, so that a
// test binary that panics or is killed leaves no Dex behind. (Go ends no threads except those
// of goroutines exiting while locked to them, so this fires when the process dies.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
