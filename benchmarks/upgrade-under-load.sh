#!/usr/bin/env bash
# The report's printf format is a constant kept in a variable (fmt), never input:
# shellcheck disable=SC2059
# upgrade-under-load.sh: replacing the running binary under load, gatewayd and nginx 1.22 side
# by side, on the same machine, the same way.
#
#   gatewayd: `gatewayctl upgrade` (one command: the new master takes over, the old one drains
#             and exits).
#   nginx:    the documented sequence (nginx.org/en/docs/control.html#upgrade): USR2 to the
#             master (a new master starts beside it, both sets of workers accept), then, once
#             the new master's workers run, WINCH to the old master (its workers shut down
#             gracefully), then, once they are gone, QUIT to the old master.
#
# For each server and each mode (keep-alive, then "Connection: close"), a fresh server, wrk
# for DURATION seconds, and the upgrade WARMUP seconds into the load. Reported: requests,
# failed requests (non-2xx plus socket errors), and the times, from the first command: until
# the upgrade command returned (gatewayctl; nginx's kill returns at once), until the new master
# served, until the old master and its workers were gone.
#
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
# Usage: benchmarks/upgrade-under-load.sh (GATEWAYD_BIN/GATEWAYCTL_BIN: the binaries to use;
# else it builds with `make release`). See benchmarks/README.md.
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------- knobs
DURATION=${DURATION:-10}              # seconds of wrk per (server, mode)
WARMUP=${WARMUP:-2}                   # seconds of load before the upgrade begins
THREADS=${THREADS:-2}                 # wrk -t
CONNECTIONS=${CONNECTIONS:-64}        # wrk -c
WORKERS=${WORKERS:-2}                 # worker processes, both servers
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30s}   # gatewayd drain_timeout (nginx: none, as shipped)
STEP_TIMEOUT=${STEP_TIMEOUT:-40}      # seconds to wait for any one step before giving up
GATEWAYD_LOG_LEVEL=${GATEWAYD_LOG_LEVEL:-info}
SERVERS=${SERVERS:-"gatewayd nginx"}
MODES=${MODES:-"keepalive close"}
KEEP_TMP=${KEEP_TMP:-0}
RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/upgrade-under-load-$(date -u +%Y%m%dT%H%M%SZ)}

