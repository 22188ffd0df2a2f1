#!/usr/bin/env bash
# proxy-throughput.sh: gatewayd and nginx 1.22 (and HAProxy 2.6 with --with-haproxy) as reverse
# proxies in front of the same origin, side by side, on the same machine, in one run.
#
#   origin:   nginx, 1 worker, `return 200` of a 13-byte body, on its own port. Measured alone
#             first (the "origin" rows), and its CPU use is reported during every proxied run,
#             to show it is not the bottleneck (see benchmarks/README.md).
#   nginx:    2 workers, proxy_pass to an upstream block with keepalive 32, HTTP/1.1 upstream.
#   gatewayd: 2 workers, one route to upstream `origin` with 32 idle connections per endpoint.
#   haproxy:  nbthread 2, http-reuse always (only with --with-haproxy).
#
# Load: wrk -t2 -cN -dDs --latency, keep-alive, then with "Connection: close". Reported per row:
# requests/s, p50, p99, non-2xx, socket errors, the CPU used by the proxy and by the origin, and
# the proxy's CPU seconds per 100k requests. Then gatewayd once more under an LD_PRELOAD
# allocation counter (benchmarks/support/malloc-count.c): heap allocations per request.
#
# --direct is the direct-response twin: nginx `return 200`, gatewayd a direct_response,
# HAProxy `http-request return`, all answering the same 13 bytes themselves; no origin.
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
#
# Usage: benchmarks/proxy-throughput.sh [--duration S] [--connections N] [--with-haproxy] [--direct]
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: benchmarks/proxy-throughput.sh [options]

  --duration S      seconds of wrk per row (default 10)
  --connections N   wrk -c (default 64)
  --threads N       wrk -t (default 2)
  --warmup S        seconds of unreported wrk before each server's rows (default 2)
  --origin-workers N  worker processes of the origin nginx (default 1); a run with 2 that
                    gives the proxies the same rates shows the origin was not the bottleneck
  --with-haproxy    also measure HAProxy 2.6 (installed when missing)
  --direct          the direct-response twin: every server answers the 13-byte body itself
  --no-allocations  skip the allocation-counting run
  -h, --help        this help

Environment: GATEWAYD_BIN (default .build/release/gatewayd, built with `make release` when
missing), GATEWAYD_EXTRA_CONFIG (YAML appended to gatewayd's config), RESULTS_DIR (default benchmarks/results/proxy-throughput-<UTC time>; empty: none),
KEEP_TMP=1 keeps the temp directory.
EOF
}

# ---------------------------------------------------------------------------- options
DURATION=10
CONNECTIONS=64
THREADS=2
WARMUP=2
WITH_HAPROXY=0
DIRECT=0
ALLOCATIONS=1
PROXY_WORKERS=2      # nginx worker_processes, gatewayd workers, haproxy nbthread
ORIGIN_WORKERS=1
KEEPALIVE=32         # idle upstream connections per endpoint (nginx: per worker)
READY_TIMEOUT=30     # seconds for a server to answer after it starts
BODY="hello world!"  # + "\n": the 13-byte body the origin serves

while (($#)); do
    case $1 in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --connections) CONNECTIONS=${2:?--connections needs a value}; shift 2 ;;
        --threads) THREADS=${2:?--threads needs a value}; shift 2 ;;
        --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
        --origin-workers) ORIGIN_WORKERS=${2:?--origin-workers needs a value}; shift 2 ;;
        --with-haproxy) WITH_HAPROXY=1; shift ;;
        --direct) DIRECT=1; shift ;;
        --no-allocations) ALLOCATIONS=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
for v in DURATION CONNECTIONS THREADS ORIGIN_WORKERS; do
    opt=${v,,}
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${opt//_/-} must be a positive integer, got '${!v}'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds, got '$WARMUP'"
((THREADS <= CONNECTIONS)) || die "--threads ($THREADS) cannot exceed --connections ($CONNECTIONS)"

SERVERS="origin nginx gatewayd"
if ((DIRECT)); then SERVERS="nginx gatewayd"; fi
((WITH_HAPROXY)) && SERVERS+=" haproxy"
MODES="keepalive close"

RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/proxy-throughput-$(date -u +%Y%m%dT%H%M%SZ)}

