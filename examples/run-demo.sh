#!/usr/bin/env bash
# run-demo.sh: the demo behind `make run`. Starts three demo upstreams on 127.0.0.1
# (examples/demo-upstream.py: api-1 on 9001, api-2 on 9002, web on 9003), waits for each one's
# READY line, then runs gatewayd in the foreground on examples/gateway-proxy.yaml. When gatewayd
# exits (Ctrl-C, `gatewayctl stop`, SIGTERM), the upstreams are stopped too.
#
#   examples/run-demo.sh [extra gatewayd arguments]
#
# Environment: GATEWAYD_BIN (default .build/release/gatewayd), CONFIG (default
# examples/gateway-proxy.yaml; examples/gateway-tls.yaml serves HTTPS with a throwaway certificate), PYTHON (default python3), READY_TIMEOUT (seconds, default 10).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GATEWAYD_BIN=${GATEWAYD_BIN:-$HERE/../.build/release/gatewayd}
CONFIG=${CONFIG:-$HERE/gateway-proxy.yaml}
PYTHON=${PYTHON:-python3}
READY_TIMEOUT=${READY_TIMEOUT:-10}
UPSTREAMS=("api-1 9001" "api-2 9002" "web 9003")   # name port: what gateway-proxy.yaml expects

die() { printf 'run-demo: %s\n' "$*" >&2; exit 1; }
[[ -x $GATEWAYD_BIN ]] || die "no gatewayd at $GATEWAYD_BIN (run make release, or set GATEWAYD_BIN)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"

TMP=$(mktemp -d /tmp/gatewayd-demo.XXXXXX)
declare -a PIDS=()

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for entry in "${UPSTREAMS[@]}"; do
    read -r name port <<<"$entry"
    # The upstream's stdout is a FIFO that carries its one READY line: reading it is the wait.
    mkfifo "$TMP/$name.ready"
    "$PYTHON" "$HERE/demo-upstream.py" --port "$port" --name "$name" >"$TMP/$name.ready" &
    PIDS+=("$!")
    line=""
    read -r -t "$READY_TIMEOUT" line <"$TMP/$name.ready" || true
    [[ $line == "READY $port" ]] ||
        die "upstream $name did not start on 127.0.0.1:$port (is the port taken? its error is above)"
    printf 'run-demo: upstream %s on 127.0.0.1:%s (pid %s)\n' "$name" "$port" "${PIDS[-1]}" >&2
done

# A config with TLS listeners names certificates under examples/tls/: make a throwaway one for
# localhost the first time (examples/make-tls-certificate.sh; git ignores the directory).
if grep -q 'tls/localhost\.pem' "$CONFIG" && [[ ! -e $HERE/tls/localhost.pem ]]; then
    "$HERE/make-tls-certificate.sh" "$HERE/tls" localhost >/dev/null ||
        die "could not make a certificate in $HERE/tls (is openssl installed?)"
    printf 'run-demo: made a throwaway certificate, %s/tls/localhost.pem\n' "$HERE" >&2
fi

printf 'run-demo: gatewayd on %s; try the curl commands at the top of it. Ctrl-C stops everything.\n' "$CONFIG" >&2
# In the foreground, not exec'd: the upstreams are stopped when it returns.
rc=0
"$GATEWAYD_BIN" --config "$CONFIG" "$@" || rc=$?
exit "$rc"
