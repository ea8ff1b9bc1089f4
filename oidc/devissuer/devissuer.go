// Package devissuer runs a development-only OpenID Provider on loopback.
//
// It is a real provider built on github.com/zitadel/oidc/v3/pkg/op: discovery,
// JWKS, authorization code + PKCE (S256, mandatory) for one public client, a
// token endpoint issuing RS256 JWT access tokens for the API audience, typed
// "at+jwt" (RFC 9068), and ID tokens for the client alone, and userinfo. Sign-in is a page listing the configured demo users: clicking one
// signs in as that user, without a password. It must never run outside
// development; it refuses to listen on anything but a loopback address.
//
// Consumers verify its tokens exactly like a production issuer's, through
// discovery and JWKS.
package devissuer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is a demo user offered on the login page.
type User struct {
	Username string   // login name, e.g. "alice"
	Subject  string   // "sub" claim, stable across restarts, e.g. "dev|alice"
	Email    string   // "email" claim; email_verified is always true
	Name     string   // "name" claim
	Roles    []string // roles claim (Options.RolesClaim), e.g. ["ADMIN"]
}

// Options configures Start.
type Options struct {
	// Addr is the listen address, e.g. "127.0.0.1:0". The host must be a
	// loopback IP or "localhost"; anything else is refused.
	Addr  string
	Users []User
	// Audience is the "aud" of access tokens (the API), e.g. "gpugate-api".
	// It must differ from ClientID, the only "aud" of ID tokens: an ID token
	// is for the client and never verifies for the API.
	Audience string
	// ClientID is the single public client (no secret, PKCE S256 required).
	ClientID string
	// RedirectURIs are the client's allowed redirect URIs: http on a
	// loopback host, or https. A loopback URI matches any port and any
	// loopback host with the same path and query, so
	// "http://127.0.0.1/callback" also allows "http://127.0.0.1:5173/callback".
	RedirectURIs []string
	// RolesClaim names the roles claim (a JSON array) of access tokens and
	// userinfo. Default "groups".
	RolesClaim string
	// TokenTTL is the lifetime of access and ID tokens. Default 1h.
	TokenTTL time.Duration
	// KeyFile, when set, keeps the RS256 signing key across restarts, so that tokens issued
	// before a restart still verify after it (with the same issuer URL): the key is read from
	// this file (PKCS#8 PEM), or generated and written to it, mode 0600, when it does not
	// exist. Empty: a new key every start.
	KeyFile string
	// Logger receives the issuer's own log lines; nil discards them.
	Logger *slog.Logger
}

// Server is a running dev issuer.
type Server struct {
	issuer string
	srv    *http.Server
	done   chan struct{}
}

const (
	loginPath      = "/login"
	loginParamID   = "authRequestID"
	loginParamUser = "username"
	loggedOutPath  = "/logged-out"
	maxFormBytes   = 64 << 10
)

// reservedClaims may not be used as RolesClaim: they carry other meaning.
var reservedClaims = []string{
	"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "azp", "client_id", "scope",
	"auth_time", "nonce", "acr", "amr", "act", "at_hash", "c_hash", "sid",
	"email", "email_verified", "name", "preferred_username",
}

// Start listens on o.Addr and serves the provider until Close. The issuer is
// "http://" + the listener's address. ctx bounds start-up only.
func Start(ctx context.Context, o Options) (*Server, error) {
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("devissuer: listen: %w", err)
	}
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("devissuer: %q resolved to non-loopback %s", o.Addr, ln.Addr())
	}
	issuer := "http://" + ln.Addr().String()

	handler, err := newHandler(issuer, o)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &Server{
		issuer: issuer,
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("devissuer: serve", "err", err)
		}
	}()
	o.Logger.Info("dev OIDC issuer listening (development only: password-less sign-in)",
		"issuer", issuer, "client_id", o.ClientID, "audience", o.Audience)
	return s, nil
}

// Issuer returns the issuer URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Issuer() string { return s.issuer }

// Close stops the server, waiting for in-flight requests until ctx is done.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err == nil {
		<-s.done
	}
	return err
}

func (o Options) normalize() (Options, error) {
	if err := checkLoopbackAddr(o.Addr); err != nil {
		return o, err
	}
	if o.Audience == "" || o.ClientID == "" {
		return o, errors.New("devissuer: Audience and ClientID are required")
	}
	if o.Audience == o.ClientID {
		return o, errors.New("devissuer: Audience must differ from ClientID (access tokens are for the API, not the client)")
	}
	if len(o.Users) == 0 {
		return o, errors.New("devissuer: no Users")
	}
	names, subs := map[string]bool{}, map[string]bool{}
	for _, u := range o.Users {
		if u.Username == "" || u.Subject == "" {
			return o, fmt.Errorf("devissuer: user %q: Username and Subject are required", u.Username)
		}
		if names[u.Username] || subs[u.Subject] {
			return o, fmt.Errorf("devissuer: duplicate user %q / subject %q", u.Username, u.Subject)
		}
		names[u.Username], subs[u.Subject] = true, true
	}
	if len(o.RedirectURIs) == 0 {
		return o, errors.New("devissuer: no RedirectURIs")
	}
	for _, r := range o.RedirectURIs {
		if err := checkRedirectURI(r); err != nil {
			return o, err
		}
	}
	if o.RolesClaim == "" {
		o.RolesClaim = "groups"
	}
	for _, c := range reservedClaims {
		if o.RolesClaim == c {
			return o, fmt.Errorf("devissuer: RolesClaim %q is a reserved claim", c)
		}
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	if o.TokenTTL < 0 {
		return o, errors.New("devissuer: negative TokenTTL")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Users = append([]User(nil), o.Users...)
	o.RedirectURIs = append([]string(nil), o.RedirectURIs...)
	return o, nil
}

func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devissuer: Addr %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("devissuer: Addr %q is not a loopback address (dev issuer binds 127.0.0.1, ::1 or localhost only)", addr)
	}
	return nil
}

