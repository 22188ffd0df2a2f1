# gatewayd: `make run` starts the demo (three demo upstreams, then gatewayd in the foreground on
# examples/gateway-proxy.yaml, 127.0.0.1:8080); `make test` runs every test.
# Both install what the build and the tests need when it is missing (Debian 12, as root).

SWIFT ?= swift
CONFIG ?= examples/gateway-proxy.yaml
# Debian packages: libsystemd-dev to link libsystemd; pkg-config to find it; curl, wrk and
# python3 are the real clients the tests drive (python3 also runs the demo upstreams); procps (pkill, ps) and iproute2 (ss) for checks;
# systemd for systemd-socket-activate, which the socket-activation tests run; haproxy as a real
# PROXY protocol sender (send-proxy, send-proxy-v2) in front of gatewayd.
# lintian checks the .deb the packaging test builds (dpkg-deb, in dpkg, is always there);
# python3-pip installs the Kubernetes schema the manifest test validates against. libssl-dev: the
# OpenSSL that TLS listeners link (Sources/CGatewayTLS); openssl makes the tests' certificates
# and is the s_client they drive. prometheus for promtool, which checks /metrics against
# Prometheus' conventions (ObservabilityTests); chromium, a real browser that loads the status
# page headless (StatusPageTests).
DEB_PACKAGES := libsystemd-dev libssl-dev openssl pkg-config curl wrk python3 procps iproute2 systemd haproxy lintian \
	python3-pip prometheus chromium

# The version both binaries report (--version, `gatewayctl status`, the master's start-up log
# line, the .deb): `git describe` of the newest v* tag when there is one (v0.2.0-3-gabc1234 ->
# 0.2.0-3-gabc1234), else BASE_VERSION+git.<commit>; .dirty when the tree has changes; and
# BASE_VERSION alone outside a git checkout (a source tarball). `make VERSION=1.2.3` overrides.
BASE_VERSION := 0.1.0
VERSION ?= $(shell packaging/version.sh $(BASE_VERSION))
# The version reaches the code as a header in the build directory (see
# Sources/CGatewayShim/shim.c): only shim.c is recompiled when it changes, and the tree stays
# clean. $(call version-flags,SCRATCH) writes it (only if it changed) and gives the flags.
HASH := \#
version-flags = $(shell mkdir -p $(1)/version && printf '$(HASH)define GATEWAYD_VERSION "%s"\n' '$(VERSION)' \
	>$(1)/version/gatewayd_version.h.new && { cmp -s $(1)/version/gatewayd_version.h.new \
	$(1)/version/gatewayd_version.h && rm $(1)/version/gatewayd_version.h.new || mv \
	$(1)/version/gatewayd_version.h.new $(1)/version/gatewayd_version.h; }) -Xcc -I$(1)/version

# The Swift runtime and Foundation linked in statically: a worker starts in about half the
# time (measured: ready 15-20 ms instead of 27 ms per reload) with less memory per process.
RELEASE_FLAGS := -c release --static-swift-stdlib
# OpenTelemetry tracing (docs/observability.md, "Tracing"): swift-otel and its OTLP/HTTP exporter
# are linked only with the package trait OTLPTracing, so that the default build stays without
# them (their first build takes minutes). `make release TRACING=1` builds with it, in a scratch
# directory of its own: the trait changes every module's flags, and sharing one would rebuild
# everything at each switch.
TRACING ?=
TRAIT_FLAGS := $(if $(TRACING),--traits OTLPTracing)
# Where `make release` builds (swift build --scratch-path); the benchmark scripts pass their own.
SCRATCH ?= $(CURDIR)/.build$(if $(TRACING),-tracing)

.PHONY: all deps build release run test test-tracing check-config benchmark benchmark-upgrade benchmark-proxy benchmark-transfer benchmark-tls chaos clean format \
	man completions install uninstall deb package-deb

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
	$(SWIFT) build $(call version-flags,$(CURDIR)/.build)

