# gatewayd: `make run` starts the demo (three demo upstreams, then gatewayd in the foreground on
# examples/gateway-proxy.yaml, 127.0.0.1:8080); `make test` runs every test.
# Both install what the build and the tests need when it is missing (Debian 12, as root).

SWIFT ?= swift
CONFIG ?= examples/gateway-proxy.yaml
# Debian packages: libsystemd-dev to link libsystemd; pkg-config to find it; curl, wrk and
# python3 are the real clients the tests drive (python3 also runs the demo upstreams); procps (pkill, ps) and iproute2 (ss) for checks;
# systemd for systemd-socket-activate, which the socket-activation tests run; haproxy as a real
# PROXY protocol sender (send-proxy, send-proxy-v2) in front of gatewayd.
DEB_PACKAGES := libsystemd-dev pkg-config curl wrk python3 procps iproute2 systemd haproxy

# The Swift runtime and Foundation linked in statically: a worker starts in about half the
# time (measured: ready 15-20 ms instead of 27 ms per reload) with less memory per process.
RELEASE_FLAGS := -c release --static-swift-stdlib
# Where `make release` builds (swift build --scratch-path); the benchmark scripts pass their own.
SCRATCH ?= $(CURDIR)/.build

.PHONY: all deps build release run test check-config benchmark benchmark-proxy chaos clean format

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build $(RELEASE_FLAGS) --scratch-path $(SCRATCH)

# examples/run-demo.sh: demo upstreams on 127.0.0.1:9001-9003 (examples/demo-upstream.py), each
# waited for by its READY line, then gatewayd; the upstreams stop when gatewayd exits.
run: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd CONFIG=$(CONFIG) examples/run-demo.sh

check-config: build
	.build/debug/gatewayd check --config $(CONFIG)

# Builds the tests and the executables they start, in release, then runs everything. Release,
# because that is what users run, and because a debug SwiftNIO asserts (BaseSocketChannel
# readable0) on the accept race that is inherent to several processes sharing one listening
# socket: all workers wake, one accepts, the others read nothing. The integration tests find
# the binaries through GATEWAYD_BIN and GATEWAYCTL_BIN.
# (`swift test` enables testable imports in release too.) Serial: the real-process tests put
# wrk at full load on both cores, and timing assertions elsewhere must not run beside them.
# Own scratch path: the test runner cannot link statically, and sharing .build with the
# static release build would rebuild everything each time one follows the other.
TEST_BUILD := $(CURDIR)/.build-test
# Test builds only: compiles in the worker's fault injection (a config comment line
# `# gatewayd-fault: ...`, see Sources/Gateway/WorkerProcess+FaultInjection.swift). The
# release build that `make run` and packages use never has it.
TEST_FLAGS := -Xswiftc -DGATEWAYD_FAULT_INJECTION
test: deps
	GATEWAYD_BIN=$(TEST_BUILD)/release/gatewayd GATEWAYCTL_BIN=$(TEST_BUILD)/release/gatewayctl \
		$(SWIFT) test -c release --no-parallel --scratch-path $(TEST_BUILD) $(TEST_FLAGS)

benchmark: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/reload-under-load.sh

# Proxy throughput, gatewayd vs nginx (and HAProxy: make benchmark-proxy BENCH_ARGS=--with-haproxy).
benchmark-proxy: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd benchmarks/proxy-throughput.sh $(BENCH_ARGS)

# Load plus faults (reload storms, killed workers, upstreams and master, a stopped worker):
# a few minutes, a table of failed requests and recovery times (docs/reliability.md, "Chaos
# run"). Not part of `make test`. make chaos BENCH_ARGS=--quick: about 1.5 minutes;
# BENCH_ARGS="--peer nginx --peer haproxy": the same phases against nginx and HAProxy after.
chaos: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/chaos.sh $(BENCH_ARGS)

format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift

clean:
	rm -rf .build .build-test