// isLoopbackHost reports whether host (no port, brackets optional) is
// "localhost" or a loopback IP literal.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("devissuer: redirect URI %q: %w", raw, err)
	}
	switch {
	case u.Fragment != "" || u.Host == "":
		return fmt.Errorf("devissuer: redirect URI %q must be absolute, without fragment", raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("devissuer: redirect URI %q must be http on a loopback host, or https", raw)
}

func newHandler(issuer string, o Options) (http.Handler, error) {
	st, err := newStorage(o)
	if err != nil {
		return nil, err
	}
	var cryptoKey [32]byte // encrypts authorization codes
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, err
	}
	var provider *op.Provider // set before the server starts; read by codeExchange per request
	provider, err = op.NewProvider(&op.Config{
		CryptoKey:                cryptoKey,
		CryptoKeyId:              rand.Text(),
		DefaultLogoutRedirectURI: loggedOutPath,
		CodeMethodS256:           true,
		SupportedUILocales:       []language.Tag{language.English},
	}, st, op.StaticIssuer(issuer), op.WithAllowInsecure(),
		op.WithHttpInterceptors(codeExchange(func() *op.Provider { return provider }, st)))
	if err != nil {
		return nil, fmt.Errorf("devissuer: provider: %w", err)
	}
	l := &login{st: st, log: o.Logger, callback: op.AuthCallbackURL(provider)}
	withIssuer := op.NewIssuerInterceptor(provider.IssuerFromRequest)

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+loginPath, l.page)
	mux.Handle("POST "+loginPath, withIssuer.HandlerFunc(l.submit))
	mux.HandleFunc("GET "+loggedOutPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("signed out\n"))
	})
	mux.Handle("/", provider)
	return loopbackHostOnly(mux), nil
}

// loopbackHostOnly rejects requests whose Host is not a loopback name, so a
// web page cannot reach the issuer through DNS rebinding.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !isLoopbackHost(host) {
			http.Error(w, "dev issuer: loopback Host required", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// --- login UI ---

type login struct {
	st       *storage
	log      *slog.Logger
	callback func(context.Context, string) string
}

var (
	loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpugate dev sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto}button{font-size:1.1em;min-width:8em;margin:.3em 1em .3em 0}</style>
</head><body>
<h1>gpugate dev sign-in</h1>
<p><strong>Development issuer</strong>: no passwords. Pick a user to sign in to <code>{{.ClientID}}</code>.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="{{.IDParam}}" value="{{.ID}}">
{{range .Users}}<div><button type="submit" name="{{$.UserParam}}" value="{{.Username}}">{{.Username}}</button>{{.Name}} &lt;{{.Email}}&gt;{{if .Roles}} — roles: {{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}{{end}}</div>
{{end}}</form>
</body></html>
`))
	errorTmpl = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpugate dev sign-in: error</title></head>
<body><h1>Sign-in failed</h1><p>{{.}}</p></body></html>
`))
)

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	// No form-action: browsers apply it to the redirect chain after the
	// POST, which ends at the client's redirect URI on another origin.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
}

func errorPage(w http.ResponseWriter, status int, msg string) {
	securityHeaders(w)
	w.WriteHeader(status)
	_ = errorTmpl.Execute(w, msg)
}

// page renders the user list for a pending auth request (the library
// redirects here from /authorize after validating client and redirect URI).
func (l *login) page(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get(loginParamID)
	if !l.st.pendingRequest(id) {
		errorPage(w, http.StatusBadRequest, "Unknown or expired sign-in request. Start the sign-in again from the application.")
		return
	}
	securityHeaders(w)
	_ = loginTmpl.Execute(w, map[string]any{
		"ClientID":  l.st.client.id,
		"Action":    loginPath,
		"IDParam":   loginParamID,
		"UserParam": loginParamUser,
		"ID":        id,
		"Users":     l.st.opts.Users,
	})
}

// submit signs the chosen user in and hands back to the library's callback,
// which redirects to the client's redirect URI with the code.
func (l *login) submit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		errorPage(w, http.StatusBadRequest, "Malformed form.")
		return
	}
	id := r.Form.Get(loginParamID)
	username := r.PostForm.Get(loginParamUser)
	user, ok := l.st.users[username]
	if !ok {
		errorPage(w, http.StatusBadRequest, fmt.Sprintf("Unknown user %q.", username))
		return
	}
	if err := l.st.completeLogin(id, user); err != nil {
		errorPage(w, http.StatusBadRequest, err.Error())
		return
	}
	l.log.Info("dev sign-in", "username", user.Username, "sub", user.Subject)
	http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
}
