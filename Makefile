# gpugate developer targets. `make run` and `make test` are the README's two commands.
GO ?= go
# BIN is the binary `make run` builds (git ignores /gpugate).
BIN ?= ./gpugate

# go-nvml (the worker's NVML bindings, built with cgo) wraps NVML functions that its nvml.h marks
# deprecated: a cold build printed 29 -Wdeprecated-declarations warnings, about 165 lines of C
# diagnostics. Only that warning is silenced, for every go command run from here (one setting, so
# builds, tests and vet share the build cache); other warnings and every error still print. "-O2
# -g" is Go's default CGO_CFLAGS; a CGO_CFLAGS in the environment replaces the whole setting. A go
# command run by hand, with the default flags, compiles its own copy of the cgo packages once
# (about 30 s of CPU); both copies stay in the build cache.
CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
export CGO_CFLAGS

.PHONY: run test fuzz check generate lint lint-prometheus lint-static lint-deploy bench bench-quick bench-ingest bench-amplification soak

# run builds ./gpugate and runs it rather than `go run`: go run exits 1 whenever it was
# interrupted, so Ctrl-C ended with "make: *** Error 1" after the gateway's clean shutdown.
# The first build compiles every dependency (see README.md for how long); later ones take seconds.
run: ## run the gateway with its own PostgreSQL, demo data and GraphiQL
	@scripts/ensure-postgres
	@GO=$(GO) scripts/ensure-cgo
	@test -e $(BIN) || echo "building $(BIN): the first build compiles every dependency and takes a few minutes on 2 cores"
	$(GO) build -o $(BIN) .
	$(BIN) serve $(ARGS)

test: ## run every test against real PostgreSQL
	@scripts/ensure-postgres
	@GO=$(GO) scripts/ensure-cgo
	@scripts/dex-notice
	$(GO) test -count=1 ./...

# fuzz runs every Fuzz target for FUZZTIME each (default 10s; scripts/fuzz, docs/security.md
# "Fuzzing"); `make test` already runs their seed corpora as plain tests.
fuzz: ## fuzz every decoder of outside input for FUZZTIME each (default 10s; FUZZTIME=10m make fuzz for longer)
	@scripts/ensure-postgres
	@GO=$(GO) scripts/ensure-cgo
	GO=$(GO) scripts/fuzz

generate: ## regenerate graph/ from schema.graphqls
	$(GO) generate ./...

lint: ## gofmt, go vet, graph/ matches its generator, the Prometheus rules check and pass their tests, staticcheck and gosec, the Kubernetes manifests
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) generate ./...
	@git diff --exit-code -- graph resolvers || { echo "go generate changed generated code: commit its output"; exit 1; }
	@$(MAKE) --no-print-directory lint-prometheus
	@$(MAKE) --no-print-directory lint-static
	@$(MAKE) --no-print-directory lint-deploy

# staticcheck and gosec are built from tools/lint (their versions pinned in its go.mod, kept out
# of the main module's) by scripts/lint-tools, once per machine into the user cache dir next to
# e2e's Dex. Both scan every package of the main module, bench/ included; gosec skips _test.go
# files (its default: tests start servers and processes on purpose). Each exclusion is a
# `//lint:ignore` or `#nosec` comment at its line saying why.
lint-static: ## staticcheck and gosec over the main module
	@bin=$$(GO=$(GO) scripts/lint-tools) && \
		echo "staticcheck ./..." && "$$bin/staticcheck" ./... && \
		echo "gosec ./..." && "$$bin/gosec" -quiet -fmt text ./...

# kubeconform and kustomize are built from tools/kubeconform (pinned in its go.mod) and the
# Kubernetes JSON schemas generated from the OpenAPI document of the Kubernetes release pinned in
# tools/kubeconform/kubernetes-openapi, once per machine, by scripts/lint-deploy: no download
# beyond the Go module proxy. It also proves the validator refuses the broken manifests of
# tools/kubeconform/testdata/invalid, each for its stated reason.
lint-deploy: ## kubeconform -strict on deploy/kubernetes and every kustomization's output
	@GO=$(GO) scripts/lint-deploy

# promtool comes with Debian's prometheus package. Without it the rules are skipped with a
# notice, except under CI (GPUGATE_CI=1, set by .ci/run, which installs it), where that fails.
lint-prometheus: ## promtool check rules and promtool test rules on deploy/prometheus
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules deploy/prometheus/gpugate-alerts.yml && \
		promtool test rules deploy/prometheus/gpugate-alerts.test.yml; \
	elif [ "$$GPUGATE_CI" = 1 ]; then \
		echo "promtool is missing: apt-get install -y --no-install-recommends prometheus"; exit 1; \
	else \
		echo "promtool not installed: Prometheus rules not checked (apt-get install -y --no-install-recommends prometheus)"; \
	fi

bench: ## seed 1,000,000 devices; raw SQL, gpugate (cache off and on) and PostGraphile side by side (≈ 8 minutes)
	bench/run.sh

bench-quick: ## the same on 100,000 devices with 5 s cells: checks the harness in a few minutes
	bench/run.sh --quick

bench-ingest: ## worker ingestion: heartbeats/s and proofs/s at 64 signed workers
	bench/ingest.sh 64 20

bench-amplification: ## p99 of a cheap query while four worst-case accepted documents run
	bench/amplification.sh

# DURATION is the length of the measured load; the setup before it (build, seed, enrolling the
# workers) takes a minute or two more. See docs/soak.md for the mix and the verdict.
DURATION ?= 10m
soak: ## mixed load (workers, explorer, owners) for DURATION (default 10m): throughput, p50/p99, errors, memory over time, verdict
	bench/soak.sh $(DURATION)