# ---------------------------------------------------------------------------- state and cleanup
WRK_PID=""
declare -A PID=()            # server -> master pid

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$? s
    set +e
    trap - EXIT INT TERM
    if alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null; fi
    for s in haproxy gatewayd nginx origin; do stop_server "$s"; done
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- packages and build
PACKAGES=(curl:curl python3:python3 ps:procps wrk:wrk nginx:nginx)
((WITH_HAPROXY)) && PACKAGES+=(haproxy:haproxy)
ensure_packages "${PACKAGES[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [[ -z ${GATEWAYD_BIN:-} ]]; then
    GATEWAYD_BIN=$REPO_ROOT/.build/release/gatewayd
    [[ -x $GATEWAYD_BIN ]] || { GATEWAYD_BIN=""; build_gatewayd "$REPO_ROOT/.build"; }
fi
[[ -x $GATEWAYD_BIN ]] || die "GATEWAYD_BIN=$GATEWAYD_BIN is not an executable"

TMP=$(mktemp -d /tmp/proxy-throughput.XXXXXX)
chmod 755 "$TMP"

# ---------------------------------------------------------------------------- ports
declare -A PORT=()
port=""
for s in origin gatewayd nginx haproxy; do
    case $s in origin) p=18090 ;; gatewayd) p=18080 ;; nginx) p=18081 ;; haproxy) p=18082 ;; esac
    pick_port port "$p"
    PORT[$s]=$port
done
url_of() { echo "http://127.0.0.1:${PORT[$1]}/"; }

# ---------------------------------------------------------------------------- configs
mkdir -p "$TMP/origin" "$TMP/nginx" "$TMP/gatewayd" "$TMP/haproxy"
# keepalive_requests: 1.22 closes a keep-alive connection after 1000 requests by default,
# which would make both proxies reconnect to the origin (and nginx reconnect wrk) during the
# run; raised so that connection reuse is what is measured.
cat >"$TMP/origin/nginx.conf" <<EOF
worker_processes $ORIGIN_WORKERS;
daemon off;
master_process on;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths "$NGINX" "$TMP/origin")
    server {
        listen 127.0.0.1:${PORT[origin]} backlog=4096;
        location / { return 200 "$BODY\n"; }
        # Connections accepted so far: how many upstream connections each proxy opened.
        location = /__origin_status { stub_status; }
    }
}
EOF

cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $PROXY_WORKERS;
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
    upstream origin {
        server 127.0.0.1:${PORT[origin]};
        keepalive $KEEPALIVE;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        location / {
$(if ((DIRECT)); then printf '            default_type text/plain;\n            return 200 "%s\\n";\n' "$BODY"; else printf '            proxy_pass http://origin;\n            proxy_http_version 1.1;\n            proxy_set_header Connection "";\n'; fi)
        }
    }
}
EOF

if ((DIRECT)); then
    GW_ACTION="    direct_response:
      status: 200
      headers: { content-type: text/plain }
      body: \"$BODY\\n\""
else
    GW_ACTION="    upstream: origin"
fi
cat >"$TMP/gatewayd/gateway.yaml" <<EOF
workers: $PROXY_WORKERS
listeners:
  - { name: http, address: 127.0.0.1:${PORT[gatewayd]}, backlog: 4096 }
upstreams:
  origin:
    endpoints: [127.0.0.1:${PORT[origin]}]
    keepalive: { max_idle_per_endpoint: $KEEPALIVE, idle_timeout: 60s }
routes:
  - name: all
    match: { path_prefix: / }
$GW_ACTION
EOF
if ((DIRECT)); then
    # No origin: no upstream either.
    sed -i '/^upstreams:/,/^routes:/{/^routes:/!d}' "$TMP/gatewayd/gateway.yaml"
