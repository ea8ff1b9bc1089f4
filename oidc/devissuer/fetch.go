package devissuer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// FetchToken signs in as username through the provider's own authorization
// code + PKCE flow and returns the access token: it GETs the authorization
// endpoint, follows to the login page, submits the user choice, captures the
// code from the redirect to redirectURI (without following it), and redeems
// the code at the token endpoint with the code_verifier. The endpoints come
// from issuer's discovery document. It works against any issuer run by this
// package, given its URL; it refuses non-loopback issuers.
func FetchToken(ctx context.Context, issuer, clientID, redirectURI, username string) (string, error) {
	t, err := FetchTokens(ctx, issuer, clientID, redirectURI, username)
	return t.Access, err
}

// Tokens is the token endpoint's answer to one sign-in.
type Tokens struct {
	// Access is the API's bearer token: typ "at+jwt", aud the API audience.
	Access string
	// ID is the OpenID Connect ID token, for the client alone (aud the client
	// id): it says who signed in and is no credential for the API.
	ID string
}

// FetchTokens is FetchToken returning the ID token too. It returns the same
// errors.
func FetchTokens(ctx context.Context, issuer, clientID, redirectURI, username string) (Tokens, error) {
	f, err := newFlow(ctx, issuer, clientID, redirectURI)
	if err != nil {
		return Tokens{}, err
	}
	verifier := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	code, err := f.authorize(ctx, username, s256(verifier))
	if err != nil {
		return Tokens{}, err
	}
	return f.exchange(ctx, code, verifier)
}

// flow drives the browser side of one sign-in against a dev issuer.
type flow struct {
	hc          *http.Client
	issuer      *url.URL
	authzURL    string
	tokenURL    string
	clientID    string
	redirectURI *url.URL
}

