package cli

import (
	"context"

	"github.com/gpugate/gpugate/worker"
)

// WorkerMain is `gpugate worker`: the bundled GPU worker agent, which parses its own flags.
type WorkerMain struct {
	args []string
}

// ParseFlags keeps args for the worker, which reads them itself in Run.
func (m *WorkerMain) ParseFlags(args []string) error {
	m.args = args
	return nil
}

// Run runs the worker until it is done or signalled; a non-zero exit status is returned as an
// exitCode (the worker has reported the failure itself).
func (m *WorkerMain) Run(context.Context) error {
	if code := worker.Main(m.args); code != 0 {
		return exitCode(code)
	}
	return nil
}

// Close has nothing to release: the worker closes what it opens.
func (m *WorkerMain) Close() error { return nil }