fi
if [[ -n ${GATEWAYD_EXTRA_CONFIG:-} ]]; then
    # Top-level keys added to gatewayd's config, e.g. a `tracing:` section (docs/benchmarks.md,
    # "Tracing").
    printf '%s\n' "$GATEWAYD_EXTRA_CONFIG" >>"$TMP/gatewayd/gateway.yaml"
fi

cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread $PROXY_WORKERS
    maxconn 4096
    pidfile $TMP/haproxy/haproxy.pid
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 75s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
$(if ((DIRECT)); then printf '    http-request return status 200 content-type text/plain string "%s\\n"\n' "$BODY"; fi)
    default_backend origin
backend origin
    server origin 127.0.0.1:${PORT[origin]}
EOF

# ---------------------------------------------------------------------------- servers
log_of() {
    case $1 in
        origin | nginx) echo "$TMP/$1/error.log" ;;
        gatewayd) echo "$TMP/gatewayd/gatewayd.log" ;;
        haproxy) echo "$TMP/haproxy/haproxy.log" ;;
    esac
}
log_tail() {
    local f
    f=$(log_of "$1")
    printf -- '---- last lines of %s ----\n' "$f" >&2
    tail -n 30 "$f" >&2 2>/dev/null || true
    printf -- '----\n' >&2
}

# start_server SERVER: starts it, waits (bounded) until it answers the origin's body.
# Returns 1 (with NOTE[SERVER] set) when it does not come up.
declare -A NOTE=()
start_server() {
    local server=$1 pid rc=0
    case $server in
        origin | nginx)
            "$NGINX" -t -q -p "$TMP/$server" -e "$TMP/$server/error.log" -c "$TMP/$server/nginx.conf" \
                2>"$TMP/$server/configtest.log" || {
                cat "$TMP/$server/configtest.log" >&2
                die "nginx rejected $TMP/$server/nginx.conf"
            }
            "$NGINX" -p "$TMP/$server" -e "$TMP/$server/error.log" -c "$TMP/$server/nginx.conf" \
                </dev/null >"$TMP/$server/stdout.log" 2>"$TMP/$server/stderr.log" &
            ;;
        haproxy)
            "$HAPROXY" -c -q -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy/configtest.log" 2>&1 || {
                cat "$TMP/haproxy/configtest.log" >&2
                die "haproxy rejected $TMP/haproxy/haproxy.cfg"
            }
            "$HAPROXY" -db -f "$TMP/haproxy/haproxy.cfg" </dev/null >"$TMP/haproxy/haproxy.log" 2>&1 &
            ;;
        gatewayd)
            if ! "$GATEWAYD_BIN" check --config "$TMP/gatewayd/gateway.yaml" >"$TMP/gatewayd/check.log" 2>&1; then
                NOTE[$server]="config refused: $(head -n 1 "$TMP/gatewayd/check.log")"
                cat "$TMP/gatewayd/check.log" >&2
                return 1
            fi
            if [[ -n ${MALLOC_DIR:-} ]]; then
                LD_PRELOAD=$MALLOC_LIB MALLOC_COUNT_DIR=$MALLOC_DIR "$GATEWAYD_BIN" --config "$TMP/gatewayd/gateway.yaml" \
                    --control-socket "$TMP/gatewayd/control.sock" --pid-file "$TMP/gatewayd/gatewayd.pid" \
                    --log-level notice </dev/null >"$TMP/gatewayd/stdout.log" 2>>"$TMP/gatewayd/gatewayd.log" &
            else
                "$GATEWAYD_BIN" --config "$TMP/gatewayd/gateway.yaml" --control-socket "$TMP/gatewayd/control.sock" \
                    --pid-file "$TMP/gatewayd/gatewayd.pid" --log-level notice \
                    </dev/null >"$TMP/gatewayd/stdout.log" 2>"$TMP/gatewayd/gatewayd.log" &
            fi
            ;;
    esac
    pid=$!
    PID[$server]=$pid
    wait_body "$(url_of "$server")" "$BODY" "$READY_TIMEOUT" "$pid" || rc=$?
    if ((rc == 0)); then
        remember_children "$pid"
        log "$server ready on $(url_of "$server") (pid $pid)"
        return 0
    fi
    log_tail "$server"
    if ((rc == 2)); then
        NOTE[$server]="exited during startup"
        PID[$server]=""
        return 1
    fi
    NOTE[$server]="no '$BODY' answer within ${READY_TIMEOUT}s"
    stop_server "$server"
    return 1
}

