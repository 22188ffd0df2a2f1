#!/usr/bin/env bash
# The report's printf formats are constants kept in variables (fmt, lfmt, mfmt), never input:
# shellcheck disable=SC2059
# reload-under-load.sh: gatewayd and nginx 1.22, side by side, on the same machine, the same way.
#
#   1. wrk load (keep-alive, then "Connection: close") while the config is rewritten and the
#      master gets SIGHUP every INTERVAL seconds: requests, non-2xx, socket errors.
#   2. Reload latency, idle: SIGHUP sent -> first response carrying the new config's body; then
#      the switch window: old-body answers still arriving after that first new-body one.
#   3. RSS of the master and of each worker after the load runs.
#
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
# See benchmarks/README.md for the knobs. Usage: benchmarks/reload-under-load.sh
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------- knobs
DURATION=${DURATION:-20}                 # seconds of wrk per (server, mode)
INTERVAL=${INTERVAL:-0.5}                # seconds between two SIGHUPs under load
THREADS=${THREADS:-2}                    # wrk -t
CONNECTIONS=${CONNECTIONS:-64}           # wrk -c
WORKERS=${WORKERS:-2}                    # worker processes, both servers
LATENCY_RELOADS=${LATENCY_RELOADS:-10}   # idle reloads timed per server
LATENCY_GAP=${LATENCY_GAP:-1}            # seconds of quiet between two timed reloads
LATENCY_TIMEOUT=${LATENCY_TIMEOUT:-15}   # give up on one timed reload after this many seconds
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30s}      # gatewayd drain_timeout (nginx: none, as shipped)
READY_TIMEOUT=${READY_TIMEOUT:-30}       # seconds to wait for a server to answer after start
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-40}     # seconds to wait for old workers to be gone after a run
SERVERS=${SERVERS:-"gatewayd nginx"}     # which servers to run (e.g. SERVERS=nginx)
MODES=${MODES:-"keepalive close"}        # which wrk modes to run
GATEWAYD_LOG_LEVEL=${GATEWAYD_LOG_LEVEL:-info}
KEEP_TMP=${KEEP_TMP:-0}                  # 1: keep the temp dir (configs, logs, wrk output)

RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/reload-under-load-$(date -u +%Y%m%dT%H%M%SZ)}

