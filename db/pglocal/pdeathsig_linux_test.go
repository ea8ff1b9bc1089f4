package pglocal

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPostgresDiesWithParent starts a cluster in a child process (this test binary), kills
// the child with SIGKILL, and expects postgres to shut down on its own (Pdeathsig).
func TestPostgresDiesWithParent(t *testing.T) {
	if dir := os.Getenv("PGLOCAL_TEST_CHILD_DATADIR"); dir != "" {
		s, err := Start(context.Background(), Options{DataDir: dir, Fast: true, BinDir: os.Getenv("GPUGATE_TEST_PG_BIN")})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("pid", s.cmd.Process.Pid)
		select {} // wait to be killed
	}
	t.Parallel()
	dir := newDataDir(t)
	child := exec.Command(os.Args[0], "-test.run=^TestPostgresDiesWithParent$")
	child.Env = append(os.Environ(), "PGLOCAL_TEST_CHILD_DATADIR="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid ") {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("child: %q, %v", line, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	if err != nil {
		t.Fatal(err)
	}
	_ = child.Process.Kill()
	_ = child.Wait()

	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postgres (pid %d) still running 15s after its parent died", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}