func newFlow(ctx context.Context, issuer, clientID, redirectURI string) (*flow, error) {
	iu, err := url.Parse(issuer)
	if err != nil || (iu.Scheme != "http" && iu.Scheme != "https") || !isLoopbackHost(iu.Hostname()) {
		return nil, fmt.Errorf("devissuer: issuer %q is not a loopback dev issuer URL", issuer)
	}
	ru, err := url.Parse(redirectURI)
	if err != nil || ru.Host == "" {
		return nil, fmt.Errorf("devissuer: bad redirect URI %q", redirectURI)
	}
	f := &flow{
		hc: &http.Client{
			Timeout: 30 * time.Second,
			// Every redirect is inspected: the one to the redirect URI must
			// not be followed, and only the issuer's own are.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		issuer:      iu,
		clientID:    clientID,
		redirectURI: ru,
	}
	var disc struct {
		Issuer                string `json:"issuer"`
		AuthorizationEndpoint string `json:"authorization_endpoint"`
		TokenEndpoint         string `json:"token_endpoint"`
	}
	resp, err := f.do(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("devissuer: discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("devissuer: discovery: %s", statusErr(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&disc); err != nil {
		return nil, fmt.Errorf("devissuer: discovery: %w", err)
	}
	if strings.TrimSuffix(disc.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
		return nil, fmt.Errorf("devissuer: discovery issuer %q does not match %q", disc.Issuer, issuer)
	}
	for _, e := range []string{disc.AuthorizationEndpoint, disc.TokenEndpoint} {
		u, err := url.Parse(e)
		if err != nil || !f.onIssuer(u) {
			return nil, fmt.Errorf("devissuer: discovery endpoint %q is not on the issuer", e)
		}
	}
	f.authzURL, f.tokenURL = disc.AuthorizationEndpoint, disc.TokenEndpoint
	return f, nil
}

// authorize runs the front channel and returns the authorization code.
// An empty challenge sends no PKCE parameters (for tests).
func (f *flow) authorize(ctx context.Context, username, challenge string) (string, error) {
	state := base64.RawURLEncoding.EncodeToString(randomBytes(16))
	q := url.Values{
		"response_type": {"code"},
		"client_id":     {f.clientID},
		"redirect_uri":  {f.redirectURI.String()},
		"scope":         {"openid profile email"},
		"state":         {state},
	}
	if challenge != "" {
		q.Set("code_challenge", challenge)
		q.Set("code_challenge_method", "S256")
	}
	u, err := url.Parse(f.authzURL)
	if err != nil {
		return "", err
	}
	u.RawQuery = q.Encode()

	// /authorize -> login page.
	loc, err := f.redirect(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("devissuer: authorize: %w", err)
	}
	if f.isRedirectURI(loc) {
		return "", fmt.Errorf("devissuer: authorize: %w", callbackError(loc))
	}
	if !f.onIssuer(loc) {
		return "", fmt.Errorf("devissuer: authorize: unexpected redirect to %s", loc)
	}
	resp, err := f.do(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return "", fmt.Errorf("devissuer: login page: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close() // only the status matters here
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("devissuer: login page: %s", resp.Status)
	}

	// Choose the user -> library callback -> redirect URI with the code.
	form := url.Values{
		loginParamID:   {loc.Query().Get(loginParamID)},
		loginParamUser: {username},
	}
	loc, err = f.redirect(ctx, http.MethodPost, loc.ResolveReference(&url.URL{Path: loginPath}).String(), form)
	if err != nil {
		return "", fmt.Errorf("devissuer: sign in as %q: %w", username, err)
	}
	for hops := 0; !f.isRedirectURI(loc); hops++ {
		if hops == 5 || !f.onIssuer(loc) {
			return "", fmt.Errorf("devissuer: unexpected redirect to %s", loc)
		}
		if loc, err = f.redirect(ctx, http.MethodGet, loc.String(), nil); err != nil {
			return "", fmt.Errorf("devissuer: callback: %w", err)
		}
	}
	p := loc.Query()
	if p.Get("error") != "" {
		return "", fmt.Errorf("devissuer: %w", callbackError(loc))
	}
	if p.Get("state") != state {
		return "", errors.New("devissuer: state mismatch in redirect")
	}
	if p.Get("code") == "" {
		return "", errors.New("devissuer: redirect carries no code")
	}
	return p.Get("code"), nil
}

// exchange redeems code at the token endpoint. An empty verifier sends none (for tests).
func (f *flow) exchange(ctx context.Context, code, verifier string) (Tokens, error) {
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {f.redirectURI.String()},
		"client_id":    {f.clientID},
	}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	resp, err := f.do(ctx, http.MethodPost, f.tokenURL, form)
	if err != nil {
		return Tokens{}, fmt.Errorf("devissuer: token: %w", err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
		TokenType   string `json:"token_type"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = json.Unmarshal(body, &tr)
	switch {
	case resp.StatusCode != http.StatusOK && tr.Error != "":
		return Tokens{}, fmt.Errorf("devissuer: token: %s: %s", tr.Error, tr.Description)
	case resp.StatusCode != http.StatusOK:
		return Tokens{}, fmt.Errorf("devissuer: token: %s: %s", resp.Status, snippet(body))
	case tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "bearer"):
		return Tokens{}, errors.New("devissuer: token: response has no bearer access_token")
	}
	return Tokens{Access: tr.AccessToken, ID: tr.IDToken}, nil
}

// do sends a GET (form == nil) or a form POST.
func (f *flow) do(ctx context.Context, method, target string, form url.Values) (*http.Response, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return f.hc.Do(req)
}

// redirect sends the request and returns the absolute Location of the
// redirect it must answer with; any other answer is an error.
func (f *flow) redirect(ctx context.Context, method, target string, form url.Values) (*url.URL, error) {
	resp, err := f.do(ctx, method, target, form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		return nil, errors.New(statusErr(resp))
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, err
	}
	return loc, nil
}

func (f *flow) onIssuer(u *url.URL) bool {
	return u.Scheme == f.issuer.Scheme && u.Host == f.issuer.Host
}

func (f *flow) isRedirectURI(u *url.URL) bool {
	return u.Scheme == f.redirectURI.Scheme && u.Host == f.redirectURI.Host && u.Path == f.redirectURI.Path
}

func callbackError(u *url.URL) error {
	q := u.Query()
	return fmt.Errorf("provider answered %s: %s", q.Get("error"), q.Get("error_description"))
}

func statusErr(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.Status + ": " + snippet(body)
}

// snippet is a one-line, tag-free excerpt of a response body.
func snippet(body []byte) string {
	if _, after, ok := strings.Cut(string(body), "</head>"); ok {
		body = []byte(after)
	}
	var b strings.Builder
	inTag := false
	for _, r := range string(body) {
		switch {
		case r == '<':
			inTag = true
		case r == '>':
			inTag = false
			b.WriteByte(' ')
		case !inTag:
			b.WriteRune(r)
		}
	}
	s := strings.Join(strings.Fields(html.UnescapeString(b.String())), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return b
}
