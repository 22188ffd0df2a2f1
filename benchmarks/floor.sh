#!/usr/bin/env bash
# floor.sh: what each layer under gatewayd's data path can do on this machine, side by side in
# one run: every server answers a fixed 13-byte 200 to every request.
#
#   nginx            nginx 1.22, 2 workers, `return 200` (the peer)
#   nio-raw          SwiftNIO, 2 event loops, no HTTP codec: a response per "\r\n\r\n"
#   nio-http1        SwiftNIO, 2 event loops, NIOHTTP1's request decoder (llhttp) only
#   epoll            no framework: 2 threads, one epoll loop each (benchmarks/floor/Sources/floor-epoll)
#   gatewayd         gatewayd, 2 workers, a direct_response route
#
# The three floor servers are in benchmarks/floor (a package of their own). Load: wrk -t2 -c64,
# keep-alive, then with "Connection: close". Reported per row: req/s, p50, p99, errors, the
# server's CPU (100 = one core) and its CPU seconds per 100k requests.
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
#
# Usage: benchmarks/floor.sh [--duration S] [--connections N] [--only "nginx epoll ..."]
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=10
CONNECTIONS=64
THREADS=2
WARMUP=2
SERVERS="nginx nio-raw nio-http1 epoll gatewayd"
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --only) SERVERS=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown option '$1'" ;;
    esac
done
MODES="keepalive close"
BODY="hello world!"

declare -A PID=()
WRK_PID=""
stop_server() {
    local s=$1
    [[ -n ${PID[$s]:-} ]] || return 0
    case $s in nginx) stop_process "${PID[$s]}" QUIT 10 ;; gatewayd) stop_process "${PID[$s]}" TERM 15 ;; *) stop_process "${PID[$s]}" TERM 5 ;; esac
    PID[$s]=""
}
cleanup() {
    local rc=$? s
    set +e
    trap - EXIT INT TERM
    alive "$WRK_PID" && kill -TERM "$WRK_PID" 2>/dev/null
    for s in $SERVERS; do stop_server "$s"; done
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_packages curl:curl wrk:wrk nginx:nginx ps:procps python3:python3
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/floor-$(date -u +%Y%m%dT%H%M%SZ)}
TMP=$(mktemp -d /tmp/floor.XXXXXX)
chmod 755 "$TMP"

# ---------------------------------------------------------------------------- build
FLOOR_SCRATCH=$REPO_ROOT/.build-floor
if [[ " $SERVERS " =~ \ (nio-raw|nio-http1|epoll)\  ]]; then
    log "building the floor servers (benchmarks/floor, scratch $FLOOR_SCRATCH)"
    swift build -c release --package-path "$REPO_ROOT/benchmarks/floor" --scratch-path "$FLOOR_SCRATCH" >&2 ||
        die "building benchmarks/floor failed"
fi
if [[ " $SERVERS " == *" gatewayd "* && -z ${GATEWAYD_BIN:-} ]]; then
    GATEWAYD_BIN=$REPO_ROOT/.build/release/gatewayd
    [[ -x $GATEWAYD_BIN ]] || { GATEWAYD_BIN=""; build_gatewayd "$REPO_ROOT/.build"; }
fi

declare -A PORT=()
port=""
p=18100
for s in $SERVERS; do pick_port port "$p"; PORT[$s]=$port; p=$((port + 1)); done
url_of() { echo "http://127.0.0.1:${PORT[$1]}/"; }

