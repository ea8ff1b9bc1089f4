package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpugate/gpugate/db"
	"github.com/gpugate/gpugate/oidc/devissuer"
)

// Dev-mode identity: a real OpenID Provider on loopback, its demo users linked to the seeded
// accounts of the same email. It exists only in dev mode; no request can start it.
const (
	devClientID    = "gpugate-dev"
	devRedirectURI = "http://127.0.0.1/callback"
)

// devInfo is what `gpugate dev token` reads from /dev/oidc.
type devInfo struct {
	Issuer      string `json:"issuer"`
	ClientID    string `json:"clientId"`
	RedirectURI string `json:"redirectUri"`
}

type devIdentity struct {
	server *devissuer.Server
	info   devInfo
}

// devTokenTTL is how long a dev token lasts (the dev issuer's default).
const devTokenTTL = time.Hour

// Files the dev issuer keeps in the data directory in zero-config mode, so that a token
// stays valid across a restart of the gateway: the signing key, and the address the issuer
// listened on (the issuer URL, which tokens carry, includes its port).
const (
	devKeyFile  = "dev-issuer.key"
	devAddrFile = "dev-issuer.addr"
)

// startDevIssuer starts the dev issuer on addr and links its demo users to the seeded accounts.
// With stateDir set (zero-config mode: the data directory) it keeps its signing key there and,
// when addr asks for any port (":0"), listens again on the port of the previous start if it
// is free. It returns the error of starting the issuer or of linking a user.
func startDevIssuer(ctx context.Context, addr, audience, rolesClaim, stateDir string, store *db.DB, log *slog.Logger) (*devIdentity, error) {
	var users []devissuer.User
	for _, name := range db.DemoUsers {
		u := devissuer.User{Username: name, Subject: "dev|" + name, Email: name + "@example.com",
			Name: strings.ToUpper(name[:1]) + name[1:]}
		if name == "admin" {
			u.Roles = []string{"ADMIN"}
		}
		users = append(users, u)
	}
	o := devissuer.Options{
		Addr: addr, Users: users, Audience: audience, ClientID: devClientID,
		RedirectURIs: []string{devRedirectURI, devConsoleRedirectURI}, RolesClaim: rolesClaim, TokenTTL: devTokenTTL, Logger: log,
	}
	var srv *devissuer.Server
	var err error
	if stateDir != "" {
		o.KeyFile = filepath.Join(stateDir, devKeyFile)
		if prev := previousDevAddr(stateDir, addr); prev != "" {
			po := o
			po.Addr = prev
			if srv, err = devissuer.Start(ctx, po); err != nil {
				log.Warn("dev OIDC issuer: the previous address is taken; dev tokens issued before this start no longer verify",
					"addr", prev, "err", err)
			}
		}
	}
	if srv == nil {
		if srv, err = devissuer.Start(ctx, o); err != nil {
			return nil, fmt.Errorf("dev OIDC issuer: %w", err)
		}
	}
	if stateDir != "" {
		host := strings.TrimPrefix(srv.Issuer(), "http://")
		if err := os.WriteFile(filepath.Join(stateDir, devAddrFile), []byte(host+"\n"), 0o600); err != nil {
			log.Warn("dev OIDC issuer: cannot record its address; dev tokens will not survive a restart", "err", err)
		}
	}
	for _, u := range users {
		id := db.Identity{Issuer: srv.Issuer(), Subject: u.Subject}
		if err := store.LinkIdentity(ctx, id, u.Email, "dev"); err != nil && !errors.Is(err, db.ErrNotFound) {
			_ = srv.Close(context.Background())
			return nil, err
		}
	}
	log.Info("dev OIDC issuer started", "issuer", srv.Issuer(), "users", db.DemoUsers, "token_ttl", devTokenTTL, "key_file", o.KeyFile)
	return &devIdentity{server: srv, info: devInfo{Issuer: srv.Issuer(), ClientID: devClientID, RedirectURI: devRedirectURI}}, nil
}

// previousDevAddr returns the address the dev issuer listened on at the previous start, when
// addr asks for any port of the same host; otherwise (or when none was recorded) "".
func previousDevAddr(stateDir, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return ""
	}
	raw, err := os.ReadFile(filepath.Join(stateDir, devAddrFile)) // #nosec G304 -- the dev state directory (a flag, or its default) and a constant name
	if err != nil {
		return ""
	}
	prev := strings.TrimSpace(string(raw))
	ph, pp, err := net.SplitHostPort(prev)
	if err != nil || ph != host || pp == "0" {
		return ""
	}
	return prev
}

// DevTokenMain is `gpugate dev token USER`: sign in to a dev-mode gateway's issuer as a demo
// user and print the access token.
type DevTokenMain struct {
	server *string
	user   string
}

// ParseFlags reads --server and the user, who may come before or after the flags; it returns
// flag.ErrHelp after --help and a usage error unless exactly one user is named.
func (m *DevTokenMain) ParseFlags(args []string) error {
	if len(args) > 0 && isHelp(args[0]) { // gpugate dev --help, gpugate help dev
		args = []string{"token", "--help"}
	}
	if len(args) == 0 || args[0] != "token" {
		return errors.New("usage: gpugate dev token [--server URL] USER")
	}
	summary := "Sign in as a demo user (alice, bob, admin) of a dev-mode gateway and print the access token.\n" +
		"The token lasts an hour (devTokenTTL); it survives restarts of a zero-config gateway (no DATABASE_URL)."
	f := newFlags("dev token", summary)
	m.server = f.FlagSet.String("server", "http://127.0.0.1:8080", "the dev-mode gateway")
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: gpugate dev token [--server URL] USER\n\n%s\n\nFlags:\n", summary)
		f.PrintDefaults()
	}
	// The user may come before or after the flags.
	rest := args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		m.user, rest = rest[0], rest[1:]
	}
	if err := parseFlags(f.FlagSet, rest); err != nil {
		return err
	}
	if m.user == "" && f.NArg() == 1 {
		m.user = f.Arg(0)
	} else if f.NArg() > 0 || m.user == "" {
		f.Usage()
		return errors.New("name exactly one demo user")
	}
	return nil
}

// Run reads the issuer from the gateway's /dev/oidc, signs in and prints the token; it returns
// an error saying which step failed.
func (m *DevTokenMain) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	server, user := *m.server, m.user
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/dev/oidc", nil)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach the gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s has no dev issuer (HTTP %d): is it running in dev mode, without --oidc-issuer?", server, resp.StatusCode)
	}
	var info devInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&info); err != nil {
		return fmt.Errorf("read /dev/oidc: %w", err)
	}
	token, err := devissuer.FetchToken(ctx, info.Issuer, info.ClientID, info.RedirectURI, user)
	if err != nil {
		return fmt.Errorf("sign in as %s: %w", user, err)
	}
	fmt.Println(token)
	return nil
}

// Close has nothing to release.
func (m *DevTokenMain) Close() error { return nil }
