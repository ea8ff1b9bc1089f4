package cli

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionReportsTheBuildInformation(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/gpugate/gpugate", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-11-29T01:02:03Z"}, {Key: "vcs.modified", Value: "true"}}}
	var out bytes.Buffer
	writeVersion(&out, readVersion(bi))
	for _, want := range []string{"gpugate v1.2.3\n", "commit:    0123456789abcdef\n", "time:      2026-11-29T01:02:03Z\n",
		"modified:  true\n", "go:        go1.99.1 " + runtime.GOOS + "/" + runtime.GOARCH + "\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
	// Without version control information (go run, -buildvcs=false) it says so, and still
	// gives the Go version.
	out.Reset()
	writeVersion(&out, readVersion(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "(devel)"}}))
	if want := "gpugate (devel)\n  commit:    unknown\n  time:      unknown\n  modified:  unknown\n  go:        go1.99.1"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("without VCS stamps:\n%s\nwant prefix:\n%s", out.String(), want)
	}
	out.Reset()
	writeVersion(&out, readVersion(nil))
	if !strings.Contains(out.String(), "go:        "+runtime.Version()) {
		t.Errorf("without build information:\n%s", out.String())
	}
}
