#!/usr/bin/env bash
# tls-throughput.sh: gatewayd and nginx 1.22 terminating TLS with the same certificate (ECDSA
# P-256, made here by examples/make-tls-certificate.sh) and the same OpenSSL (Debian's libssl3,
# which both link), each answering a 13-byte body itself (gatewayd a direct_response, nginx
# `return 200`), 2 workers each, side by side in one run:
#
#   handshakes: wrk with "Connection: close" to a listener that issues no session tickets (nginx's
#               `ssl_session_tickets off`, gatewayd's `session_tickets: false`): every request is
#               a new TCP connection and a full TLS handshake (TLS 1.3, X25519, ECDSA): new
#               handshakes per second;
#   resumed:    the same to the listener with tickets (as both serve by default): wrk keeps each
#               connection's session and resumes it (TLS 1.3 PSK with X25519, no certificate),
#               as browsers do for a returning visitor;
#   keep-alive: wrk on kept-alive TLS connections: HTTPS requests per second and p99;
#   h2:         h2load (nghttp2-client) over HTTP/2 chosen by ALPN, -m 16 streams per connection:
#               requests per second, and the mean request time (h2load reports no percentiles).
#
# Then the ratios gatewayd / nginx (req/s: higher is better; p99: lower). Everything listens on
# 127.0.0.1; everything started here is stopped on exit. Run it on a quiet machine.
#
# --proxied: both proxy every request to one origin instead (nginx, 1 worker, `return 200` of the
# same body, over HTTP/1.1 with kept-alive upstream connections: nginx's upstream keepalive 32,
# gatewayd's pool), as a gateway in front of a service does; the origin's CPU is not counted.
#
# Usage: benchmarks/tls-throughput.sh [--duration S] [--rounds N] [--connections N] [--threads N]
#                                     [--warmup S] [--proxied]
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=5
ROUNDS=3
PROXIED=0
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
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --proxied) PROXIED=1; shift ;;
        -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
for v in DURATION ROUNDS CONNECTIONS THREADS; do
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
    stop_process "${PID[origin]:-}" QUIT 10
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
mkdir -p "$TMP/nginx" "$TMP/gatewayd" "$TMP/origin"
"$REPO_ROOT/examples/make-tls-certificate.sh" "$TMP/tls" bench.test >/dev/null
CERT=$TMP/tls/bench.test.pem
KEY=$TMP/tls/bench.test.key

declare -A PORT=()
port=""
pick_port port 18443 && PORT[gatewayd]=$port
pick_port port 18444 && PORT[nginx]=$port
pick_port port 18445 && PORT[gatewayd-full]=$port
pick_port port 18446 && PORT[nginx-full]=$port
pick_port port 18447 && PORT[origin]=$port
url_of() { echo "https://127.0.0.1:${PORT[$1]}/"; }

# Both: TLS 1.2 and 1.3, OpenSSL's default ciphers and groups, no session cache, tickets as
# OpenSSL issues them by default on one port, none on the other; nginx's keepalive_requests
# raised as in proxy-throughput.sh.
if ((PROXIED)); then
    NGINX_ACTION='proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";'
    NGINX_UPSTREAM="upstream origin { server 127.0.0.1:${PORT[origin]}; keepalive 32; }"
    GATEWAYD_ACTION="upstream: origin"
    GATEWAYD_UPSTREAMS="upstreams:
  origin:
    endpoints: [127.0.0.1:${PORT[origin]}]"
else
    NGINX_ACTION="default_type text/plain; return 200 \"$BODY\\n\";"
    NGINX_UPSTREAM=""
    GATEWAYD_ACTION="direct_response: { status: 200, headers: { content-type: text/plain }, body: \"$BODY\\n\" }"
    GATEWAYD_UPSTREAMS=""
fi
cat >"$TMP/origin/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths "$NGINX" "$TMP/origin")
    server {
        listen 127.0.0.1:${PORT[origin]} backlog=4096;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
CONF
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
    $NGINX_UPSTREAM
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { $NGINX_ACTION }
    }
    server {
        listen 127.0.0.1:${PORT[nginx-full]} ssl backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        location / { $NGINX_ACTION }
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
  - name: full
    address: 127.0.0.1:${PORT[gatewayd-full]}
    backlog: 4096
    tls:
      certificates: [{ cert: $CERT, key: $KEY }]
      session_tickets: false
routes:
  - name: all
    match: { path_prefix: / }
    $GATEWAYD_ACTION
$GATEWAYD_UPSTREAMS
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
        origin)
            "$NGINX" -p "$TMP/origin" -e "$TMP/origin/error.log" -c "$TMP/origin/nginx.conf" \
                </dev/null >"$TMP/origin/stdout.log" 2>"$TMP/origin/stderr.log" &
            PID[origin]=$!
            remember_pid "${PID[origin]}"
            wait_body "http://127.0.0.1:${PORT[origin]}/" "$BODY" "$READY_TIMEOUT" "${PID[origin]}" || die "the origin did not answer"
            remember_children "${PID[origin]}"
            return
            ;;
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
    local hdr=() target=$1
    [[ $2 == handshakes || $2 == resumed ]] && hdr=(-H "Connection: close")
    [[ $2 == handshakes ]] && target=$1-full
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" --latency "${hdr[@]}" "$(url_of "$target")" >"$4" 2>&1 &
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

