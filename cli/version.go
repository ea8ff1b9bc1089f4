package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// VersionMain is `gpugate version`: what this binary was built from.
type VersionMain struct{}

// ParseFlags accepts no flags; it returns flag.ErrHelp after --help.
func (m *VersionMain) ParseFlags(args []string) error {
	f := newFlags("version", "Print what this binary was built from: module version, commit, commit time,\n"+
		"whether the working tree had uncommitted changes, and the Go version.")
	return f.parse(args)
}

// Run prints the build information; it returns nil.
func (m *VersionMain) Run(context.Context) error {
	bi, _ := debug.ReadBuildInfo() // nil when the binary carries none
	writeVersion(os.Stdout, readVersion(bi))
	return nil
}

// Close has nothing to release.
func (m *VersionMain) Close() error { return nil }

// version is the build information `gpugate version` prints. A field the build did not
// record is "unknown": `go run` and builds with -buildvcs=false record no commit.
type version struct {
	Module, Commit, CommitTime, Modified, Go string
	Platform                                 string // the target the binary was built for
}

// readVersion extracts the version from bi (nil: no build information).
func readVersion(bi *debug.BuildInfo) version {
	v := version{Module: "unknown", Commit: "unknown", CommitTime: "unknown", Modified: "unknown",
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Module = bi.Main.Version // "(devel)" for a build without version control information
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value
		}
	}
	return v
}

// writeVersion prints v, one field a line, for people and for grep.
func writeVersion(w io.Writer, v version) {
	fmt.Fprintf(w, "gpugate %s\n  commit:    %s\n  time:      %s\n  modified:  %s\n  go:        %s %s\n",
		v.Module, v.Commit, v.CommitTime, v.Modified, v.Go, v.Platform)
}
