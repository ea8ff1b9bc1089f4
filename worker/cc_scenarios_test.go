package worker

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gpugate/gpugate/attest/nvidia"
	"github.com/gpugate/gpugate/resolvers"
	"github.com/gpugate/gpugate/worker/client"
)

// devConfig is the worker configuration of a zero-config (dev mode) gateway: simulated GPU
// models allowed and the simulation CA trusted (cli: --dev, no --database-url).
func devConfig() resolvers.WorkerConfig {
	return resolvers.WorkerConfig{AllowSimulatedGPUs: true, CC: nvidia.New(nvidia.Options{TrustSimulation: true})}
}

// level returns the public verification level of the device and of each of its GPUs.
func (g *testGateway) level(t *testing.T, deviceID string) (client.VerificationLevel, []client.VerificationLevel) {
	t.Helper()
	res, err := client.DeviceLevel(context.Background(), g.public(), deviceID)
	if err != nil || res.Device == nil {
		t.Fatalf("device level: %v", err)
	}
	var gpus []client.VerificationLevel
	for _, gpu := range res.Device.Gpus {
		gpus = append(gpus, gpu.VerificationLevel)
	}
	return res.Device.VerificationLevel, gpus
}

func allLevels(levels []client.VerificationLevel, want client.VerificationLevel) bool {
	for _, l := range levels {
		if l != want {
			return false
		}
	}
	return len(levels) > 0
}

// The acceptance check of issue 8 in zero-config mode, through the worker's command line:
// `--simulate dgxh100` ends SELF_REPORTED, `--simulate dgxh100-cc` ends ATTESTED (every GPU
// too), and a restart of the CC host keeps its GPUs' identities and stays ATTESTED.
func TestDevModeSimulatedCCHostIsAttested(t *testing.T) {
	t.Parallel()
	g := startGateway(t, devConfig(), nil)
	for profile, want := range map[string]client.VerificationLevel{
		"dgxh100":    client.VerificationLevelSelfReported,
		"dgxh100-cc": client.VerificationLevelAttested,
		"dgxh200-cc": client.VerificationLevelAttested,
		"dgxb200-cc": client.VerificationLevelAttested,
	} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			key := keyPath(t, "worker.json")
			args := []string{"--server", g.url, "--simulate", profile, "--key-file", key, "--once"}
			var stdout, stderr bytes.Buffer
			if code := mainContext(context.Background(), append(args, "--enroll", g.token(t, "alice")), nil, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), "level="+string(want)) {
				t.Errorf("the log does not say level=%s:\n%s", want, stderr.String())
			}
			id := deviceOf(t, key)
			dev, gpus := g.level(t, id)
			if dev != want || len(gpus) != 8 || !allLevels(gpus, want) {
				t.Fatalf("device %s, GPUs %v; want %s", dev, gpus, want)
			}
			if want == client.VerificationLevelAttested && strings.Count(stderr.String(), "GPU attested") != 8 {
				t.Errorf("the log does not name the 8 attested GPUs:\n%s", stderr.String())
			}
			stderr.Reset()
			if code := mainContext(context.Background(), args, nil, &stdout, &stderr); code != 0 {
				t.Fatalf("restart: exit %d:\n%s", code, stderr.String())
			}
			if dev, gpus := g.level(t, id); dev != want || !allLevels(gpus, want) {
				t.Fatalf("after a restart: device %s, GPUs %v; want %s", dev, gpus, want)
			}
		})
	}
}

// The CC counterfeits are FLAGGED with their reason codes even by a gateway that trusts the
// simulation CA: one GPU's identity for eight (CC_HARDWARE_REUSED), a chain under the worker's
// own CA (CC_CHAIN_UNTRUSTED).
func TestDevModeCCCounterfeitsAreFlagged(t *testing.T) {
	t.Parallel()
	g := startGateway(t, devConfig(), nil)
	for _, name := range []string{"dgxh100-cc-cloned", "dgxh100-cc-forged"} {
		p, ok := LookupProfile(name)
		if !ok || !p.Counterfeit || len(p.Expect) == 0 {
			t.Fatalf("profile %s: %+v", name, p)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := keyPath(t, "key.json")
			err := Run(context.Background(), g.options(t, p.Name, key, g.token(t, "bob")))
			var flagged *FlaggedError
			if !errors.As(err, &flagged) || !sameSet(flagged.Reasons, p.Expect) || flagged.Level != "FLAGGED" {
				t.Fatalf("run: %v, want FLAGGED with %v", err, p.Expect)
			}
			id := deviceOf(t, key)
			if rows := g.attestations(t, id); len(rows) != 1 || rows[0].Verdict != "FLAGGED" || !sameSet(rows[0].Reasons, p.Expect) {
				t.Fatalf("attestations: %+v", rows)
			}
			if dev, _ := g.level(t, id); dev != client.VerificationLevelFlagged {
				t.Fatalf("public level %s", dev)
			}
		})
	}
}

// A gateway given a database URL does not trust the simulation CA: a simulated CC host is never
// ATTESTED there (its chain is CC_CHAIN_UNTRUSTED), whatever it sends.
func TestProductionNeverAttestsSimulatedCC(t *testing.T) {
	t.Parallel()
	g := startGateway(t, resolvers.WorkerConfig{}, nil)
	key := keyPath(t, "key.json")
	err := Run(context.Background(), g.options(t, "dgxh100-cc", key, g.token(t, "alice")))
	var flagged *FlaggedError
	if !errors.As(err, &flagged) || !sameSet(flagged.Reasons, []string{"CC_CHAIN_UNTRUSTED"}) {
		t.Fatalf("run: %v, want FLAGGED with CC_CHAIN_UNTRUSTED", err)
	}
	if dev, _ := g.level(t, deviceOf(t, key)); dev == client.VerificationLevelAttested {
		t.Fatal("a production gateway attested a simulated GPU")
	}
}
