// Package testutil holds the helpers the project's tests share: a log buffer safe for
// concurrent writers, and a GraphQL client for the gateway over real HTTP (graphql.go).
package testutil

import (
	"bytes"
	"sync"
	"testing"
)

// SyncBuffer collects output written concurrently (a child process's stdout and stderr, a
// server's log) and can be read while writes go on.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LogOnFailure returns a SyncBuffer whose content t logs, under name, if the test fails.
func LogOnFailure(t testing.TB, name string) *SyncBuffer {
	b := &SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, b.String())
		}
	})
	return b
}