is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_number "$DURATION" || die "DURATION must be a number of seconds, got '$DURATION'"
is_number "$INTERVAL" || die "INTERVAL must be a number of seconds, got '$INTERVAL'"
is_number "$LATENCY_GAP" || die "LATENCY_GAP must be a number of seconds, got '$LATENCY_GAP'"
for v in THREADS CONNECTIONS WORKERS LATENCY_RELOADS LATENCY_TIMEOUT READY_TIMEOUT SETTLE_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
INTERVAL_US=$(awk -v s="$INTERVAL" 'BEGIN{printf "%d", s * 1000000}')
((INTERVAL_US >= 10000)) || die "INTERVAL must be at least 0.01 s"
for s in $SERVERS; do [[ $s == gatewayd || $s == nginx ]] || die "SERVERS: unknown server '$s' (gatewayd, nginx)"; done
for m in $MODES; do [[ $m == keepalive || $m == close ]] || die "MODES: unknown mode '$m' (keepalive, close)"; done
wants() { [[ " $SERVERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------- state and cleanup
GW_PID=""
NGINX_PID=""
WRK_PID=""
stop_master() { stop_process "$@"; }   # stop_master PID SIGNAL SECONDS (lib.sh)

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null; fi
    [[ -n $GW_PID ]] && stop_master "$GW_PID" TERM 10
    [[ -n $NGINX_PID ]] && stop_master "$NGINX_PID" TERM 10
    sleep 0.2
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- packages and build
PACKAGES=(curl:curl python3:python3 ps:procps wrk:wrk)
if wants nginx; then PACKAGES+=(nginx:nginx); fi
ensure_packages "${PACKAGES[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PYTHON=$(command -v python3)

# Built the Makefile's way (static release, its build dependencies installed by make), in a
# scratch path of its own.
if wants gatewayd && [[ -z ${GATEWAYD_BIN:-} || -z ${GATEWAYCTL_BIN:-} ]]; then
    build_gatewayd "$REPO_ROOT/.build-bench"
fi
if wants gatewayd; then
    [[ -x $GATEWAYD_BIN ]] || die "GATEWAYD_BIN=$GATEWAYD_BIN is not an executable"
    [[ -x $GATEWAYCTL_BIN ]] || die "GATEWAYCTL_BIN=$GATEWAYCTL_BIN is not an executable"
fi
if wants nginx; then
    [[ -x $NGINX ]] || die "nginx not found"
fi

TMP=$(mktemp -d /tmp/reload-under-load.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/gatewayd" "$TMP/nginx"

# ---------------------------------------------------------------------------- ports
[[ -n ${PORT_GATEWAYD:-} ]] && PORTS_TAKEN+="$PORT_GATEWAYD "
[[ -n ${PORT_GATEWAYD:-} ]] || pick_port PORT_GATEWAYD 18080
[[ -n ${PORT_NGINX:-} ]] || pick_port PORT_NGINX 18081
[[ $PORT_GATEWAYD != "$PORT_NGINX" ]] || die "PORT_GATEWAYD and PORT_NGINX must differ"

# ---------------------------------------------------------------------------- configs
# Each server has a template with @BODY@; the load runs alternate between body A and body B,
# the latency helper writes a fresh body per reload. Bodies are short, single line, ASCII.
BODY_A="hello A"
BODY_B="hello B"

cat >"$TMP/gatewayd/template.yaml" <<EOF
workers: $WORKERS
drain_timeout: $DRAIN_TIMEOUT
ready_timeout: 10s
max_draining_generations: 4
listeners:
  - name: web
    address: 127.0.0.1:$PORT_GATEWAYD
    backlog: 4096
routes:
  - name: hello
    match: { path_prefix: / }
    direct_response:
      status: 200
      headers: { content-type: text/plain }
      body: "@BODY@\n"
EOF

# Temp paths inside the temp dir (the compiled-in ones are under /var/lib/nginx), for every
# module this nginx has.
temp_paths=""
if wants nginx; then temp_paths=$(nginx_temp_paths "$NGINX" "$TMP/nginx"); fi
cat >"$TMP/nginx/template.conf" <<EOF
worker_processes $WORKERS;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
$temp_paths
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location / { return 200 "@BODY@\n"; }
    }
}
EOF

for s in gatewayd nginx; do
    ext=yaml; [[ $s == nginx ]] && ext=conf
    sed "s/@BODY@/$BODY_A/" "$TMP/$s/template.$ext" >"$TMP/$s/a.$ext"
    sed "s/@BODY@/$BODY_B/" "$TMP/$s/template.$ext" >"$TMP/$s/b.$ext"
    cp "$TMP/$s/a.$ext" "$TMP/$s/config.$ext"
done
GW_CONF=$TMP/gatewayd/config.yaml
NGINX_CONF=$TMP/nginx/config.conf

# ---------------------------------------------------------------------------- helpers
url_of() { if [[ $1 == gatewayd ]]; then echo "http://127.0.0.1:$PORT_GATEWAYD/"; else echo "http://127.0.0.1:$PORT_NGINX/"; fi; }
pid_of() { if [[ $1 == gatewayd ]]; then echo "$GW_PID"; else echo "$NGINX_PID"; fi; }
conf_of() { if [[ $1 == gatewayd ]]; then echo "$GW_CONF"; else echo "$NGINX_CONF"; fi; }
log_of() { if [[ $1 == gatewayd ]]; then echo "$TMP/gatewayd/gatewayd.log"; else echo "$TMP/nginx/error.log"; fi; }

body_now() { curl -sS --max-time 2 -H 'Connection: close' "$(url_of "$1")" 2>/dev/null || true; }

# wait_server_body SERVER EXPECTED SECONDS: poll with curl until the answer is EXPECTED (a 200);
# 2 when the server's master is gone.
wait_server_body() { wait_body "$(url_of "$1")" "$2" "$3" "$(pid_of "$1")"; }

log_tail() {
    local f
    f=$(log_of "$1")
    printf -- '---- last lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2 2>/dev/null || true
    printf -- '----\n' >&2
}

# Number of applied reloads so far, as the server itself tells it.
applied_reloads() {
    if [[ $1 == gatewayd ]]; then
        "$GATEWAYCTL_BIN" status --json --socket "$TMP/gatewayd/control.sock" 2>/dev/null |
            "$PYTHON" -c 'import json,sys
d = json.load(sys.stdin); d = d.get("status", d)
print(d.get("reloads", "?"))' 2>/dev/null || echo "?"
    else
        local n
        n=$(grep -cE ': reconfiguring$' "$TMP/nginx/error.log" 2>/dev/null || true)
        echo "${n:-0}"
    fi
}

# install_config SERVER SRC: atomically replace the live config file with SRC.
install_config() {
    local conf
    conf=$(conf_of "$1")
    cp "$2" "$conf.tmp"
    mv -f "$conf.tmp" "$conf"
}

start_server() {
    local server=$1 rc=0
    if [[ $server == gatewayd ]]; then
        log "starting gatewayd ($WORKERS workers) on 127.0.0.1:$PORT_GATEWAYD"
        install_config gatewayd "$TMP/gatewayd/a.yaml"
        "$GATEWAYD_BIN" --config "$GW_CONF" --control-socket "$TMP/gatewayd/control.sock" \
            --workers "$WORKERS" --pid-file "$TMP/gatewayd/gatewayd.pid" \
            --log-level "$GATEWAYD_LOG_LEVEL" </dev/null >"$TMP/gatewayd/stdout.log" 2>"$TMP/gatewayd/gatewayd.log" &
        GW_PID=$!
    else
        log "starting nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') ($WORKERS workers) on 127.0.0.1:$PORT_NGINX"
        install_config nginx "$TMP/nginx/a.conf"
        "$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$NGINX_CONF" 2>"$TMP/nginx/configtest.log" || {
            cat "$TMP/nginx/configtest.log" >&2
            die "nginx rejected its config $NGINX_CONF"
        }
        "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$NGINX_CONF" </dev/null >"$TMP/nginx/stdout.log" 2>"$TMP/nginx/stderr.log" &
        NGINX_PID=$!
    fi
    wait_server_body "$server" "$BODY_A" "$READY_TIMEOUT" || rc=$?
    if ((rc == 2)); then
        log_tail "$server"; die "$server exited during startup"
    elif ((rc != 0)); then
        log_tail "$server"; die "$server did not answer '$BODY_A' on $(url_of "$server") within ${READY_TIMEOUT}s"
    fi
    # Every worker up: as many children as WORKERS.
    local pid i
    pid=$(pid_of "$server")
    for ((i = 0; i < READY_TIMEOUT * 20; i++)); do
        (($(children_of "$pid" | wc -l) >= WORKERS)) && break
        sleep 0.05
    done
    remember_children "$pid"
    log "$server ready: master pid $pid, workers $(children_of "$pid" | tr '\n' ' ')"
}

# settle SERVER EXPECTED_BODY: wait until the old workers are gone and the last config serves.
settle() {
    local server=$1 expected=$2 pid n start=$SECONDS
    pid=$(pid_of "$server")
    wait_server_body "$server" "$expected" "$SETTLE_TIMEOUT" || {
        warn "$server: not answering '$expected' ${SETTLE_TIMEOUT}s after the last reload (got '$(body_now "$server" | head -c 60)')"
    }
    while ((SECONDS - start < SETTLE_TIMEOUT)); do
        alive "$pid" || return 1
        remember_children "$pid"
        n=$(serving_workers "$server")
        ((n <= WORKERS)) && return 0
        sleep 0.2
    done
    warn "$server: still $(serving_workers "$server") worker processes ${SETTLE_TIMEOUT}s after the last reload (expected $WORKERS)"
}

# serving_workers SERVER: worker processes of every generation. gatewayd's pre-started spare
# workers are its children too but belong to no generation: counted from its status, they
# would make settle wait its whole timeout after every run.
serving_workers() {
    if [[ $1 == gatewayd ]]; then
        "$GATEWAYCTL_BIN" status --json --socket "$TMP/gatewayd/control.sock" 2>/dev/null |
            "$PYTHON" -c 'import json,sys
d = json.load(sys.stdin)
print(sum(len(g["workers"]) for g in d["generations"]))' 2>/dev/null || echo 999
    else
        children_of "$(pid_of "$1")" | wc -l
    fi
}

# ---------------------------------------------------------------------------- load runs
declare -A R_SENT R_APPLIED R_REQS R_RPS R_NON2XX R_CONNECT R_READ R_WRITE R_TIMEOUT R_FAILED R_P99 R_PEAKPROCS R_NOTE
declare -A M_MASTER M_WORKERS M_TOTAL M_NWORKERS M_PSS
declare -A L_MEDIAN L_P90 L_MAX L_MIN L_ERRORS L_POLLS L_NOTE L_TAIL
declare -A S_STALE S_WMEDIAN S_WMAX S_NOTE   # switch window (same idle reloads as L_*)
declare -A DIED

run_load() {
    local server=$1 mode=$2 pid out n=0 peak=0 c before after last=$BODY_A src
    pid=$(pid_of "$server")
    out="$TMP/$server/wrk-$mode.txt"
    local hdr=()
    [[ $mode == close ]] && hdr=(-H "Connection: close")
    before=$(applied_reloads "$server")
    log "$server, $mode: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency ${hdr[*]:-}, SIGHUP every ${INTERVAL}s"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "$(url_of "$server")" >"$out" 2>&1 &
    WRK_PID=$!
    # SIGHUP k is due at start + k * INTERVAL (no drift from the work done between two).
    local start_us next_us now_us wait_us
    start_us=${EPOCHREALTIME/./}
    next_us=$((start_us + INTERVAL_US))
    while :; do
        now_us=${EPOCHREALTIME/./}
        wait_us=$((next_us - now_us))
        ((wait_us > 0)) && sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
        next_us=$((next_us + INTERVAL_US))
        alive "$WRK_PID" || break
        if ((n % 2 == 0)); then src=b; last=$BODY_B; else src=a; last=$BODY_A; fi
        if [[ $server == gatewayd ]]; then install_config gatewayd "$TMP/gatewayd/$src.yaml"; else install_config nginx "$TMP/nginx/$src.conf"; fi
        if ! kill -HUP "$pid" 2>/dev/null; then
            warn "$server master (pid $pid) is gone during the load run"
            break
        fi
        n=$((n + 1))
        remember_children "$pid"
        c=$(children_of "$pid" | wc -l)
        ((c > peak)) && peak=$c
    done
    wait "$WRK_PID" || warn "wrk exited with status $? (output: $out)"
    WRK_PID=""
    local key="$server/$mode"
    R_SENT[$key]=$n
    R_PEAKPROCS[$key]=$peak
    if ! alive "$pid"; then
        R_NOTE[$key]="MASTER DIED"
        DIED[$server]=1
        log_tail "$server"
        warn "$server master (pid $pid) died during the $mode load run"
    else
        settle "$server" "$last" || true
        after=$(applied_reloads "$server")
        if [[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]]; then R_APPLIED[$key]=$((after - before)); else R_APPLIED[$key]="?"; fi
    fi
    # wrk output
    R_REQS[$key]=$(awk '/ requests in /{print $1}' "$out")
    R_RPS[$key]=$(awk '/^Requests\/sec:/{printf "%.0f", $2}' "$out")
    R_NON2XX[$key]=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    local se
    se=$(grep 'Socket errors:' "$out" || true)
    R_CONNECT[$key]=$(sed -n 's/.*connect \([0-9]*\).*/\1/p' <<<"$se")
    R_READ[$key]=$(sed -n 's/.*read \([0-9]*\).*/\1/p' <<<"$se")
    R_WRITE[$key]=$(sed -n 's/.*write \([0-9]*\).*/\1/p' <<<"$se")
    R_TIMEOUT[$key]=$(sed -n 's/.*timeout \([0-9]*\).*/\1/p' <<<"$se")
    R_P99[$key]=$(awk '$1 == "99%" {print $2}' "$out")
    if [[ -z ${R_REQS[$key]} || -z ${R_RPS[$key]} ]]; then
        warn "could not parse the wrk output $out:"
        cat "$out" >&2
        : "${R_REQS[$key]:=?}" "${R_RPS[$key]:=?}"
    fi
    : "${R_NON2XX[$key]:=0}" "${R_CONNECT[$key]:=0}" "${R_READ[$key]:=0}" "${R_WRITE[$key]:=0}" "${R_TIMEOUT[$key]:=0}" "${R_P99[$key]:=?}"
    R_FAILED[$key]=$((R_NON2XX[$key] + R_CONNECT[$key] + R_READ[$key] + R_WRITE[$key] + R_TIMEOUT[$key]))
    log "$server, $mode: ${R_REQS[$key]} requests, ${R_FAILED[$key]} failed, $n SIGHUPs sent, ${R_APPLIED[$key]:-?} reloads applied"
}

# ---------------------------------------------------------------------------- memory
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Pss charges a page shared by n processes 1/n to each: the sum over a server's processes is
# what they cost together, where the RSS sum counts shared text (the binary) once per process.
pss_kb() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

measure_memory() {
    local server=$1 pid w kb total pss workers_txt="" nw=0
    pid=$(pid_of "$server")
    alive "$pid" || return 0
    kb=$(rss_kb "$pid")
    total=$kb
    pss=$(pss_kb "$pid")
    M_MASTER[$server]=$(mb "$kb")
    for w in $(children_of "$pid"); do
        kb=$(rss_kb "$w")
        total=$((total + kb))
        pss=$((pss + $(pss_kb "$w")))
        workers_txt+="$(mb "$kb") "
        nw=$((nw + 1))
    done
    M_WORKERS[$server]=${workers_txt% }
    M_NWORKERS[$server]=$nw
    M_TOTAL[$server]=$(mb "$total")
    M_PSS[$server]=$(mb "$pss")
}

# ---------------------------------------------------------------------------- reload latency
cat >"$TMP/reload_latency.py" <<'EOF'
"""SIGHUP sent -> first response with the new config's body, over fresh connections.

Usage: reload_latency.py PID PORT CONFIG TEMPLATE COUNT GAP TIMEOUT LABEL
Rewrites CONFIG from TEMPLATE (@BODY@ -> a new body), sends SIGHUP itself right after, then
polls GET / on 127.0.0.1:PORT with a new connection per request and no pause between polls.
Switch window: after the first response with the new body, it keeps polling the same way for
SWITCH_TAIL_S more and counts the responses that still carry the old body (the body served just
before the SIGHUP), and the time from the first new-body response to the last old-body one.
Prints one JSON object with the latencies in milliseconds.
"""
import json, os, signal, socket, statistics, sys, time

# How long to keep polling after the first new-body response. Long enough to see nginx's old
# workers still accepting new connections after its switch (a feasibility run measured about
# 100 ms), so that a window of that size is caught whole.
SWITCH_TAIL_S = 0.3

pid, port = int(sys.argv[1]), int(sys.argv[2])
config, template_path = sys.argv[3], sys.argv[4]
count, gap, timeout, label = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), sys.argv[8]
template = open(template_path).read()
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def fetch():
    """One request on a new connection; returns (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while length is None or len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                if length is None:
                    break
                raise ConnectionError("closed before the end of the body")
            body += chunk
        return status, body
    finally:
        s.close()


def current_body():
    """The body served now (before the first timed reload), or None if no 200 answer comes."""
    for _ in range(20):
        try:
            status, body = fetch()
            if status == 200:
                return body
        except (OSError, ConnectionError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    return None


latencies, polls, errors, stale = [], 0, 0, 0
error_kinds = {}
# Switch window, per reload: old-body answers after the first new-body one, and the time from
# that first new-body answer to the last old-body answer (0 if none). "Other" answers after the
# switch (neither body, or not a 200) and connection errors during the tail are kept apart.
stale_after, windows, tail_polls, tail_other, tail_errors = [], [], 0, 0, 0
tail_error_kinds = {}
old = current_body()
for i in range(count):
    token = "hello L%d-%d" % (i, os.getpid())
    expected = (token + "\n").encode()
    tmp = config + ".latency.tmp"
    with open(tmp, "w") as f:
        f.write(template.replace("@BODY@", token))
    os.replace(tmp, config)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    while True:
        now = time.monotonic()
        if now - t0 > timeout:
            print(json.dumps({"label": label, "error": "reload %d: no response with the new body after %.0f s" % (i + 1, timeout),
                              "latencies_ms": latencies, "errors": errors, "error_kinds": error_kinds,
                              "stale_after_switch_per_reload": stale_after, "switch_windows_ms": windows}))
            sys.exit(1)
        try:
            status, body = fetch()
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            errors += 1
            kind = type(e).__name__
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
            continue
        polls += 1
        if status == 200 and body == expected:
            t_new = time.monotonic()
            latencies.append((t_new - t0) * 1000.0)
            break
        stale += 1
    # Switch window: same polling (fresh connection, no pause) for SWITCH_TAIL_S after t_new.
    # Polls run one at a time, so each one here connected after the first new-body answer.
    n_old, t_last_old = 0, None
    while time.monotonic() - t_new < SWITCH_TAIL_S:
        try:
            status, body = fetch()
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            tail_errors += 1
            kind = type(e).__name__
            tail_error_kinds[kind] = tail_error_kinds.get(kind, 0) + 1
            continue
        tail_polls += 1
        if status == 200 and old is not None and body == old:
            n_old += 1
            t_last_old = time.monotonic()
        elif not (status == 200 and body == expected):
            tail_other += 1
    stale_after.append(n_old)
    windows.append((t_last_old - t_new) * 1000.0 if t_last_old is not None else 0.0)
    old = expected
    time.sleep(gap)

ordered = sorted(latencies)
p90 = ordered[max(0, -(-9 * len(ordered) // 10) - 1)]
print(json.dumps({
    "label": label, "reloads": len(latencies),
    "median_ms": statistics.median(ordered), "p90_ms": p90, "max_ms": ordered[-1], "min_ms": ordered[0],
    "polls": polls, "stale_responses": stale, "poll_errors": errors, "error_kinds": error_kinds,
    "latencies_ms": [round(x, 2) for x in latencies],
    "switch_tail_ms": SWITCH_TAIL_S * 1000.0, "stale_after_switch": sum(stale_after),
    "stale_after_switch_per_reload": stale_after,
    "switch_window_median_ms": statistics.median(windows), "switch_window_max_ms": max(windows),
    "switch_windows_ms": [round(x, 2) for x in windows],
    "tail_polls": tail_polls, "tail_other": tail_other, "tail_errors": tail_errors, "tail_error_kinds": tail_error_kinds,
}))
EOF

measure_latency() {
    local server=$1 pid port template out rc=0
    pid=$(pid_of "$server")
    if [[ $server == gatewayd ]]; then port=$PORT_GATEWAYD; template="$TMP/gatewayd/template.yaml"; else port=$PORT_NGINX; template="$TMP/nginx/template.conf"; fi
    log "$server: reload latency, $LATENCY_RELOADS idle reloads (SIGHUP -> first response with the new body, then the switch window)"
    out="$TMP/$server/latency.json"
    "$PYTHON" "$TMP/reload_latency.py" "$pid" "$port" "$(conf_of "$server")" "$template" \
        "$LATENCY_RELOADS" "$LATENCY_GAP" "$LATENCY_TIMEOUT" "$server" >"$out" || rc=$?
    eval "$("$PYTHON" - "$out" "$server" <<'EOF'
import json, shlex, sys
server = sys.argv[2]
try:
    d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception as e:
    d = {"error": "no result (%s)" % e}
def put(name, value):
    print("%s[%s]=%s" % (name, server, shlex.quote(str(value))))
if "error" in d:
    put("L_NOTE", d["error"])
else:
    for k, n in (("median_ms", "L_MEDIAN"), ("p90_ms", "L_P90"), ("max_ms", "L_MAX"), ("min_ms", "L_MIN")):
        put(n, "%.1f" % d[k])
    put("L_POLLS", d["polls"])
    put("L_ERRORS", d["poll_errors"])
    put("L_NOTE", "%d stale responses; errors %s" % (d["stale_responses"], d["error_kinds"] or "none"))
    put("L_TAIL", "%.0f" % d["switch_tail_ms"])
    put("S_STALE", d["stale_after_switch"])
    put("S_WMEDIAN", "%.1f" % d["switch_window_median_ms"])
    put("S_WMAX", "%.1f" % d["switch_window_max_ms"])
    if d["tail_other"] or d["tail_errors"]:
        put("S_NOTE", "after the switch: %d other answers, errors %s" % (d["tail_other"], d["tail_error_kinds"] or "none"))
EOF
)"
    if ((rc != 0)); then warn "$server: reload latency run failed: ${L_NOTE[$server]:-}"; fi
    alive "$pid" || { DIED[$server]=1; log_tail "$server"; warn "$server master died during the latency run"; }
}

# ---------------------------------------------------------------------------- run
log "ports: gatewayd 127.0.0.1:$PORT_GATEWAYD, nginx 127.0.0.1:$PORT_NGINX; temp dir $TMP"
for server in $SERVERS; do
    start_server "$server"
    for mode in $MODES; do
        [[ -n ${DIED[$server]:-} ]] && break
        run_load "$server" "$mode"
    done
    if [[ -z ${DIED[$server]:-} ]]; then
        measure_memory "$server"
        measure_latency "$server"
    fi
    if [[ $server == gatewayd ]]; then
        log "stopping gatewayd"
        stop_master "$GW_PID" TERM 15
        GW_PID=""
    else
        log "stopping nginx"
        stop_master "$NGINX_PID" QUIT 15
        NGINX_PID=""
    fi
done

# ---------------------------------------------------------------------------- report
printf '\n'
printf 'reload-under-load: %s, %s s of wrk -t%s -c%s per row, SIGHUP every %s s, %s workers each\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$DURATION" "$THREADS" "$CONNECTIONS" "$INTERVAL" "$WORKERS"
if wants gatewayd; then printf 'gatewayd: %s\n' "$GATEWAYD_BIN"; fi
if wants nginx; then printf 'nginx:    %s (%s)\n' "$NGINX" "$("$NGINX" -v 2>&1)"; fi
printf 'machine:  %s cores, %s\n' "$(nproc)" "$(uname -sr)"
printf '\n== Load with reloads (config rewritten + SIGHUP every %s s)\n' "$INTERVAL"
fmt='%-9s %-10s %9s %10s %9s %8s %22s %8s %9s %6s  %s\n'
printf "$fmt" server mode "reloads" requests "req/s" "non-2xx" "socket errors c/r/w/t" "failed" "p99" "procs" ""
printf "$fmt" "" "" "sent/appl" "" "" "or 3xx" "" "total" "latency" "peak" ""
for server in $SERVERS; do
    for mode in $MODES; do
        key="$server/$mode"
        [[ -n ${R_SENT[$key]:-} ]] || continue
        printf "$fmt" "$server" "$mode" "${R_SENT[$key]}/${R_APPLIED[$key]:-?}" "${R_REQS[$key]}" "${R_RPS[$key]}" \
            "${R_NON2XX[$key]}" "${R_CONNECT[$key]}/${R_READ[$key]}/${R_WRITE[$key]}/${R_TIMEOUT[$key]}" \
            "${R_FAILED[$key]}" "${R_P99[$key]}" "${R_PEAKPROCS[$key]}" "${R_NOTE[$key]:-}"
    done
done
printf '(sent: SIGHUPs sent; appl: reloads the server reports as done (gatewayd: status "reloads", merged when they overlap;\n'
printf ' nginx: "reconfiguring" lines in its error log). procs peak: most worker processes seen at once.)\n'

printf '\n== Reload latency, idle: SIGHUP sent -> first response with the new body (%s reloads, fresh connection per poll)\n' "$LATENCY_RELOADS"
lfmt='%-9s %10s %10s %10s %10s %8s %12s %13s %12s %12s  %s\n'
printf "$lfmt" server "median ms" "p90 ms" "max ms" "min ms" polls "poll errors" "stale after" "switch" "switch" ""
printf "$lfmt" "" "" "" "" "" "" "" "1st new" "win med ms" "win max ms" ""
tail_ms=""
for server in $SERVERS; do
    note=${L_NOTE[$server]:-}
    [[ -n ${S_NOTE[$server]:-} ]] && note+="; ${S_NOTE[$server]}"
    printf "$lfmt" "$server" "${L_MEDIAN[$server]:--}" "${L_P90[$server]:--}" "${L_MAX[$server]:--}" "${L_MIN[$server]:--}" \
        "${L_POLLS[$server]:--}" "${L_ERRORS[$server]:--}" "${S_STALE[$server]:--}" "${S_WMEDIAN[$server]:--}" \
        "${S_WMAX[$server]:--}" "$note"
    tail_ms=${tail_ms:-${L_TAIL[$server]:-}}
done
printf '(polls, poll errors and the stale responses in the note: until the first new-body answer. stale after 1st new:\n'
printf ' old-body answers, summed over the reloads, while polling on for %s ms after the first new-body answer;\n' "${tail_ms:-?}"
printf ' switch win: first new-body answer -> last old-body answer, per reload, 0 if none.'
if wants gatewayd; then printf '\n gatewayd gets SIGHUP, which is asynchronous: a few stale answers are possible, see benchmarks/README.md.'; fi
printf ')\n'

printf '\n== Memory after the load runs (VmRSS per process and in all; PSS in all, MB)\n'
mfmt='%-9s %8s %-26s %10s %10s\n'
printf "$mfmt" server master "workers" total "PSS total"
for server in $SERVERS; do
    printf "$mfmt" "$server" "${M_MASTER[$server]:--}" "${M_NWORKERS[$server]:-0}: ${M_WORKERS[$server]:--}" "${M_TOTAL[$server]:--}" "${M_PSS[$server]:--}"
done

ratio() { # ratio A B -> "A/B" as "N.NNx", or a word when B is 0 or unknown
    awk -v a="$1" -v b="$2" 'BEGIN{
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) { print "n/a"; exit }
        if (b + 0 == 0) { print (a + 0 == 0) ? "both 0" : "nginx 0"; exit }
        printf "%.2fx", a / b }'
}
if wants gatewayd && wants nginx; then
    printf '\n== gatewayd / nginx\n'
    for mode in $MODES; do
        printf 'failed requests, %-10s %8s vs %-8s -> %s\n' "$mode:" "${R_FAILED[gatewayd/$mode]:-?}" "${R_FAILED[nginx/$mode]:-?}" \
            "$(ratio "${R_FAILED[gatewayd/$mode]:-?}" "${R_FAILED[nginx/$mode]:-?}")"
        printf 'req/s,           %-10s %8s vs %-8s -> %s\n' "$mode:" "${R_RPS[gatewayd/$mode]:-?}" "${R_RPS[nginx/$mode]:-?}" \
            "$(ratio "${R_RPS[gatewayd/$mode]:-?}" "${R_RPS[nginx/$mode]:-?}")"
    done
    printf 'reload latency median:       %8s vs %-8s -> %s\n' "${L_MEDIAN[gatewayd]:-?}" "${L_MEDIAN[nginx]:-?}" \
        "$(ratio "${L_MEDIAN[gatewayd]:-?}" "${L_MEDIAN[nginx]:-?}")"
    printf 'stale answers after the first new one: %8s vs %-8s -> %s\n' "${S_STALE[gatewayd]:-?}" "${S_STALE[nginx]:-?}" \
        "$(ratio "${S_STALE[gatewayd]:-?}" "${S_STALE[nginx]:-?}")"
    printf 'RSS master (MB):             %8s vs %-8s -> %s\n' "${M_MASTER[gatewayd]:-?}" "${M_MASTER[nginx]:-?}" \
        "$(ratio "${M_MASTER[gatewayd]:-?}" "${M_MASTER[nginx]:-?}")"
    printf 'RSS total (MB):              %8s vs %-8s -> %s\n' "${M_TOTAL[gatewayd]:-?}" "${M_TOTAL[nginx]:-?}" \
        "$(ratio "${M_TOTAL[gatewayd]:-?}" "${M_TOTAL[nginx]:-?}")"
    printf 'PSS total (MB):              %8s vs %-8s -> %s\n' "${M_PSS[gatewayd]:-?}" "${M_PSS[nginx]:-?}" \
        "$(ratio "${M_PSS[gatewayd]:-?}" "${M_PSS[nginx]:-?}")"
fi

if wants gatewayd; then
    f="$TMP/gatewayd/gatewayd.log"
    nwarn=$(grep -cE ' (warning|error|critical) ' "$f" 2>/dev/null || true)
    printf '\n== gatewayd log: %s warning/error/critical lines' "${nwarn:-0}"
    if ((${nwarn:-0} > 0)); then
        printf ' (first 20):\n'
        grep -E ' (warning|error|critical) ' "$f" | head -n 20
    else
        printf '\n'
    fi
fi
if wants nginx; then
    f="$TMP/nginx/error.log"
    nwarn=$(grep -cE '\[(warn|error|crit|alert|emerg)\]' "$f" 2>/dev/null || true)
    printf '\n== nginx error log: %s warn/error lines' "${nwarn:-0}"
    if ((${nwarn:-0} > 0)); then
        printf ' (first 10):\n'
        grep -E '\[(warn|error|crit|alert|emerg)\]' "$f" | head -n 10
    else
        printf '\n'
    fi
fi
[[ -n $RESULTS_DIR ]] && printf '\nraw output (wrk, logs, configs): %s\n' "$RESULTS_DIR"

status=0
for server in $SERVERS; do
    if [[ -n ${DIED[$server]:-} ]]; then
        warn "$server died during the benchmark (its log is in ${RESULTS_DIR:-the temp dir})"
        status=1
    fi
done
exit "$status"