release: deps
	$(SWIFT) build $(RELEASE_FLAGS) $(TRAIT_FLAGS) --scratch-path $(SCRATCH) $(call version-flags,$(SCRATCH))

# examples/run-demo.sh: demo upstreams on 127.0.0.1:9001-9003 (examples/demo-upstream.py), each
# waited for by its READY line, then gatewayd; the upstreams stop when gatewayd exits.
# make run CONFIG=examples/gateway-tls.yaml: the same behind TLS on 127.0.0.1:8443, with a
# throwaway certificate made at the first run (examples/make-tls-certificate.sh).
run: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd CONFIG=$(CONFIG) examples/run-demo.sh

check-config: build
	.build/debug/gatewayd check --config $(CONFIG)

# Tools the build and the tests use, in their own scratch directory.
TOOLS := $(CURDIR)/.build-tools
# swift-argument-parser's man page generator, built from the very version the package resolved.
GENERATE_MANUAL := $(TOOLS)/generate-manual/debug/generate-manual
$(GENERATE_MANUAL):
	$(SWIFT) package --scratch-path $(TOOLS)/resolved resolve
	$(SWIFT) build --package-path $(TOOLS)/resolved/checkouts/swift-argument-parser \
		--scratch-path $(TOOLS)/generate-manual --product generate-manual
# The Kubernetes API's schema, as PyPI's `kubernetes` client carries it in its models (Debian
# packages no schema validator such as kubeconform); KubernetesManifestTests validates
# examples/kubernetes/ against it. --target: beside the tests, nothing installed system-wide.
KUBERNETES_CLIENT_VERSION := 37.0.2
KUBERNETES_PYTHON := $(TOOLS)/python-$(KUBERNETES_CLIENT_VERSION)/kubernetes/__init__.py
$(KUBERNETES_PYTHON):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile --root-user-action=ignore \
		--target $(TOOLS)/python-$(KUBERNETES_CLIENT_VERSION) kubernetes==$(KUBERNETES_CLIENT_VERSION)

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
test: deps $(GENERATE_MANUAL) $(KUBERNETES_PYTHON)
	GATEWAYD_BIN=$(TEST_BUILD)/release/gatewayd GATEWAYCTL_BIN=$(TEST_BUILD)/release/gatewayctl \
		KUBERNETES_PYTHONPATH=$(TOOLS)/python-$(KUBERNETES_CLIENT_VERSION) GATEWAYD_VERSION=$(VERSION) \
		$(SWIFT) test -c release --no-parallel --scratch-path $(TEST_BUILD) $(TEST_FLAGS) \
		$(call version-flags,$(TEST_BUILD))

# The tracing tests (TracingTests: spans exported to a real OTLP receiver; the validator's
# acceptance of `tracing:`) on a build with the OTLPTracing trait, in its own scratch directory
# (as `test`'s, but with swift-otel, so nothing is shared with it). The receiver decodes OTLP with
# PyPI's opentelemetry-proto (Debian packages none), installed beside the tests like the
# Kubernetes client. `make test` skips these tests; CI runs both (.ci/run).
TRACING_TEST_BUILD := $(CURDIR)/.build-tracing-test
OTLP_PROTO_VERSION := 1.45.2
OTLP_PYTHON := $(TOOLS)/python-otlp-$(OTLP_PROTO_VERSION)/opentelemetry/proto/__init__.py
$(OTLP_PYTHON):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile --root-user-action=ignore \
		--target $(TOOLS)/python-otlp-$(OTLP_PROTO_VERSION) opentelemetry-proto==$(OTLP_PROTO_VERSION)
test-tracing: deps $(OTLP_PYTHON)
	GATEWAYD_BIN=$(TRACING_TEST_BUILD)/release/gatewayd GATEWAYCTL_BIN=$(TRACING_TEST_BUILD)/release/gatewayctl \
		OTLP_PYTHONPATH=$(TOOLS)/python-otlp-$(OTLP_PROTO_VERSION) GATEWAYD_VERSION=$(VERSION) \
		$(SWIFT) test -c release --no-parallel --scratch-path $(TRACING_TEST_BUILD) $(TEST_FLAGS) --traits OTLPTracing \
		$(call version-flags,$(TRACING_TEST_BUILD)) --filter 'TracingTests|TracingConfigTests'

