// Package benchkit is what the load programs under bench/ share: a GraphQL client that signs
// requests as a device (attest.SignRequest) or carries a user's bearer token, sign-in through a
// dev-mode gateway's issuer, simulated 8-GPU hosts, enrollment, proofs, and the CPU time of the
// gateway and its PostgreSQL from /proc.
package benchkit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gpugate/gpugate/attest"
	"github.com/gpugate/gpugate/oidc/devissuer"
)

// Client sends GraphQL operations to one gateway.
type Client struct {
	Server string // e.g. http://127.0.0.1:8080
	HTTP   *http.Client
}

// NewClient returns a client for server keeping up to conns connections open.
func NewClient(server string, conns int) *Client {
	return &Client{Server: server, HTTP: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}}
}

// Error is a failed operation: a transport error (Status 0), an HTTP status other than 200, or
// a GraphQL error (Code is its extensions.code, e.g. RATE_LIMITED).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	switch {
	case e.Status == 0:
		return e.Message
	case e.Code != "":
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
	default:
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
}

// Kind is a short, bounded description of err for counting errors by cause: "HTTP 503
// OVERLOADED", "GraphQL RATE_LIMITED", "transport", or "other".
func Kind(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return "other"
	}
	switch {
	case e.Status == 0:
		return "transport"
	case e.Status != http.StatusOK:
		return strings.TrimSpace(fmt.Sprintf("HTTP %d %s", e.Status, e.Code))
	default:
		return "GraphQL " + e.Code
	}
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

// Do sends one operation, with bearer as the user's token when set, signed by key as device
// when key is set (device "" signs as the key being enrolled), and decodes data into out when
// out is not nil. Any transport error, any HTTP status but 200 and any GraphQL error is returned
// as an *Error.
func (c *Client) Do(ctx context.Context, bearer string, key ed25519.PrivateKey, device, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return &Error{Message: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+"/graphql", bytes.NewReader(body))
	if err != nil {
		return &Error{Message: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if key != nil {
		req.Header.Set(attest.SignatureHeader, attest.SignRequest(key, device, "POST", "/graphql", time.Now(), body))
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &Error{Message: err.Error()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return &Error{Message: err.Error()}
	}
	var r gqlResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return &Error{Status: resp.StatusCode, Message: string(bytes.TrimSpace(raw[:min(len(raw), 300)]))}
	}
	if len(r.Errors) > 0 {
		return &Error{Status: resp.StatusCode, Code: r.Errors[0].Extensions.Code, Message: r.Errors[0].Message}
	}
	if resp.StatusCode != http.StatusOK {
		return &Error{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			return &Error{Status: resp.StatusCode, Message: "decoding data: " + err.Error()}
		}
	}
	return nil
}

// DevToken signs in as user through the dev issuer of the dev-mode gateway at server and
// returns the access token, or the error of reading /dev/oidc or of the sign-in.
func DevToken(ctx context.Context, server, user string) (string, error) {
	var info struct{ Issuer, ClientID, RedirectURI string }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/dev/oidc", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	err = json.NewDecoder(resp.Body).Decode(&info)
	_ = resp.Body.Close() // decoded already: a failed close loses nothing
	if err != nil {
		return "", fmt.Errorf("/dev/oidc: %w (is the gateway in dev mode?)", err)
	}
	return devissuer.FetchToken(ctx, info.Issuer, info.ClientID, info.RedirectURI, user)
}

// Device is a simulated worker: its enrolled key and the host it reports.
type Device struct {
	ID   string          `json:"id"`
	Key  []byte          `json:"key"` // ed25519.PrivateKey
	Snap attest.Snapshot `json:"snapshot"`
}

// PrivateKey returns the device's signing key.
func (d *Device) PrivateKey() ed25519.PrivateKey { return ed25519.PrivateKey(d.Key) }

// Host returns an 8 × H100 host whose GPU UUIDs and serials are unique to seed and to this
// moment (so that hosts of an earlier run on the same database never conflict).
func Host(seed int) attest.Snapshot {
	s := attest.Snapshot{DriverVersion: "550.54.15", NVMLVersion: "12.550.54.15", CUDADriverVersion: 12040}
	for i := range 8 {
		s.GPUs = append(s.GPUs, attest.GPU{
			UUID: fmt.Sprintf("GPU-b%07x-%04x-4000-8000-%012x", seed, i, time.Now().UnixNano()&0xffffffffffff), Name: "NVIDIA H100 80GB HBM3",
			PCIDeviceID: 0x2330, PCIVendorID: attest.VendorNVIDIA, BusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			MemoryTotalBytes: 81559 << 20, Architecture: "Hopper", ComputeMajor: 9, ComputeMinor: 0,
			Serial: fmt.Sprintf("16%05d%06d", seed%100000, i), // H100 boards report a 13-digit serial
		})
	}
	return s
}

// Enroll creates an enrollment token as the user holding token and enrolls a new key with the
// host Host(seed) in region. It returns the device, or the error of either step.
func (c *Client) Enroll(ctx context.Context, token string, seed int, region string) (*Device, error) {
	var tok struct{ CreateEnrollmentToken struct{ Token string } }
	if err := c.Do(ctx, token, nil, "", `mutation { createEnrollmentToken { token } }`, nil, &tok); err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	dv := &Device{Key: priv, Snap: Host(seed)}
	snap, err := json.Marshal(dv.Snap)
	if err != nil {
		return nil, err
	}
	var out struct{ EnrollDevice struct{ DeviceID string } }
	err = c.Do(ctx, "", priv, "", `mutation($in: EnrollDeviceInput!) { enrollDevice(input: $in) { deviceId } }`,
		map[string]any{"in": map[string]any{"token": tok.CreateEnrollmentToken.Token, "region": region,
			"publicKey": base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)), "snapshot": string(snap)}}, &out)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	dv.ID = out.EnrollDevice.DeviceID
	return dv, nil
}

