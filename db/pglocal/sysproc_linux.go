package pglocal

import "syscall"

// sysProcAttr puts the child in its own process group (a terminal's Ctrl-C reaches only the
// gateway, which then stops PostgreSQL in order), has the kernel send it SIGTERM when the
// thread that started it dies, and switches to ru when we are root. Go never ends threads
// except those of goroutines exiting while locked to them, so this fires when the process dies.
func sysProcAttr(ru runAs) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if ru.drop {
		a.Credential = &syscall.Credential{Uid: ru.uid, Gid: ru.gid, Groups: []uint32{}}
	}
	return a
}