# ---------------------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) used so far by PID and its children (threads included).
cpu_ticks() {
    local p total=0 t
    [[ -n $1 ]] || { echo 0; return; }
    for p in "$1" $(children_of "$1"); do
        # Fields after "pid (comm) ": state is 1st, utime 12th, stime 13th.
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
cpu_percent() { # cpu_percent TICKS SECONDS -> % of one core
    awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN{ if (s > 0) printf "%.0f", t / hz / s * 100; else print "?" }'
}

declare -A R_RPS R_P50 R_P99 R_NON2XX R_ERRORS R_PROXY_CPU R_ORIGIN_CPU R_REQS R_ORIGIN_CONNS R_CPU100K R_ALLOCS
# Connections the origin has accepted so far (its stub_status; the poll itself counts as one).
origin_accepts() {
    # No origin with --direct: nothing to count (and no failure under set -e).
    curl -fsS --max-time 2 "http://127.0.0.1:${PORT[origin]}/__origin_status" 2>/dev/null | awk 'NR == 3 {print $1}' || true
}
run_wrk() { # run_wrk SERVER MODE SECONDS OUT
    local server=$1 mode=$2 secs=$3 out=$4 hdr=()
    [[ $mode == close ]] && hdr=(-H "Connection: close")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "${hdr[@]}" "$(url_of "$server")" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || warn "wrk exited with status $? ($out)"
    WRK_PID=""
}

measure() { # measure SERVER MODE
    local server=$1 mode=$2 key="$1/$2" out t0 t1 p0 p1 o0 o1 a0 a1 secs se
    out="$TMP/$server/wrk-$mode.txt"
    log "$server, $mode: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s$([[ $mode == close ]] && echo ' -H "Connection: close"')"
    a0=$(origin_accepts)
    o0=$(cpu_ticks "${PID[origin]}")
    p0=$(cpu_ticks "${PID[$server]}")
    t0=${EPOCHREALTIME/./}
    run_wrk "$server" "$mode" "$DURATION" "$out"
    t1=${EPOCHREALTIME/./}
    p1=$(cpu_ticks "${PID[$server]}")
    o1=$(cpu_ticks "${PID[origin]}")
    a1=$(origin_accepts)
    if [[ $a0 =~ ^[0-9]+$ && $a1 =~ ^[0-9]+$ ]]; then R_ORIGIN_CONNS[$key]=$((a1 - a0 - 1)); else R_ORIGIN_CONNS[$key]="?"; fi
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1000000}')
    R_ORIGIN_CPU[$key]=$(cpu_percent $((o1 - o0)) "$secs")
    if [[ $server == origin ]]; then R_PROXY_CPU[$key]="-"; else R_PROXY_CPU[$key]=$(cpu_percent $((p1 - p0)) "$secs"); fi
    R_REQS[$key]=$(awk '/ requests in /{print $1}' "$out")
    R_CPU100K[$key]=$(awk -v t=$((p1 - p0)) -v r="${R_REQS[$key]:-0}" -v hz="$CLK_TCK" \
        'BEGIN{ if (r > 0) printf "%.2f", t / hz / r * 100000; else print "?" }')
    R_RPS[$key]=$(awk '/^Requests\/sec:/{printf "%.0f", $2}' "$out")
    R_P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    R_P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    R_NON2XX[$key]=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    se=$(grep 'Socket errors:' "$out" || true)
    if [[ -n $se ]]; then
        R_ERRORS[$key]=$(sed -n 's/.*connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1\/\2\/\3\/\4/p' <<<"$se")
    else
        R_ERRORS[$key]="0/0/0/0"
    fi
    if [[ -z ${R_RPS[$key]} ]]; then
        warn "could not parse the wrk output $out:"
        cat "$out" >&2
        R_RPS[$key]="?"
    fi
    : "${R_NON2XX[$key]:=0}" "${R_REQS[$key]:=?}"
    alive "${PID[$server]}" || { NOTE[$server]="DIED during the $mode run"; log_tail "$server"; }
}