// HeartbeatQuery is the worker's heartbeat mutation; HeartbeatVars its variables for dv.
const HeartbeatQuery = `mutation($d: ID!, $in: HeartbeatInput!) { heartbeat(deviceId: $d, input: $in) { status } }`

// HeartbeatVars returns the variables of one heartbeat of dv: every GPU busy.
func HeartbeatVars(dv *Device) map[string]any {
	readings := make([]map[string]any, len(dv.Snap.GPUs))
	for j, g := range dv.Snap.GPUs {
		readings[j] = map[string]any{"uuid": g.UUID, "utilizationPercent": 90, "temperatureC": 60, "memoryUsedMiB": 40000, "powerWatts": 650}
	}
	return map[string]any{"d": dv.ID, "in": map[string]any{"gpus": readings}}
}

// SubmitProofQuery is the worker's proof submission; its variables come from Prepare.
const SubmitProofQuery = `mutation($d: ID!, $in: ProofInput!) { submitProof(deviceId: $d, input: $in) { verdict reasons } }`

// ProofResult is submitProof's answer.
type ProofResult struct {
	SubmitProof struct {
		Verdict string
		Reasons []string
	}
}

// Challenge requests a challenge for dv. It returns the challenge's id, nonce and difficulty,
// or the request's error.
func (c *Client) Challenge(ctx context.Context, dv *Device) (id string, nonce []byte, difficulty int, err error) {
	var ch struct {
		RequestChallenge struct {
			ID, Nonce  string
			Difficulty int
		}
	}
	if err := c.Do(ctx, "", dv.PrivateKey(), dv.ID, `mutation($d: ID!) { requestChallenge(deviceId: $d) { id nonce difficulty } }`,
		map[string]any{"d": dv.ID}, &ch); err != nil {
		return "", nil, 0, err
	}
	nonce, err = base64.StdEncoding.DecodeString(ch.RequestChallenge.Nonce)
	if err != nil {
		return "", nil, 0, fmt.Errorf("challenge nonce: %w", err)
	}
	return ch.RequestChallenge.ID, nonce, ch.RequestChallenge.Difficulty, nil
}

// Prepare solves the challenge for dv as its worker does (attest.Prove) and returns the
// variables of SubmitProofQuery, or attest.Prove's error.
func Prepare(ctx context.Context, dv *Device, challengeID string, nonce []byte, difficulty int) (map[string]any, error) {
	p, err := attest.Prove(ctx, dv.PrivateKey(), challengeID, nonce, difficulty, dv.Snap)
	if err != nil {
		return nil, err
	}
	snap, err := json.Marshal(p.Snapshot)
	if err != nil {
		return nil, err
	}
	return map[string]any{"d": dv.ID, "in": map[string]any{
		"challengeId": p.ChallengeID, "counter": strconv.FormatUint(p.Counter, 10), "snapshot": string(snap),
		"signature": base64.StdEncoding.EncodeToString(p.Signature)}}, nil
}

// CPUTimes is the CPU time (user+system) of the gateway and of its PostgreSQL (every other
// descendant process).
type CPUTimes struct{ Gateway, Postgres time.Duration }

// CPUNow reads the CPU times of the process gatewayPID and its descendants from /proc (zero
// for pid 0 or without /proc). Exited processes' time is lost; the pool keeps its
// connections, so little is.
func CPUNow(gatewayPID int) CPUTimes {
	if gatewayPID == 0 {
		return CPUTimes{}
	}
	parent := map[int]int{}
	ticks := map[int]time.Duration{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat") // #nosec G304 -- a /proc entry named by a number
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) end with ')': state ppid ... utime(14) stime(15).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		parent[pid] = ppid
		ticks[pid] = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	var c CPUTimes
	for pid, t := range ticks {
		if pid == gatewayPID {
			c.Gateway += t
			continue
		}
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == gatewayPID {
				c.Postgres += t
				break
			}
		}
	}
	return c
}