# Both servers run at once (an idle one costs nothing) and the runs alternate, each mode in
# turn, nginx first in odd rounds and gatewayd first in even ones: a machine whose speed drifts
# (a VM's neighbours) then weighs on both alike. The table gives each one's median over the
# rounds, and the per-round ratios show the spread.
cpu_ticks() { # cpu_ticks PID: user + system clock ticks of PID and its children (workers)
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
measure() { # measure SERVER MODE ROUND
    local server=$1 mode=$2 round=$3 out=$TMP/$1/$2-$3.txt key=$1/$2/$3 before
    before=$(cpu_ticks "${PID[$server]}")
    if [[ $mode == h2 ]]; then
        log "$server, h2 (round $round): h2load -t$THREADS -c$CONNECTIONS -m16 -D$DURATION"
        run_h2load "$server" "$DURATION" "$out"
        RPS[$key]=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$out")
        # The mean time per request (h2load has no percentiles), in ms.
        P99[$key]=$(to_ms "$(awk '/^time for request:/ {print $6}' "$out")")
        ERRORS[$key]=$(awk '/^requests:/ {print $10 + $12}' "$out")
    else
        log "$server, $mode (round $round): wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s"
        run_wrk "$server" "$mode" "$DURATION" "$out"
        RPS[$key]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
        P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
        ERRORS[$key]=$(awk '/Socket errors|Non-2xx/ {for (i = 1; i <= NF; i++) if ($i + 0 == $i) s += $i} END {print s + 0}' "$out")
    fi
    # The server's CPU per request in microseconds: steadier than req/s, which also depends on
    # how the two cores are shared with the load generator.
    CPU[$key]=$(awk -v t=$(($(cpu_ticks "${PID[$server]}") - before)) -v hz="$(getconf CLK_TCK)" \
        -v rps="${RPS[$key]}" -v d="$DURATION" 'BEGIN { if (rps > 0) printf "%.1f", t / hz * 1e6 / (rps * d); else print 0 }')
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
column_of() { # column_of ARRAY SERVER MODE: the values of every round
    local -n array=$1
    local round
    for ((round = 1; round <= ROUNDS; round++)); do echo "${array[$2/$3/$round]}"; done
}

MODES=(handshakes resumed keepalive h2)
# shellcheck disable=SC2034  # read through column_of's nameref
declare -A RPS P99 ERRORS CPU
((PROXIED)) && start_server origin
for server in nginx gatewayd; do
    start_server "$server"
    run_wrk "$server" keepalive "$WARMUP" "$TMP/$server/wrk-warmup.txt"
done
for ((round = 1; round <= ROUNDS; round++)); do
    order=(nginx gatewayd)
    ((round % 2 == 0)) && order=(gatewayd nginx)
    for mode in "${MODES[@]}"; do
        for server in "${order[@]}"; do measure "$server" "$mode" "$round"; done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
{
    printf 'tls-throughput%s: %s, wrk -t%s -c%s -d%ss --latency, %s rounds, %s workers each, ECDSA P-256, %s\n' \
        "$( ((PROXIED)) && echo ' --proxied (to an nginx origin over HTTP/1.1)')" "$(date -u +%FT%TZ)" "$THREADS" \
        "$CONNECTIONS" "$DURATION" "$ROUNDS" "$WORKERS" "$(openssl version)"
    printf '%-10s %-10s %12s %10s %12s %8s\n' server mode req/s p99_ms cpu_us/req errors
    declare -A MEDIAN_RPS MEDIAN_P99 MEDIAN_CPU
    for mode in "${MODES[@]}"; do
        for server in nginx gatewayd; do
            MEDIAN_RPS[$server/$mode]=$(column_of RPS "$server" "$mode" | median)
            MEDIAN_P99[$server/$mode]=$(column_of P99 "$server" "$mode" | median)
            MEDIAN_CPU[$server/$mode]=$(column_of CPU "$server" "$mode" | median)
            errors=$(column_of ERRORS "$server" "$mode" | awk '{s += $1} END {print s + 0}')
            printf '%-10s %-10s %12.0f %10.3f %12.1f %8s\n' "$server" "$mode" "${MEDIAN_RPS[$server/$mode]}" \
                "${MEDIAN_P99[$server/$mode]}" "${MEDIAN_CPU[$server/$mode]}" "$errors"
        done
    done
    printf '(medians over the rounds; errors summed; h2: the p99_ms column is h2load'"'"'s mean request time;\n'
    printf ' cpu_us/req: the server'"'"'s processes, master and workers)\n'
    printf 'gatewayd/nginx, median of the rounds'"'"' ratios (each round ran both back to back):\n'
    for mode in "${MODES[@]}"; do
        local_rps="" local_p99="" local_cpu=""
        for ((round = 1; round <= ROUNDS; round++)); do
            local_rps+=" $(ratio "${RPS[gatewayd/$mode/$round]}" "${RPS[nginx/$mode/$round]}")"
            local_p99+=" $(ratio "${P99[gatewayd/$mode/$round]}" "${P99[nginx/$mode/$round]}")"
            local_cpu+=" $(ratio "${CPU[gatewayd/$mode/$round]}" "${CPU[nginx/$mode/$round]}")"
        done
        # shellcheck disable=SC2086  # one ratio per word
        printf '  %-10s req/s %s   p99 %s   cpu/req %s   (req/s by round:%s)\n' "$mode" \
            "$(printf '%s\n' $local_rps | median)" "$(printf '%s\n' $local_p99 | median)" \
            "$(printf '%s\n' $local_cpu | median)" "$local_rps"
    done
} | tee "$TMP/summary.txt"
