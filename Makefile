# meshproof — build, test and lint. `make help` lists the targets.
GO       ?= go
GINKGO   := $(GO) tool ginkgo
BIN      := bin/meshproof
PROXY_BIN := bin/proxy/meshproof-proxy
DEMO     ?= scenarios/examples/retries-mask-failing-instance.yaml
IMAGE    ?= meshproof:dev
PROXY_IMAGE ?= meshproof-proxy:dev
# The test suite's settings: race detector on, specs in random order, docker specs when Docker is reachable.
GINKGO_FLAGS ?= -r -p --race --randomize-all --randomize-suites --keep-going --timeout=30m --poll-progress-after=120s

# The fuzz targets (package:FuzzName), run one at a time by `make fuzz` for FUZZTIME each.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./scenarios:FuzzParse \
	./reports:FuzzParseCheck \
	./proxy/config:FuzzParseBootstrap \
	./proxy/internal/h1:FuzzRequest \
	./proxy/internal/h1:FuzzResponse \
	./proxy/internal/h1:FuzzChunked \
	./proxy/internal/h1:FuzzPipeline \
	./mesh/load:FuzzReadResponse \
	./cmd/meshproof:FuzzLoadFlags

.PHONY: help build build-proxy image-proxy test test-fast lint fmt fuzz fuzz-report demo examples image bench-load bench-proxy bench-proxy-h2tls bench-reload bench-mesh bench-sim soak clean h2spec

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/meshproof (static, CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/meshproof

build-proxy: ## build $(PROXY_BIN), the proxy-only binary (static; links no runner, docker client or reports)
	CGO_ENABLED=0 $(GO) build -o $(PROXY_BIN) ./cmd/meshproof-proxy

test: ## run the whole test suite (Ginkgo, race detector, random order), then every fuzz target's seed corpus and committed crashers
	$(GINKGO) $(GINKGO_FLAGS) ./...
	go test -race -run '^Fuzz' ./...

test-fast: ## the suite without the specs labelled slow
	$(GINKGO) $(GINKGO_FLAGS) --label-filter='!slow' ./...

h2spec: ## hold the proxy's downstream HTTP/2 to h2spec 2.2.1 (generic + http2, h2c and TLS; exceptions: proxy/README.md)
	$(GINKGO) -v --label-filter=h2spec ./proxy

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

fuzz: ## run each fuzz target for FUZZTIME (default 30s), one at a time; new crashers land in the package's testdata/fuzz
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg || exit $$?; done

fuzz-report: ## run every fuzz target for FUZZTIME, all of them even after a finding; list the findings, exit 0 (CI's brief run)
	@found=; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
		if out=$$($(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -parallel 1 $$pkg 2>&1); then \
			echo "== $$name: $$(echo "$$out" | grep -o 'execs: [0-9]*' | tail -1) no finding"; \
		else echo "== $$name: FINDING"; echo "$$out" | tail -20; found="$$found $$name"; fi; done; \
	if [ -n "$$found" ]; then echo "fuzz findings (not blocking; each input is in its package's testdata/fuzz):$$found"; fi

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

demo: build ## run the default example scenario on the embedded runner (one process, loopback, no Docker)
	$(BIN) run $(DEMO) --out runs/demo

examples: build ## run every example scenario
	@for f in scenarios/examples/*.yaml; do echo "== $$f"; $(BIN) run $$f --out runs/$$(basename $$f .yaml) || exit $$?; done

image: ## build bin/meshproof (static) and the FROM-scratch image $(IMAGE) (classic builder: nothing is pulled)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/meshproof
	DOCKER_BUILDKIT=0 docker build -f mesh/docker/Dockerfile -t $(IMAGE) $(dir $(BIN))

image-proxy: build-proxy ## the deployable proxy's FROM-scratch image $(PROXY_IMAGE): meshproof-proxy alone
	DOCKER_BUILDKIT=0 docker build -f proxy/deploy/Dockerfile -t $(PROXY_IMAGE) $(dir $(PROXY_BIN))

SOAK      ?= 10m
SOAK_RATE ?= 500
soak: ## the soak: flapping faults, resets, hangs and slow bodies for $(SOAK) at $(SOAK_RATE)/s; goroutines, fds, heap and RSS must stay flat
	MESHPROOF_SOAK_DURATION=$(SOAK) MESHPROOF_SOAK_RATE=$(SOAK_RATE) $(GINKGO) -v --label-filter=soak --timeout=3h ./mesh/live

bench-load: ## meshproof load side by side with vegeta and wrk (and fortio when installable) + the coordinated-omission test (< 10 min)
	bash mesh/load/bench/run.sh

bench-proxy: ## meshproof's proxy vs HAProxy and nginx, one core each: start-up, RSS, CPU per request, throughput, added latency (5 rounds, ~20 min)
	bash proxy/bench/run.sh

H2TLS_ROUNDS ?= 3
bench-proxy-h2tls: ## bench-proxy's TLS and HTTP/2 rows only (#16): TLS 1.3 termination (keep-alive, a handshake per request) and h2load over h2c and h2+TLS, vs HAProxy and nginx (3 rounds, ~8 min)
	ROUNDS=$(H2TLS_ROUNDS) PHASES="tls h2" bash proxy/bench/run.sh

RELOAD_FLAGS ?=
bench-reload: build build-proxy ## hot reload under load (#17): 100 SIGHUP reloads at 70% of the proxy's capacity, open loop, vs none; 3 rounds (~4 min)
	@command -v wrk >/dev/null || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null; }
	$(GO) run ./proxy/bench/reload -meshproof $(BIN) -proxy $(PROXY_BIN) $(RELOAD_FLAGS)

MESH_DEPTHS ?= 1,2,4,6,8
bench-mesh: ## the largest call graph the embedded runner holds: chains of services at 500 req/s for 30 s each, p99 added per hop (~3 min)
	go run ./mesh/live/bench/meshbench -depths $(MESH_DEPTHS)

BENCH_SIM_ROUNDS ?= 3
bench-sim: ## the simulator (#20 Scale) on the 1,000-service × 10 mesh, one core: 10 simulated minutes and a 1M-request run, vs a SimPy reference ($(BENCH_SIM_ROUNDS) rounds; mesh/sim/bench/README.md)
	ROUNDS=$(BENCH_SIM_ROUNDS) bash mesh/sim/bench/run.sh

clean: ## remove build output and run directories
	rm -rf bin runs
