//go:build !linux

package e2e_test

import "syscall"

// sysProcAttr: without Linux's parent-death signal, a test binary killed with SIGKILL leaves
// Dex running until it is killed by hand (t.Cleanup stops it in every other case).
func sysProcAttr() *syscall.SysProcAttr { return nil }
