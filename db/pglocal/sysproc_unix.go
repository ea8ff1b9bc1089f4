//go:build unix && !linux

package pglocal

import "syscall"

// sysProcAttr puts the child in its own process group and switches to ru when we are root.
// Without Linux's parent-death signal, a gateway killed with SIGKILL leaves PostgreSQL running;
// the next Start reports it as already running.
func sysProcAttr(ru runAs) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if ru.drop {
		a.Credential = &syscall.Credential{Uid: ru.uid, Gid: ru.gid, Groups: []uint32{}}
	}
	return a
}