benchmark: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/reload-under-load.sh

# TLS termination, gatewayd vs nginx with the same certificate: handshakes/s, keep-alive req/s and p99.
benchmark-tls: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd benchmarks/tls-throughput.sh $(BENCH_ARGS)

# Upgrading the master itself under load, gatewayd (`gatewayctl upgrade`) vs nginx (USR2, WINCH, QUIT).
benchmark-upgrade: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/upgrade-under-load.sh

# Proxy throughput, gatewayd vs nginx (and HAProxy: make benchmark-proxy BENCH_ARGS=--with-haproxy).
benchmark-proxy: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd benchmarks/proxy-throughput.sh $(BENCH_ARGS)

# Download and upload of 1 MiB and 100 MiB bodies, 10,000 idle keep-alive connections and memory
# at rest, gatewayd vs nginx (make benchmark-transfer BENCH_ARGS=--quick: a short check).
benchmark-transfer: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/transfer-and-memory.sh $(BENCH_ARGS)

# Load plus faults (reload storms, killed workers, upstreams and master, a stopped worker):
# a few minutes, a table of failed requests and recovery times (docs/reliability.md, "Chaos
# run"). Not part of `make test`. make chaos BENCH_ARGS=--quick: about 1.5 minutes;
# BENCH_ARGS="--peer nginx --peer haproxy": the same phases against nginx and HAProxy after.
chaos: release
	GATEWAYD_BIN=$(SCRATCH)/release/gatewayd GATEWAYCTL_BIN=$(SCRATCH)/release/gatewayctl \
		benchmarks/chaos.sh $(BENCH_ARGS)

# --- Installing ------------------------------------------------------------------------------
# make release && make install [PREFIX=/usr/local] [DESTDIR=]: the binaries, shell completions,
# man pages, systemd units (their paths rewritten to PREFIX), the example config (kept if one
# is there) and docs. make uninstall removes the same (the config only if unchanged). BUILT:
# where gatewayd and gatewayctl are taken from (the packaging test passes its own build).
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
BUILT ?= $(SCRATCH)/release
BINDIR = $(PREFIX)/bin
MANDIR = $(PREFIX)/share/man/man1
DOCDIR = $(PREFIX)/share/doc/gatewayd
BASHCOMPDIR = $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR = $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR = $(PREFIX)/share/fish/vendor_completions.d
# systemd reads units from /usr/local/lib/systemd/system as well as /usr/lib/systemd/system.
UNITDIR ?= $(PREFIX)/lib/systemd/system
# Type=notify-reload needs systemd 253; older ones (Debian 12's 252) get the ExecReload= unit.
SYSTEMD_VERSION ?= $(shell systemctl --version 2>/dev/null | awk 'NR == 1 { print $$2 + 0 }')
SERVICE_UNIT ?= $(if $(shell [ "$(SYSTEMD_VERSION)" -ge 253 ] 2>/dev/null && echo new),gatewayd.service,gatewayd-debian12.service)
# Generated from the built binaries: man pages by generate-manual (below), completions by the
# binaries themselves.
GENERATED = $(BUILT)/generated
MAN_DATE := $(shell git log -1 --format=%cs 2>/dev/null || date -u +%F)

man: $(GENERATE_MANUAL)
	@test -x $(BUILT)/gatewayd || { echo "no $(BUILT)/gatewayd: run make release first" >&2; exit 1; }
	mkdir -p $(GENERATED)/man
	# generate-manual leaves the blank lines of --help's discussions in, which groff reads as
	# literal empty lines (lintian: groff-message): make them paragraph breaks.
	for tool in gatewayd gatewayctl; do \
		$(GENERATE_MANUAL) $(BUILT)/$$tool --date $(MAN_DATE) --output-directory $(GENERATED)/man && \
		sed -i 's/^$$/.Pp/' $(GENERATED)/man/$$tool.1 || exit 1; \
	done

