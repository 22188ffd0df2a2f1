#!/usr/bin/env bash
# tls-throughput.sh: gatewayd and nginx 1.22 terminating TLS with the same certificate (ECDSA
# P-256, made here by examples/make-tls-certificate.sh) and the same OpenSSL (Debian's libssl3,
# which both link), each answering a 13-byte body itself (gatewayd a direct_response, nginx
# `return 200`), 2 workers each, side by side in one run:
#
#   handshakes: wrk with "Connection: close": every request is a new TCP connection and a full
#               TLS handshake (TLS 1.3, X25519, ECDSA): new handshakes per second;
#   keep-alive: wrk on kept-alive TLS connections: HTTPS requests per second and p99;
#   h2:         h2load (nghttp2-client) over HTTP/2 chosen by ALPN, -m 16 streams per connection:
#               requests per second, and the mean request time (h2load reports no percentiles).
#
# Then the ratios gatewayd / nginx (req/s: higher is better; p99: lower). Everything listens on
# 127.0.0.1; everything started here is stopped on exit. Run it on a quiet machine.
#
# Usage: benchmarks/tls-throughput.sh [--duration S] [--connections N] [--threads N] [--warmup S]
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=10
CONNECTIONS=64
THREADS=2
WARMUP=2
WORKERS=2
READY_TIMEOUT=30
BODY="hello world!"
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --threads) THREADS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
for v in DURATION CONNECTIONS THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "${v,,} must be a positive integer, got '${!v}'"
done

RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/tls-throughput-$(date -u +%Y%m%dT%H%M%SZ)}
WRK_PID=""
declare -A PID=()

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null; fi
    stop_process "${PID[gatewayd]:-}" TERM 10
    stop_process "${PID[nginx]:-}" QUIT 10
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_packages curl:curl wrk:wrk nginx:nginx openssl:openssl ps:procps h2load:nghttp2-client
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ -z ${GATEWAYD_BIN:-} ]]; then
    GATEWAYD_BIN=$REPO_ROOT/.build/release/gatewayd
    [[ -x $GATEWAYD_BIN ]] || { GATEWAYD_BIN=""; build_gatewayd "$REPO_ROOT/.build"; }
fi
[[ -x $GATEWAYD_BIN ]] || die "GATEWAYD_BIN=$GATEWAYD_BIN is not an executable"

TMP=$(mktemp -d /tmp/tls-throughput.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/nginx" "$TMP/gatewayd"
"$REPO_ROOT/examples/make-tls-certificate.sh" "$TMP/tls" bench.test >/dev/null
CERT=$TMP/tls/bench.test.pem
KEY=$TMP/tls/bench.test.key

declare -A PORT=()
port=""
pick_port port 18443 && PORT[gatewayd]=$port
pick_port port 18444 && PORT[nginx]=$port
url_of() { echo "https://127.0.0.1:${PORT[$1]}/"; }

# Both: TLS 1.2 and 1.3, OpenSSL's default ciphers and groups, no session cache, tickets as
# OpenSSL issues them by default; nginx's keepalive_requests raised as in proxy-throughput.sh.
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes $WORKERS;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths "$NGINX" "$TMP/nginx")
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
CONF
cat >"$TMP/gatewayd/gateway.yaml" <<CONF
workers: $WORKERS
listeners:
  - name: https
    address: 127.0.0.1:${PORT[gatewayd]}
    backlog: 4096
    tls:
      certificates: [{ cert: $CERT, key: $KEY }]
      alpn: [h2, http/1.1]
routes:
  - name: all
    match: { path_prefix: / }
    direct_response: { status: 200, headers: { content-type: text/plain }, body: "$BODY\n" }
CONF

wait_tls() { # wait_tls SERVER: until it answers the body over TLS (bounded), or its pid is gone
    local start=$SECONDS
    while ((SECONDS - start < READY_TIMEOUT)); do
        alive "${PID[$1]}" || return 1
        [[ $(curl -fsS --max-time 2 --cacert "$CERT" --resolve "bench.test:${PORT[$1]}:127.0.0.1" \
            "https://bench.test:${PORT[$1]}/" 2>/dev/null) == "$BODY" ]] && return 0
        sleep 0.05
    done
    return 1
}

