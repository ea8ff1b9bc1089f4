package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/guard"
)

// gpugate admin writes: the actions, the class in any case, and every malformed command line
// refused with what to do, before anything is opened.
func TestAdminWritesFlags(t *testing.T) {
	m := &AdminMain{}
	if err := m.ParseFlags([]string{"writes", "disable", "device-metadata", "--reason", "incident 42"}); err != nil {
		t.Fatal(err)
	}
	if m.action != "disable" || m.class != guard.ClassDeviceMetadata || *m.reason != "incident 42" {
		t.Fatalf("parsed %+v", m)
	}
	for _, ok := range [][]string{{"writes", "list"}, {"writes", "enable", "HEARTBEATS"}} {
		if err := (&AdminMain{}).ParseFlags(ok); err != nil {
			t.Fatalf("%q: %v", ok, err)
		}
	}
	if err := (&AdminMain{}).ParseFlags([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"switches", "list"}, "usage"},
		{[]string{"writes", "drop", "PROOFS"}, "usage"},
		{[]string{"writes", "disable"}, "name the class"},
		{[]string{"writes", "disable", "--reason", "x"}, "name the class"},
		{[]string{"writes", "disable", "EVERYTHING", "--reason", "x"}, "unknown write class"},
		{[]string{"writes", "disable", "PROOFS"}, "--reason is required"},
		{[]string{"writes", "disable", "PROOFS", "--reason", "  "}, "--reason is required"},
		{[]string{"writes", "enable", "PROOFS", "--reason", "x"}, "disable only"},
		{[]string{"writes", "enable", "PROOFS", "extra"}, "unexpected argument"},
	} {
		err := (&AdminMain{}).ParseFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v; want an error saying %q", c.args, err, c.want)
		}
	}
}

// The limit flags: defaults are guard's, rates parse as elsewhere, bad values are refused.
func TestLimitFlags(t *testing.T) {
	parse := func(args ...string) (limitFlags, error) {
		f := newFlags("serve", "")
		l := addLimitFlags(f)
		if err := f.parse(args); err != nil {
			return l, err
		}
		return l, l.apply()
	}
	l, err := parse()
	if err != nil || l.limits != guard.DefaultLimits() {
		t.Fatalf("defaults %+v (%v); want %+v", l.limits, err, guard.DefaultLimits())
	}
	l, err = parse("--device-write-rate", "5/1m", "--user-write-rate", "off", "--distinct-devices-limit", "0")
	if err != nil || l.limits.Target != (guard.Rate{Burst: 5, Every: 60e9}) || l.limits.User.Every >= 0 || l.limits.Distinct.Every >= 0 {
		t.Fatalf("parsed %+v (%v)", l.limits, err)
	}
	for _, bad := range [][]string{{"--device-write-rate", "fast"}, {"--user-write-rate", "0/1s"},
		{"--distinct-devices-window", "48h"}, {"--distinct-devices-limit", "-1"}, {"--switch-reread", "0s"}} {
		if _, err := parse(bad...); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