# ---------------------------------------------------------------------------- run
log "ports: origin ${PORT[origin]}, gatewayd ${PORT[gatewayd]}, nginx ${PORT[nginx]}$( ((WITH_HAPROXY)) && echo ", haproxy ${PORT[haproxy]}"); temp dir $TMP"
((DIRECT)) && log "--direct: every server answers the body itself"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if ((DIRECT)); then
    # No origin runs: its rows and its CPU are not measured.
    PID[origin]=""
else
    start_server origin || die "the origin did not start: ${NOTE[origin]}"
fi
for server in $SERVERS; do
    if [[ $server != origin ]]; then
        start_server "$server" || { warn "$server: ${NOTE[$server]}: skipped"; continue; }
    fi
    if ((WARMUP > 0)); then
        log "$server: ${WARMUP}s warm-up (not reported)"
        run_wrk "$server" keepalive "$WARMUP" "$TMP/$server/wrk-warmup.txt"
    fi
    for mode in $MODES; do
        alive "${PID[$server]}" || break
        measure "$server" "$mode"
    done
    [[ $server != origin ]] && stop_server "$server"
done

# Heap allocations per request (gatewayd), in runs of their own: the counter's atomic adds
# would cost the timed rows something.
if ((ALLOCATIONS)) && [[ " $SERVERS " == *" gatewayd "* ]]; then
    MALLOC_LIB=$TMP/malloc-count.so
    if gcc -O2 -shared -fPIC -o "$MALLOC_LIB" "$REPO_ROOT/benchmarks/support/malloc-count.c" -lpthread 2>"$TMP/malloc-build.log"; then
        MALLOC_DIR=$TMP/mallocs
        mkdir -p "$MALLOC_DIR"
        if start_server gatewayd; then
            run_wrk gatewayd keepalive 2 "$TMP/gatewayd/wrk-alloc-warmup.txt"
            for mode in $MODES; do
                workers=$(children_of "${PID[gatewayd]}")
                sleep 0.3 # the counters are written every 100 ms
                before=0; for w in $workers; do before=$((before + $(cat "$MALLOC_DIR/$w" 2>/dev/null || echo 0))); done
                run_wrk gatewayd "$mode" 3 "$TMP/gatewayd/wrk-alloc-$mode.txt"
                sleep 0.3
                after=0; for w in $workers; do after=$((after + $(cat "$MALLOC_DIR/$w" 2>/dev/null || echo 0))); done
                reqs=$(awk '/ requests in /{print $1}' "$TMP/gatewayd/wrk-alloc-$mode.txt")
                R_ALLOCS[gatewayd/$mode]=$(awk -v d=$((after - before)) -v r="${reqs:-0}" 'BEGIN{ if (r > 0) printf "%.1f", d / r; else print "?" }')
            done
            stop_server gatewayd
        fi
        unset MALLOC_DIR
    else
        warn "cannot build the allocation counter: $(head -n 3 "$TMP/malloc-build.log")"
    fi
fi

# ---------------------------------------------------------------------------- report
version_of() {
    case $1 in
        origin | nginx) "$NGINX" -v 2>&1 | sed 's/^nginx version: //' ;;
        haproxy) "$HAPROXY" -v 2>/dev/null | head -n 1 | awk '{print "haproxy/" $3}' ;;
        gatewayd) printf 'gatewayd (%s)' "$GATEWAYD_BIN" ;;
    esac
}
printf '\n'
printf 'proxy-throughput: %s, wrk -t%s -c%s -d%ss --latency per row, %s-byte body from the origin\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$THREADS" "$CONNECTIONS" "$DURATION" "$((${#BODY} + 1))"
printf 'origin:   %s, %s worker(s), return 200 (measured alone in the "origin" rows)\n' "$(version_of origin)" "$ORIGIN_WORKERS"
printf 'proxies:  %s workers/threads each, %s idle upstream connections kept\n' "$PROXY_WORKERS" "$KEEPALIVE"
for s in $SERVERS; do [[ $s == origin ]] || printf '  %-9s %s\n' "$s:" "$(version_of "$s")"; done
printf 'machine:  %s cores, %s; load average before the run %s, after %s\n' "$(nproc)" "$(uname -sr)" \
    "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