completions:
	@test -x $(BUILT)/gatewayd || { echo "no $(BUILT)/gatewayd: run make release first" >&2; exit 1; }
	mkdir -p $(GENERATED)/completions
	for tool in gatewayd gatewayctl; do \
		for shell in bash zsh fish; do \
			$(BUILT)/$$tool --generate-completion-script $$shell >$(GENERATED)/completions/$$tool.$$shell || exit 1; \
		done; \
		sed -i '1{/^#!/d}' $(GENERATED)/completions/$$tool.bash; \
	done

install: man completions
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(SYSCONFDIR)/gatewayd
	install -m 0755 $(BUILT)/gatewayd $(BUILT)/gatewayctl $(DESTDIR)$(BINDIR)/
	install -m 0644 $(GENERATED)/man/gatewayd.1 $(GENERATED)/man/gatewayctl.1 $(DESTDIR)$(MANDIR)/
	for tool in gatewayd gatewayctl; do \
		install -m 0644 $(GENERATED)/completions/$$tool.bash $(DESTDIR)$(BASHCOMPDIR)/$$tool && \
		install -m 0644 $(GENERATED)/completions/$$tool.zsh $(DESTDIR)$(ZSHCOMPDIR)/_$$tool && \
		install -m 0644 $(GENERATED)/completions/$$tool.fish $(DESTDIR)$(FISHCOMPDIR)/$$tool.fish || exit 1; \
	done
	sed 's|/usr/local/bin/|$(BINDIR)/|g' examples/systemd/$(SERVICE_UNIT) >$(DESTDIR)$(UNITDIR)/gatewayd.service
	install -m 0644 examples/systemd/gatewayd.socket $(DESTDIR)$(UNITDIR)/gatewayd.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/gatewayd.service
	install -m 0644 examples/gateway.yaml examples/gateway-proxy.yaml examples/demo-keys.txt $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	test -e $(DESTDIR)$(SYSCONFDIR)/gatewayd/gatewayd.yaml || \
		install -m 0644 examples/gateway.yaml $(DESTDIR)$(SYSCONFDIR)/gatewayd/gatewayd.yaml

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/gatewayd $(DESTDIR)$(BINDIR)/gatewayctl \
		$(DESTDIR)$(MANDIR)/gatewayd.1 $(DESTDIR)$(MANDIR)/gatewayctl.1 \
		$(DESTDIR)$(UNITDIR)/gatewayd.service $(DESTDIR)$(UNITDIR)/gatewayd.socket \
		$(DESTDIR)$(BASHCOMPDIR)/gatewayd $(DESTDIR)$(BASHCOMPDIR)/gatewayctl \
		$(DESTDIR)$(ZSHCOMPDIR)/_gatewayd $(DESTDIR)$(ZSHCOMPDIR)/_gatewayctl \
		$(DESTDIR)$(FISHCOMPDIR)/gatewayd.fish $(DESTDIR)$(FISHCOMPDIR)/gatewayctl.fish
	rm -rf $(DESTDIR)$(DOCDIR)
	# The config only if it is still the example: an edited one is the operator's.
	if cmp -s examples/gateway.yaml $(DESTDIR)$(SYSCONFDIR)/gatewayd/gatewayd.yaml; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/gatewayd/gatewayd.yaml; rmdir $(DESTDIR)$(SYSCONFDIR)/gatewayd 2>/dev/null || true; \
	fi

# make deb: build/gatewayd_VERSION_ARCH.deb with dpkg-deb (packaging/build-deb.sh): what make
# install puts under /usr, the unit for Debian 12's systemd, the gatewayd system user; it enables
# and starts nothing. package-deb packages BUILT as is (the packaging test uses its own build).
DEB_DIR ?= $(CURDIR)/build
deb: release
	$(MAKE) package-deb

package-deb: man completions
	packaging/build-deb.sh "$(BUILT)" "$(VERSION)" "$(DEB_DIR)"

format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift

clean:
	rm -rf .build .build-test .build-tracing .build-tracing-test