mkdir -p "$TMP/nginx" "$TMP/gatewayd"
cat >"$TMP/nginx/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $TMP/nginx/cb; proxy_temp_path $TMP/nginx/p; fastcgi_temp_path $TMP/nginx/f;
    uwsgi_temp_path $TMP/nginx/u; scgi_temp_path $TMP/nginx/s;
    server {
        listen 127.0.0.1:${PORT[nginx]:-0} backlog=4096;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
NGX
cat >"$TMP/gatewayd/gateway.yaml" <<GWY
workers: 2
listeners:
  - { name: http, address: 127.0.0.1:${PORT[gatewayd]:-0}, backlog: 4096 }
routes:
  - name: all
    match: { path_prefix: / }
    direct_response:
      status: 200
      headers: { content-type: text/plain }
      body: "$BODY\n"
GWY

start_server() {
    local s=$1
    case $s in
        nginx) "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" </dev/null >/dev/null 2>&1 & ;;
        nio-raw) "$FLOOR_SCRATCH/release/floor-nio-raw" "${PORT[$s]}" 2 </dev/null >"$TMP/$s.log" 2>&1 & ;;
        nio-http1) "$FLOOR_SCRATCH/release/floor-nio-http1" "${PORT[$s]}" 2 </dev/null >"$TMP/$s.log" 2>&1 & ;;
        epoll) "$FLOOR_SCRATCH/release/floor-epoll" "${PORT[$s]}" 2 </dev/null >"$TMP/$s.log" 2>&1 & ;;
        gatewayd)
            "$GATEWAYD_BIN" --config "$TMP/gatewayd/gateway.yaml" --control-socket "$TMP/gatewayd/control.sock" \
                --log-level notice </dev/null >/dev/null 2>"$TMP/gatewayd/gatewayd.log" &
            ;;
    esac
    PID[$s]=$!
    wait_body "$(url_of "$s")" "$BODY" 30 "${PID[$s]}" || die "$s did not answer within 30 s"
    remember_children "${PID[$s]}"
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local p total=0 t
    for p in "$1" $(children_of "$1"); do
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
to_ms() {
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0;
        else if (v ~ /s$/) printf "%.3f", v * 1000; else print "?" }'
}
run_wrk() {
    local s=$1 mode=$2 secs=$3 out=$4 hdr=()
    [[ $mode == close ]] && hdr=(-H "Connection: close")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "${hdr[@]}" "$(url_of "$s")" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || warn "wrk exited with status $? ($out)"
    WRK_PID=""
}
declare -A RPS P50 P99 ERR CPU CPU100K
measure() {
    local s=$1 mode=$2 key="$1/$2" out="$TMP/$1-$2.txt" c0 c1 t0 t1 secs reqs se
    c0=$(cpu_ticks "${PID[$s]}"); t0=${EPOCHREALTIME/./}
    run_wrk "$s" "$mode" "$DURATION" "$out"
    t1=${EPOCHREALTIME/./}; c1=$(cpu_ticks "${PID[$s]}")
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1000000}')
    reqs=$(awk '/ requests in /{print $1}' "$out")
    RPS[$key]=$(awk '/^Requests\/sec:/{printf "%.0f", $2}' "$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    se=$(grep 'Socket errors:' "$out" || true)
    ERR[$key]=$([[ -n $se ]] && sed -n 's/.*connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1\/\2\/\3\/\4/p' <<<"$se" || echo 0/0/0/0)
    CPU[$key]=$(awk -v t=$((c1 - c0)) -v s="$secs" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", t / hz / s * 100}')
    CPU100K[$key]=$(awk -v t=$((c1 - c0)) -v r="${reqs:-0}" -v hz="$CLK_TCK" 'BEGIN{ if (r > 0) printf "%.2f", t / hz / r * 100000; else print "?" }')
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $SERVERS; do
    log "$s on $(url_of "$s")"
    start_server "$s"
    ((WARMUP > 0)) && run_wrk "$s" keepalive "$WARMUP" "$TMP/$s-warmup.txt"
    for mode in $MODES; do measure "$s" "$mode"; done
    stop_server "$s"
done

printf '\nfloor: %s, wrk -t%s -c%s -d%ss, 13-byte body; load average before %s, after %s\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$THREADS" "$CONNECTIONS" "$DURATION" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-10s %9s %8s %8s %12s %6s %14s %10s\n' server mode "req/s" "p50 ms" "p99 ms" "errors" "CPU %" "CPU s/100k req" "vs nginx"
for s in $SERVERS; do
    for mode in $MODES; do
        k="$s/$mode"
        vs=$(awk -v a="${RPS[$k]:-0}" -v b="${RPS[nginx/$mode]:-0}" 'BEGIN{ if (b > 0) printf "%.2fx", a / b; else print "-" }')
        printf '%-10s %-10s %9s %8s %8s %12s %6s %14s %10s\n' "$s" "$mode" "${RPS[$k]:-?}" "${P50[$k]:-?}" "${P99[$k]:-?}" \
            "${ERR[$k]:-?}" "${CPU[$k]:-?}" "${CPU100K[$k]:-?}" "$vs"
    done
done