((DIRECT)) && printf 'DIRECT-RESPONSE TWIN: every server answered the body itself (no origin).\n'
printf '\n'
row() { printf '%-9s %-10s %9s %9s %9s %8s %14s %7s %9s %7s %7s %8s  %s\n' "$@"; }
row server mode "req/s" "p50 ms" "p99 ms" "non-2xx" "errors c/r/w/t" "proxy" "proxy CPU" "allocs" "origin" "origin" ""
row "" "" "" "" "" "" "" "CPU %" "s/100k req" "/req" "CPU %" "conns" ""
for server in $SERVERS; do
    for mode in $MODES; do
        key="$server/$mode"
        if [[ -z ${R_RPS[$key]:-} ]]; then
            row "$server" "$mode" - - - - - - - - - - "${NOTE[$server]:-not run}"
            continue
        fi
        row "$server" "$mode" "${R_RPS[$key]}" "${R_P50[$key]}" "${R_P99[$key]}" "${R_NON2XX[$key]}" \
            "${R_ERRORS[$key]}" "${R_PROXY_CPU[$key]}" "${R_CPU100K[$key]:--}" "${R_ALLOCS[$key]:--}" \
            "${R_ORIGIN_CPU[$key]}" "${R_ORIGIN_CONNS[$key]}" "${NOTE[$server]:-}"
    done
done
printf '(CPU %%: user + system time of the process and its children during the row, 100 = one core.\n'
printf ' origin conns: connections the origin accepted during the row; a proxy that reuses its upstream\n'
printf ' connections opens about as many as it keeps (here %s per worker), not one per request.\n' "$KEEPALIVE"
printf ' Other load on the machine (see the load average) makes every row slower; compare rows of one run.)\n'

ratio() { # ratio A B -> A/B as N.NNx, or n/a
    awk -v a="$1" -v b="$2" 'BEGIN{
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "n/a"; exit }
        printf "%.2fx", a / b }'
}
compare() { # compare A B
    local a=$1 b=$2 mode
    printf '\n== %s / %s\n' "$a" "$b"
    for mode in $MODES; do
        printf '%-10s req/s %8s vs %-8s -> %-7s p99 %8s vs %-8s ms -> %-7s CPU/req %6s vs %-6s -> %s\n' "$mode:" \
            "${R_RPS[$a/$mode]:-?}" "${R_RPS[$b/$mode]:-?}" "$(ratio "${R_RPS[$a/$mode]:-?}" "${R_RPS[$b/$mode]:-?}")" \
            "${R_P99[$a/$mode]:-?}" "${R_P99[$b/$mode]:-?}" "$(ratio "${R_P99[$a/$mode]:-?}" "${R_P99[$b/$mode]:-?}")" \
            "${R_CPU100K[$a/$mode]:-?}" "${R_CPU100K[$b/$mode]:-?}" \
            "$(ratio "${R_CPU100K[$a/$mode]:-?}" "${R_CPU100K[$b/$mode]:-?}")"
    done
}
compare gatewayd nginx
((WITH_HAPROXY)) && compare haproxy nginx
[[ -n $RESULTS_DIR ]] && printf '\nraw output (wrk, configs, logs): %s\n' "$RESULTS_DIR"

status=0
for server in $SERVERS; do
    if [[ -n ${NOTE[$server]:-} ]]; then
        warn "$server: ${NOTE[$server]}"
        status=1
    fi
done
exit "$status"