for v in DURATION WARMUP THREADS CONNECTIONS WORKERS STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
((WARMUP + 3 < DURATION)) || die "DURATION must leave at least 3 s of load after WARMUP"
for s in $SERVERS; do [[ $s == gatewayd || $s == nginx ]] || die "SERVERS: unknown server '$s'"; done
for m in $MODES; do [[ $m == keepalive || $m == close ]] || die "MODES: unknown mode '$m'"; done
wants() { [[ " $SERVERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------- cleanup
WRK_PID=""
SERVER_PID=""
# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null; fi
    [[ -n $SERVER_PID ]] && stop_process "$SERVER_PID" TERM 10
    sleep 0.2
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PACKAGES=(curl:curl python3:python3 ps:procps wrk:wrk)
if wants nginx; then PACKAGES+=(nginx:nginx); fi
ensure_packages "${PACKAGES[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if wants gatewayd && [[ -z ${GATEWAYD_BIN:-} || -z ${GATEWAYCTL_BIN:-} ]]; then
    build_gatewayd "$REPO_ROOT/.build-bench"
fi

TMP=$(mktemp -d /tmp/upgrade-under-load.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/gatewayd" "$TMP/nginx"
pick_port PORT_GATEWAYD 18090
pick_port PORT_NGINX 18091

cat >"$TMP/gatewayd/config.yaml" <<EOF
workers: $WORKERS
drain_timeout: $DRAIN_TIMEOUT
listeners:
  - { name: web, address: "127.0.0.1:$PORT_GATEWAYD", backlog: 4096 }
routes:
  - name: hello
    match: { path_prefix: / }
    direct_response: { status: 200, headers: { content-type: text/plain }, body: "hello\n" }
EOF
temp_paths=""
if wants nginx; then temp_paths=$(nginx_temp_paths "$NGINX" "$TMP/nginx"); fi
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
# As Debian's nginx.service runs it (Type=forking): nginx ignores USR2 in a master whose parent
# is the one it started with, which is always so with "daemon off" ("the changing binary
# signal is ignored"), so its upgrade needs a daemon.
daemon on;
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
        location / { return 200 "hello\n"; }
    }
}
EOF

# Builtins only in the polling below: with wrk and the server on both cores, a fork per poll
# (date, sleep) would take tens of milliseconds and blur the times measured.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
mkfifo "$TMP/never"
exec 9<>"$TMP/never"
pause_10ms() { read -rt 0.01 -u 9 || true; }
# until SECONDS COMMAND...: polls COMMAND every 10 ms until it succeeds; 1 after SECONDS.
until_true() {
    local secs=$1 start=$SECONDS
    shift
    until "$@"; do
        ((SECONDS - start < secs)) || return 1
        pause_10ms
    done
}
# gone PID: exited, reaped or not (a zombie answers kill -0, and this script reaps its own
# background children only when bash gets to it); from /proc, with builtins only.
gone() {
    local stat
    [[ -r /proc/$1/stat ]] || return 0
    read -r stat </proc/"$1"/stat 2>/dev/null || return 0
    stat=${stat##*) }
    [[ ${stat%% *} == Z ]]
}
all_gone() { local p; for p in "$@"; do gone "$p" || return 1; done; return 0; }
url_of() { if [[ $1 == gatewayd ]]; then echo "http://127.0.0.1:$PORT_GATEWAYD/"; else echo "http://127.0.0.1:$PORT_NGINX/"; fi; }
status_field() {
    "$GATEWAYCTL_BIN" status --json --socket "$TMP/gatewayd/control.sock" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))" 2>/dev/null || true
}

start_server() {
    if [[ $1 == gatewayd ]]; then
        "$GATEWAYD_BIN" --config "$TMP/gatewayd/config.yaml" --control-socket "$TMP/gatewayd/control.sock" \
            --log-level "$GATEWAYD_LOG_LEVEL" </dev/null >>"$TMP/gatewayd/gatewayd.log" 2>&1 &
    else
        "$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" || die "nginx -t failed"
        # An absolute path: nginx's USR2 starts argv[0] again. It forks and returns.
        rm -f "$TMP/nginx/nginx.pid"
        "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" </dev/null \
            >>"$TMP/nginx/stdout.log" 2>&1 || die "nginx did not start"
        until_true "$STEP_TIMEOUT" test -s "$TMP/nginx/nginx.pid" || die "nginx wrote no pid file"
    fi
    if [[ $1 == gatewayd ]]; then SERVER_PID=$!; else SERVER_PID=$(cat "$TMP/nginx/nginx.pid"); fi
    remember_pid "$SERVER_PID"
    wait_body "$(url_of "$1")" "hello" "$STEP_TIMEOUT" "$SERVER_PID" || die "$1 did not answer on $(url_of "$1")"
    # shellcheck disable=SC2016  # expanded by eval, at each try
    until_true "$STEP_TIMEOUT" eval '(($(children_of "$SERVER_PID" | wc -l) >= WORKERS))' || die "$1: workers missing"
}

declare -A REQS FAILED RETURNED SERVING GONE NOTE

# upgrade_gatewayd: T0 = gatewayctl upgrade sent; returned when it exits (the new master is
# in charge); serving = returned (it answers only then); gone = old master and workers exited.
upgrade_gatewayd() {
    local key=$1 old=$SERVER_PID olds t0 out new
    olds=$(children_of "$old" | tr '\n' ' ')
    remember_children "$old"
    t0=$(now_ms)
    out=$("$GATEWAYCTL_BIN" upgrade --socket "$TMP/gatewayd/control.sock" 2>&1) || NOTE[$key]="upgrade failed: $out"
    RETURNED[$key]=$(($(now_ms) - t0))
    SERVING[$key]=${RETURNED[$key]}
    new=$(status_field master_pid)
    [[ $new =~ ^[0-9]+$ ]] && SERVER_PID=$new && remember_pid "$new"
    # shellcheck disable=SC2086  # the worker pids, one word each
    until_true "$STEP_TIMEOUT" all_gone "$old" $olds || NOTE[$key]+="old master still running; "
    GONE[$key]=$(($(now_ms) - t0))
    remember_children "$SERVER_PID"
}

# upgrade_nginx: USR2, wait for the new master and its workers; WINCH to the old one, wait for
# its workers to exit; QUIT, wait for the old master to exit. The waits are what an operator
# scripting the sequence must do: nginx's signals return at once.
upgrade_nginx() {
    local key=$1 old=$SERVER_PID olds t0 new=""
    olds=$(children_of "$old" | tr '\n' ' ')
    remember_children "$old"
    t0=$(now_ms)
    kill -USR2 "$old"
    RETURNED[$key]=$(($(now_ms) - t0))
    new_master_ready() {
        new=$(cat "$TMP/nginx/nginx.pid" 2>/dev/null || true)
        [[ $new =~ ^[0-9]+$ && $new != "$old" ]] && (($(children_of "$new" | wc -l) >= WORKERS))
    }
    until_true "$STEP_TIMEOUT" new_master_ready || { NOTE[$key]="no new master"; return 0; }
    SERVING[$key]=$(($(now_ms) - t0))
    remember_pid "$new"
    remember_children "$new"
    kill -WINCH "$old"
    # shellcheck disable=SC2086  # the worker pids, one word each
    until_true "$STEP_TIMEOUT" all_gone $olds || NOTE[$key]+="old workers still running; "
    kill -QUIT "$old"
    until_true "$STEP_TIMEOUT" gone "$old" || NOTE[$key]+="old master still running; "
    wait "$old" 2>/dev/null || true
    GONE[$key]=$(($(now_ms) - t0))
    SERVER_PID=$new
}

run() {
    local server=$1 mode=$2 key="$1/$2" out hdr=()
    out="$TMP/$server/wrk-$mode.txt"
    [[ $mode == close ]] && hdr=(-H "Connection: close")
    log "$server, $mode: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s ${hdr[*]:-}; upgrade after ${WARMUP}s"
    start_server "$server"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s "${hdr[@]}" "$(url_of "$server")" >"$out" 2>&1 &
    WRK_PID=$!
    sleep "$WARMUP"
    if [[ $server == gatewayd ]]; then upgrade_gatewayd "$key"; else upgrade_nginx "$key"; fi
    wait "$WRK_PID" || warn "wrk exited with status $?"
    WRK_PID=""
    REQS[$key]=$(awk '/ requests in /{print $1}' "$out")
    local non2xx se errors
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    se=$(grep 'Socket errors:' "$out" || true)
    errors=$(sed -n 's/.*connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$se")
    FAILED[$key]=$((${non2xx:-0} + $(tr ' ' '+' <<<"${errors:-0}")))
    [[ -n $se ]] && NOTE[$key]+="$se "
    log "$server, $mode: ${REQS[$key]} requests, ${FAILED[$key]} failed; returned ${RETURNED[$key]} ms, serving ${SERVING[$key]:-?} ms, old gone ${GONE[$key]:-?} ms"
    stop_process "$SERVER_PID" "$([[ $server == nginx ]] && echo QUIT || echo TERM)" 15
    SERVER_PID=""
}

for server in $SERVERS; do
    for mode in $MODES; do run "$server" "$mode"; done
done

fmt="%-9s %-10s %10s %7s %13s %13s %13s  %s\n"
printf '\n'
printf "$fmt" server mode requests failed "returned ms" "serving ms" "old gone ms" note
for server in $SERVERS; do
    for mode in $MODES; do
        key="$server/$mode"
        printf "$fmt" "$server" "$mode" "${REQS[$key]:-?}" "${FAILED[$key]:-?}" "${RETURNED[$key]:-?}" \
            "${SERVING[$key]:-?}" "${GONE[$key]:-?}" "${NOTE[$key]:-}"
    done
done
printf '\n%s, %d workers each, wrk -t%d -c%d -d%ds, upgrade %d s into the load; nginx %s\n' \
    "$(uname -srm)" "$WORKERS" "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" \
    "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
if [[ -n $RESULTS_DIR ]]; then printf 'raw output (wrk, logs, configs): %s\n' "$RESULTS_DIR"; fi