start_server() {
    case $1 in
        nginx)
            "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
                </dev/null >"$TMP/nginx/stdout.log" 2>"$TMP/nginx/stderr.log" &
            ;;
        gatewayd)
            "$GATEWAYD_BIN" --config "$TMP/gatewayd/gateway.yaml" --control-socket "$TMP/gatewayd/control.sock" \
                --log-level notice </dev/null >"$TMP/gatewayd/stdout.log" 2>"$TMP/gatewayd/gatewayd.log" &
            ;;
    esac
    PID[$1]=$!
    wait_tls "$1" || { tail -n 20 "$TMP/$1/"*.log >&2; die "$1 did not answer over TLS"; }
    remember_children "${PID[$1]}"
    log "$1 ready on $(url_of "$1") (pid ${PID[$1]})"
}

run_wrk() { # run_wrk SERVER MODE SECONDS OUT
    local hdr=()
    [[ $2 == handshakes ]] && hdr=(-H "Connection: close")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" --latency "${hdr[@]}" "$(url_of "$1")" >"$4" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || warn "wrk exited with status $? ($4)"
    WRK_PID=""
}

run_h2load() { # run_h2load SERVER SECONDS OUT
    h2load -t"$THREADS" -c"$CONNECTIONS" -m16 -D"$2" "$(url_of "$1")" >"$3" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || warn "h2load exited with status $? ($3)"
    WRK_PID=""
}

declare -A RPS P99 ERRORS
for server in nginx gatewayd; do
    start_server "$server"
    run_wrk "$server" keepalive "$WARMUP" "$TMP/$server/wrk-warmup.txt"
    for mode in handshakes keepalive; do
        out=$TMP/$server/wrk-$mode.txt
        log "$server, $mode: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s"
        run_wrk "$server" "$mode" "$DURATION" "$out"
        RPS[$server/$mode]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
        P99[$server/$mode]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
        ERRORS[$server/$mode]=$(awk '/Socket errors|Non-2xx/ {for (i = 1; i <= NF; i++) if ($i + 0 == $i) s += $i} END {print s + 0}' "$out")
    done
    out=$TMP/$server/h2load.txt
    log "$server, h2: h2load -t$THREADS -c$CONNECTIONS -m16 -D$DURATION"
    run_h2load "$server" "$DURATION" "$out"
    RPS[$server/h2]=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$out")
    # The mean time per request (h2load has no percentiles), in ms.
    P99[$server/h2]=$(to_ms "$(awk '/^time for request:/ {print $6}' "$out")")
    ERRORS[$server/h2]=$(awk '/^requests:/ {print $10 + $12}' "$out")
    stop_process "${PID[$server]}" "$([[ $server == nginx ]] && echo QUIT || echo TERM)" 10
    PID[$server]=""
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
{
    printf 'tls-throughput: %s, wrk -t%s -c%s -d%ss --latency, %s workers each, ECDSA P-256, %s\n' \
        "$(date -u +%FT%TZ)" "$THREADS" "$CONNECTIONS" "$DURATION" "$WORKERS" "$(openssl version)"
    printf '%-10s %-10s %12s %10s %8s\n' server mode req/s p99_ms errors
    for mode in handshakes keepalive h2; do
        for server in nginx gatewayd; do
            printf '%-10s %-10s %12s %10s %8s\n' "$server" "$mode" "${RPS[$server/$mode]}" \
                "${P99[$server/$mode]}" "${ERRORS[$server/$mode]}"
        done
    done
    printf '(h2: the p99_ms column is h2load'"'"'s mean request time)\n'
    for mode in handshakes keepalive h2; do
        printf 'gatewayd/nginx %-10s req/s %s   p99 %s\n' "$mode" \
            "$(ratio "${RPS[gatewayd/$mode]}" "${RPS[nginx/$mode]}")" \
            "$(ratio "${P99[gatewayd/$mode]}" "${P99[nginx/$mode]}")"
    done
} | tee "$TMP/summary.txt"
