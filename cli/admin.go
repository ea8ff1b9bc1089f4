package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gpugate/gpugate/guard"
)

// AdminMain is `gpugate admin writes list|disable CLASS --reason R|enable CLASS`: the kill
// switches from a shell, against DATABASE_URL like the other commands (docs/operations.md,
// "Kill switches"). A change reaches every gateway replica within a second (NOTIFY); it is
// recorded as changed by cli:<OS user>.
type AdminMain struct {
	oneShot
	action string
	class  guard.Class
	reason *string
}

const adminUsage = "usage: gpugate admin writes list | gpugate admin writes disable CLASS --reason R | gpugate admin writes enable CLASS\n" +
	"CLASS: DEVICE_METADATA, ENROLLMENT, PROOFS, HEARTBEATS, DEVICE_KEYS"

// ParseFlags reads the action, the class and the flags; it returns flag.ErrHelp after --help
// and a usage error for anything else malformed.
func (m *AdminMain) ParseFlags(args []string) error {
	f := newFlags("admin writes", "Kill switches per write class: list them, disable a class (with a reason) or enable it again.\n"+
		"Every gateway on the database applies a change within a second.\n"+adminUsage)
	m.dbf = addDBFlags(f)
	m.reason = f.String("reason", "GPUGATE_ADMIN_REASON", "", "why writes of the class are disabled (1..200 characters; disable only)")
	if len(args) > 0 && isHelp(args[0]) {
		return f.parse([]string{"--help"})
	}
	if len(args) < 2 || args[0] != "writes" {
		return errors.New(adminUsage)
	}
	m.action, args = args[1], args[2:]
	switch m.action {
	case "list":
	case "disable", "enable":
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			return fmt.Errorf("%s: name the class\n%s", m.action, adminUsage)
		}
		m.class = guard.Class(strings.ToUpper(strings.ReplaceAll(args[0], "-", "_")))
		if !knownClass(m.class) {
			return fmt.Errorf("unknown write class %q\n%s", args[0], adminUsage)
		}
		args = args[1:]
	default:
		if isHelp(m.action) {
			return f.parse([]string{"--help"})
		}
		return errors.New(adminUsage)
	}
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", f.Args(), adminUsage)
	}
	if m.action == "disable" && strings.TrimSpace(*m.reason) == "" {
		return errors.New("disable: --reason is required (1..200 characters): it is shown to every refused caller")
	}
	if m.action != "disable" && f.explicit["reason"] {
		return errors.New("--reason goes with disable only")
	}
	return nil
}

func knownClass(c guard.Class) bool {
	for _, k := range guard.Classes() {
		if k == c {
			return true
		}
	}
	return false
}

// Run lists or changes the switches and prints them; it returns the store's error, or a
// BAD_USER_INPUT-kind error for a bad reason.
func (m *AdminMain) Run(ctx context.Context) error {
	d, err := m.open(ctx, "warn")
	if err != nil {
		return err
	}
	s := guard.NewSwitches(d.store, m.log, 0)
	switch m.action {
	case "disable":
		err = s.Disable(ctx, m.class, *m.reason, cliActor())
	case "enable":
		err = s.Enable(ctx, m.class, cliActor())
	}
	if err != nil {
		return err
	}
	list, err := s.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tWRITES\tCHANGED\tBY\tREASON")
	for _, sw := range list {
		state, at := "enabled", "-"
		if !sw.Enabled {
			state = "DISABLED"
		}
		if !sw.ChangedAt.IsZero() {
			at = sw.ChangedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", sw.Class, state, at, orDash(sw.ChangedBy), orDash(sw.Reason))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cliActor names who changed a switch from the command line: cli:<OS user>.
func cliActor() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	return "cli:" + name
}
