#!/usr/bin/env bash
# chaos.sh: steady load plus one kind of fault per phase against a release build of gatewayd,
# and a table: fault | requests | failed | recovered (ms) | note.
#
#   gatewayd: 2 workers, proxying GET / to two demo upstreams (examples/demo-upstream.py,
#             round robin, passive health, 1 retry), drain_timeout 10 s, max_draining 4,
#             worker_watchdog_timeout 2 s.
#   load:     benchmarks/chaos-load.py, closed loop, CONNS connections, keep-alive or a new
#             connection per request ("close"); every failed request is kept with its time.
#   phases:   baseline; gatewayctl reload every second; a reload storm with long requests
#             held open; reloads to invalid configs; SIGKILL of a serving worker every few
#             seconds; SIGKILL of an upstream; SIGKILL of the master and a new master;
#             SIGSTOP of a worker for a few seconds.
#
# "failed" is every request the client saw fail: connect, write and read errors, timeouts
# (REQUEST_TIMEOUT_S in chaos-load.py) and non-2xx answers. "recovered (ms)" is defined per row
# (the table's legend prints it); "-" where the service never stopped serving normally.
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
#
# With --peer nginx (or haproxy, or both), the same phases, where they have an equivalent,
# then run against nginx 1.22 / HAProxy 2.6 configured the same way (chaos-peer.sh), and their
# tables and a comparison are printed after gatewayd's, which does not change.
#
# Usage: benchmarks/chaos.sh [--quick] [--phase-seconds S] [--only NAMES] [--peer nginx|haproxy]
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: benchmarks/chaos.sh [options]

  --quick             5 s phases and a 5 s reload storm (about 1.5 minutes in all)
  --phase-seconds S   seconds of load per phase (default 15)
  --storm-seconds S   seconds of back-to-back gatewayctl reloads (default 20)
  --conns N           load connections (default 16)
  --only "A B"        run only these phases: baseline reload storm invalid worker-kill
                      upstream-kill master-kill sigstop (baseline always runs first)
  --peer NAME         then run the same phases against nginx or haproxy (repeatable:
                      --peer nginx --peer haproxy), print its table and a comparison of
                      failed requests per fault; installs the package when missing
  -h, --help          this help

Environment: GATEWAYD_BIN and GATEWAYCTL_BIN (default: built with `make release
SCRATCH=<repo>/.build`), RESULTS_DIR (default benchmarks/results/chaos-<UTC time>; empty: none),
KEEP_TMP=1 keeps the temp directory.
EOF
}

# ---------------------------------------------------------------------------- options
PHASE_S=15           # seconds of load per phase: long enough for 4-5 faults 3 s apart
STORM_S=20           # the brief's "as many reloads as gatewayctl can send in ~20 s"
CONNS=16             # load connections: enough to keep both workers busy on 2 cores
HOLDERS=8            # storm: connections with a long request in flight at all times
HOLD_MS=2000         # each holder's request: /slow?ms=2000, longer than a reload (ms) so that
                     # every draining generation still has requests when the next reload comes
KILL_EVERY=3         # "SIGKILL a worker every few seconds": 3 s, under the 10 s after which a
                     # worker counts as stable, so the restart backoff is seen growing
STOP_S=4             # SIGSTOP length: above the client's 3 s timeout, so a stuck request shows
WATCHDOG_S=2         # worker_watchdog_timeout: the smallest allowed, so the kill comes before STOP_S
DRAIN_TIMEOUT_S=10   # gatewayd drain_timeout here: bounds every drain (the holders' 2 s fit)
READY_TIMEOUT=30     # seconds for gatewayd or an upstream to answer after start (a cold start
                     # on this shared 2-core machine takes well under 5 s)
SETTLE_S=$((DRAIN_TIMEOUT_S + 5))   # old generations gone: drain_timeout, SIGKILL 2 s after it
ONLY=""
PEERS=""
ALL_PHASES="baseline reload storm invalid worker-kill upstream-kill master-kill sigstop"

while (($#)); do
    case $1 in
        --quick) PHASE_S=5; STORM_S=5; shift ;;
        --phase-seconds) PHASE_S=${2:?--phase-seconds needs a value}; shift 2 ;;
        --storm-seconds) STORM_S=${2:?--storm-seconds needs a value}; shift 2 ;;
        --conns) CONNS=${2:?--conns needs a value}; shift 2 ;;
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --peer)
            [[ ${2:-} == nginx || ${2:-} == haproxy ]] || die "--peer: nginx or haproxy, got '${2:-}'"
            [[ " $PEERS " == *" $2 "* ]] || PEERS+="${PEERS:+ }$2"
            shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
for v in PHASE_S STORM_S CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
for p in $ONLY; do [[ " $ALL_PHASES " == *" $p "* ]] || die "--only: unknown phase '$p' ($ALL_PHASES)"; done
wants() { [[ -z $ONLY || $1 == baseline || " $ONLY " == *" $1 "* ]]; }

RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/chaos-$(date -u +%Y%m%dT%H%M%SZ)}
HELPER=$REPO_ROOT/benchmarks/chaos-load.py

# ---------------------------------------------------------------------------- state and cleanup
GW_PID=""
STOPPED_PID=""                 # a worker under SIGSTOP, continued at exit
declare -a UPSTREAM_PIDS=()   # every upstream started
declare -A UPSTREAM_PID=()    # name -> the one running now
declare -a BG_PIDS=()          # load clients, pollers, reload loops
PEER_PID=""                    # --peer: the nginx or haproxy master running now (chaos-peer.sh)

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    [[ -n $STOPPED_PID ]] && kill -CONT "$STOPPED_PID" 2>/dev/null
    for p in "${BG_PIDS[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    # Graceful stop first (its log shows what gatewayd thought of it), SIGKILL after 10 s.
    [[ -n $GW_PID ]] && stop_process "$GW_PID" TERM 10
    # nginx: SIGTERM is its fast stop; haproxy's master stops its workers on SIGTERM too.
    [[ -n $PEER_PID ]] && stop_process "$PEER_PID" TERM 10
    # A demo upstream exits at once on SIGTERM (os._exit); 5 s is only slack for a busy machine.
    for p in "${UPSTREAM_PIDS[@]}"; do stop_process "$p" TERM 5; done
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PACKAGES=(curl:curl python3:python3 ps:procps)
[[ -n $PEERS ]] && PACKAGES+=(ss:iproute2)
for p in $PEERS; do PACKAGES+=("$p:$p"); done
ensure_packages "${PACKAGES[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
PYTHON=$(command -v python3)
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 needed (asyncio.timeout)"
if [[ -z ${GATEWAYD_BIN:-} || -z ${GATEWAYCTL_BIN:-} ]]; then build_gatewayd "$REPO_ROOT/.build"; fi
[[ -x $GATEWAYD_BIN ]] || die "GATEWAYD_BIN=$GATEWAYD_BIN is not an executable"
[[ -x $GATEWAYCTL_BIN ]] || die "GATEWAYCTL_BIN=$GATEWAYCTL_BIN is not an executable"

TMP=$(mktemp -d /tmp/chaos.XXXXXX)
SOCK=$TMP/control.sock
CONF=$TMP/gateway.yaml
PHASES=$TMP/phases.jsonl
: >"$PHASES"
PORT="" PORT_API1="" PORT_API2=""   # set by pick_port (lib.sh)
pick_port PORT 18180
pick_port PORT_API1 18191
pick_port PORT_API2 18192
LOAD_PORT=$PORT                    # where start_load sends its load (a --peer run changes it)
PORT_NGINX="" PORT_HAPROXY=""
[[ " $PEERS " == *" nginx "* ]] && pick_port PORT_NGINX 18183
[[ " $PEERS " == *" haproxy "* ]] && pick_port PORT_HAPROXY 18184

# ---------------------------------------------------------------------------- config
# write_config TAG [EXTRA]: the config, atomically replaced (a reload reads a whole file);
# TAG changes the /tag body so every reload is a real change; EXTRA is appended (bad input).
# The upstream's timeouts and health are examples/gateway-proxy.yaml's (connect 2 s, response
# 30 s, idle 60 s, 3 failures eject for 10 s), ready_timeout examples/gateway.yaml's (10 s);
# drain_timeout is DRAIN_TIMEOUT_S.
write_config() {
    cat >"$CONF.tmp" <<EOF
workers: 2
drain_timeout: ${DRAIN_TIMEOUT_S}s
ready_timeout: 10s
max_draining_generations: 4
worker_watchdog_timeout: ${WATCHDOG_S}s
listeners:
  - { name: web, address: 127.0.0.1:$PORT, backlog: 4096 }
upstreams:
  api:
    endpoints: [127.0.0.1:$PORT_API1, 127.0.0.1:$PORT_API2]
    balance: round_robin
    connect_timeout: 2s
    response_timeout: 30s
    keepalive: { max_idle_per_endpoint: 32, idle_timeout: 60s }
    health: { max_failures: 3, eject_for: 10s }
    retries: 1
routes:
  - name: tag
    match: { path: /tag }
    direct_response: { status: 200, headers: { content-type: text/plain }, body: "$1\n" }
  - name: api
    match: { path_prefix: / }
    upstream: api
${2:-}
EOF
    mv -f "$CONF.tmp" "$CONF"
}

# ---------------------------------------------------------------------------- processes
start_upstream() { # start_upstream NAME PORT: a demo upstream, waited for by its READY line
    local name=$1 port=$2 line=""
    mkfifo "$TMP/$name.ready"
    "$PYTHON" "$REPO_ROOT/examples/demo-upstream.py" --port "$port" --name "$name" \
        >"$TMP/$name.ready" 2>>"$TMP/$name.log" &
    UPSTREAM_PIDS+=("$!")
    UPSTREAM_PID[$name]=$!
    read -r -t "$READY_TIMEOUT" line <"$TMP/$name.ready" || true
    rm -f "$TMP/$name.ready"
    [[ $line == "READY $port" ]] || die "upstream $name did not start on 127.0.0.1:$port ($TMP/$name.log)"
}

start_gatewayd() { # start_gatewayd: a master on $CONF; GW_PID; returns 1 if it exits at once
    "$GATEWAYD_BIN" --config "$CONF" --control-socket "$SOCK" --pid-file "$TMP/gatewayd.pid" \
        --log-level info </dev/null >>"$TMP/access.log" 2>>"$TMP/gatewayd.log" &
    GW_PID=$!
    remember_pid "$GW_PID"
}
ctl() { "$GATEWAYCTL_BIN" "$1" --socket "$SOCK" "${@:2}"; }   # ctl COMMAND [ARGS]
ctl_json() { "$GATEWAYCTL_BIN" status --json --socket "$SOCK" 2>/dev/null; }
# status_py EXPR: EXPR evaluated with s = the status JSON (prints "" when there is none).
status_py() {
    ctl_json | "$PYTHON" -c "import json,sys
try: s = json.load(sys.stdin)
except ValueError: sys.exit(0)
serving = [g for g in s['generations'] if g['state'] == 'serving']
print($1)" 2>/dev/null || true
}
remember_workers() {
    local p
    for p in $(status_py "' '.join(str(w['pid']) for g in s['generations'] for w in g['workers'])"); do remember_pid "$p"; done
    for p in $(status_py "' '.join(str(p) for p in s['spare_workers'])"); do remember_pid "$p"; done
}

# settle: wait (at most SETTLE_S) until only the serving generation is left, with 2 ready
# workers, so that one phase's drains do not count in the next.
settle() {
    local start=$SECONDS st
    while ((SECONDS - start < SETTLE_S)); do
        st=$(status_py "'%d %d' % (len(s['generations']), sum(w['state'] == 'ready' for g in serving for w in g['workers']))")
        [[ $st == "1 2" ]] && return 0
        sleep 0.1
    done
    warn "not settled ${SETTLE_S}s after the phase: $(status_py "[(g['id'], g['state'], len(g['workers'])) for g in s['generations']]")"
}

now() { echo "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", (b - a) * 1000}'; }

# start_load NAME MODE [extra args]: the load client in the background for PHASE_S seconds.
LOAD_PID=""
start_load() {
    local name=$1 mode=$2
    shift 2
    "$PYTHON" "$HELPER" load --port "$LOAD_PORT" --duration "$PHASE_S" --conns "$CONNS" --mode "$mode" \
        --out "$TMP/load-$name.json" --ready-file "$TMP/load-$name.ready" "$@" 2>>"$TMP/load-$name.err" &
    LOAD_PID=$!
    BG_PIDS+=("$LOAD_PID")
    # Faults are scheduled once every load connection has had an answer (the client writes
    # the file then, or after 5 s).
    local waited=0
    while [[ ! -e $TMP/load-$name.ready ]] && alive "$LOAD_PID" && ((waited < 600)); do
        sleep 0.01
        waited=$((waited + 1))
    done
}
wait_load() { wait "$LOAD_PID" || warn "load client exited with status $? ($TMP/load-$1.err)"; }

# record FAULT LOADNAME FAULT_TIMES RECOVERED NOTE: one row for the report. RECOVERED is JSON:
# "client" (from each fault to the client's last failure after it), a list of ms, or null.
record() {
    "$PYTHON" -c 'import json,sys
f, load, times, rec, note = sys.argv[1:6]
print(json.dumps({"fault": f, "load": load, "faults": [float(t) for t in times.split()],
                  "recovered": json.loads(rec), "note": note}))' \
        "$1" "$TMP/load-$2.json" "$3" "$4" "$5" >>"$PHASES"
}

# ---------------------------------------------------------------------------- start
log "ports: gatewayd $PORT, upstreams $PORT_API1 $PORT_API2; temp dir $TMP"
start_upstream api-1 "$PORT_API1"
start_upstream api-2 "$PORT_API2"
TAG=0
write_config "tag $TAG"
"$GATEWAYD_BIN" check --config "$CONF" >&2 || die "gatewayd check refused $CONF"
start_gatewayd
rc=0
wait_body "http://127.0.0.1:$PORT/tag" "tag $TAG" "$READY_TIMEOUT" "$GW_PID" || rc=$?
((rc == 0)) || { tail -n 30 "$TMP/gatewayd.log" >&2; die "gatewayd did not serve within ${READY_TIMEOUT}s (rc $rc)"; }
settle
remember_workers
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$SECONDS

# ---------------------------------------------------------------------------- phases
phase_baseline() {
    local mode
    for mode in keepalive close; do
        log "baseline, $mode: ${PHASE_S}s"
        start_load "baseline-$mode" "$mode"
        wait_load "baseline-$mode"
        record "none ($mode)" "baseline-$mode" "" null "baseline for the rows below"
    done
}

# gatewayctl reload every second, the config rewritten each time. recovered: the longest
# `gatewayctl reload` (from the call to its return: the new generation serves and every old
# worker confirmed it stopped accepting); the service never stops, so this is not downtime.
phase_reload() {
    local mode i n durs t0 bad
    for mode in keepalive close; do
        log "reload every 1 s, $mode: ${PHASE_S}s"
        start_load "reload-$mode" "$mode"
        durs="" bad=0 n=0
        for ((i = 1; i < PHASE_S; i++)); do
            sleep 1
            TAG=$((TAG + 1))
            write_config "tag $TAG"
            t0=$(now)
            ctl reload >>"$TMP/reloads.log" 2>&1 || bad=$((bad + 1))
            durs+="$(ms_since "$t0"),"
            n=$((n + 1))
        done
        remember_workers
        wait_load "reload-$mode"
        record "gatewayctl reload every 1 s ($mode)" "reload-$mode" "" "[${durs%,}]" \
            "$n reloads, $bad failed; recovered = median / max time gatewayctl reload took (no downtime)"
        settle
    done
}

# As many gatewayctl reloads as it can send, back to back, for STORM_S, while HOLDERS
# connections keep a HOLD_MS request in flight, so every draining generation has work.
phase_storm() {
    local n=0 bad=0 t0 durs="" end early poll_pid
    log "reload storm: ${STORM_S}s of back-to-back gatewayctl reload, $HOLDERS holders of /slow?ms=$HOLD_MS"
    local saved=$PHASE_S
    PHASE_S=$((STORM_S + 2))
    start_load storm keepalive --hold "$HOLDERS" --hold-path "/slow?ms=$HOLD_MS" \
        --hold-spread "$(awk -v ms="$HOLD_MS" 'BEGIN{print ms / 1000}')"
    PHASE_S=$saved
    "$PYTHON" "$HELPER" status-poll --socket "$SOCK" --duration "$STORM_S" --out "$TMP/storm-status.json" &
    poll_pid=$!
    BG_PIDS+=("$poll_pid")
    # --peer runs: the processes and their RSS sum, to compare with the peer's storm.
    local sample_pid=""
    if [[ -n $PEERS ]]; then
        "$PYTHON" "$HELPER" proc-sample --pid "$GW_PID" --duration "$STORM_S" --out "$TMP/procs-gatewayd-storm.json" &
        sample_pid=$!
        BG_PIDS+=("$sample_pid")
    fi
    early=$(grep -c 'early: more than max_draining_generations' "$TMP/gatewayd.log" || true)
    end=$((SECONDS + STORM_S))
    while ((SECONDS < end)); do
        t0=$(now)
        ctl reload >>"$TMP/reloads.log" 2>&1 || bad=$((bad + 1))
        durs+="$(ms_since "$t0"),"
        n=$((n + 1))
        ((n % 20)) || remember_workers
    done
    wait "$poll_pid" || true
    [[ -n $sample_pid ]] && { wait "$sample_pid" || true; }
    wait_load storm
    early=$(($(grep -c 'early: more than max_draining_generations' "$TMP/gatewayd.log" || true) - early))
    local drain_note
    drain_note=$("$PYTHON" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print("most generations draining at once in status: %d, of which not yet stopped by the limit: %d (max_draining_generations 4; %d status polls); most worker processes at once: %d"
      % (d["max_draining"], d["max_live_draining"], d["polls"], d["max_workers"]))' "$TMP/storm-status.json" 2>/dev/null || echo "no status poll result")
    record "reload storm ($n reloads in ${STORM_S} s, keep-alive)" storm "" "[${durs%,}]" \
        "$n reloads ($(awk -v n="$n" -v s="$STORM_S" 'BEGIN{printf "%.0f", n / s}')/s), $bad failed; $drain_note; $early generations stopped early (SIGTERM) by the limit. recovered = median / max gatewayctl reload time."
    settle
}

# Reloads to configs that must fail: a YAML error, and a listener whose port is taken (the
# first upstream's). Each must exit 1 and leave the serving generation as it was.
phase_invalid() {
    local i n=0 refused=0 gen0 gen1 t0 durs="" rc
    log "invalid reloads, keep-alive: ${PHASE_S}s"
    gen0=$(status_py "serving[0]['id']")
    start_load invalid keepalive
    for ((i = 1; i < PHASE_S; i++)); do
        sleep 1
        if ((i % 2)); then
            write_config "tag $TAG" "  - name: broken
    match: { path: [unclosed"
        else
            write_config "tag $TAG"
            sed -i "s/^  - { name: web, address: .*/&\n  - { name: taken, address: 127.0.0.1:$PORT_API1 }/" "$CONF"
        fi
        t0=$(now)
        # Exit 1 is "reload failed, the old generation serves"; 2 would be no answer at all.
        rc=0
        ctl reload >>"$TMP/reloads.log" 2>&1 || rc=$?
        ((rc == 1)) && refused=$((refused + 1))
        durs+="$(ms_since "$t0"),"
        n=$((n + 1))
    done
    write_config "tag $TAG"
    wait_load invalid
    gen1=$(status_py "serving[0]['id']")
    record "gatewayctl reload to an invalid config ($n, keep-alive)" invalid "" null \
        "$refused of $n refused (YAML error / port in use); serving generation $gen0 before, $gen1 after"
}

# SIGKILL one worker of the serving generation every KILL_EVERY s (indexes in turn).
# recovered: kill -> status shows a replacement for that index `ready` (median / max).
phase_worker_kill() {
    local mode kp rec faults note
    for mode in keepalive close; do
        log "SIGKILL a serving worker every ${KILL_EVERY}s, $mode: ${PHASE_S}s"
        start_load "wkill-$mode" "$mode"
        "$PYTHON" "$HELPER" kill-workers --socket "$SOCK" --duration "$((PHASE_S - 1))" --every "$KILL_EVERY" \
            --out "$TMP/wkill-$mode.json" &
        kp=$!
        BG_PIDS+=("$kp")
        while alive "$kp"; do remember_workers; sleep 0.5; done
        wait "$kp" || warn "kill-workers exited with status $?"
        wait_load "wkill-$mode"
        read -r faults rec note < <("$PYTHON" -c 'import json,sys
k = [x for x in json.load(open(sys.argv[1]))["kills"] if "t" in x]
restarts = ",".join(str(x.get("restarts", "?")) for x in k)
print(" ".join(str(x["t"]) for x in k).replace(" ", ",") or "-", json.dumps([x["ms"] for x in k]).replace(" ", ""),
      "%d kills; restarts counter of the replaced index after each: %s" % (len(k), restarts))' "$TMP/wkill-$mode.json")
        [[ $faults == - ]] && faults=""
        record "SIGKILL of a serving worker every ${KILL_EVERY} s ($mode)" "wkill-$mode" "${faults//,/ }" "$rec" \
            "$note; recovered = kill -> replacement ready in status, median / max"
        settle
    done
}

# SIGKILL of one upstream endpoint (api-1) a third into the phase; it is started again at the
# end of the phase. recovered: from the kill to the client's last failure.
phase_upstream_kill() {
    local pid t0 third=$((PHASE_S / 3))
    log "SIGKILL of upstream api-1, keep-alive: ${PHASE_S}s"
    start_load upstream keepalive
    sleep "$third"
    pid=${UPSTREAM_PID[api-1]}
    alive "$pid" || die "api-1 (pid $pid) is not running"
    t0=$(now)
    kill -KILL "$pid"
    wait_load upstream
    wait "$pid" 2>/dev/null || true
    start_upstream api-1 "$PORT_API1"
    record "SIGKILL of 1 of 2 upstream endpoints (keep-alive)" upstream "$t0" '"client"' \
        "recovered = kill -> the client's last failed request"
}

# SIGKILL of the master a third into the phase, and a new master started at once (what a
# supervisor with Restart=always does). recovered: kill -> first 200 from the new master.
phase_master_kill() {
    local mode t0 old rec tries
    for mode in keepalive close; do
        log "SIGKILL of the master, then a new master, $mode: ${PHASE_S}s"
        start_load "mkill-$mode" "$mode"
        sleep "$((PHASE_S / 3))"
        remember_workers
        old=$GW_PID
        t0=$(now)
        kill -KILL "$old"
        wait "$old" 2>/dev/null || true
        # The old workers may still hold the port for a moment (they close their copies of the
        # listening sockets first thing when they see the master gone, within milliseconds): a
        # new master that cannot bind exits, and is started again, at most 50 times 100 ms
        # apart (5 s, far beyond those milliseconds, so a failure here is a real one).
        rec=null
        for ((tries = 1; tries <= 50; tries++)); do
            start_gatewayd
            if wait_body "http://127.0.0.1:$PORT/tag" "tag $TAG" "$READY_TIMEOUT" "$GW_PID"; then
                rec="[$(ms_since "$t0")]"
                break
            fi
            sleep 0.1
        done
        remember_workers
        wait_load "mkill-$mode"
        record "SIGKILL of the master, new master started at once ($mode)" "mkill-$mode" "$t0" "$rec" \
            "$tries master start(s); recovered = kill -> first 200 from the new master"
        settle
    done
}

# SIGSTOP of one serving worker for STOP_S s, then SIGCONT. recovered: from the SIGSTOP to the
# client's last failure.
phase_sigstop() {
    local pid t0 during victim conns
    log "SIGSTOP of a serving worker for ${STOP_S}s, keep-alive: ${PHASE_S}s"
    start_load sigstop keepalive
    sleep "$((PHASE_S / 4))"
    # The worker with the most connections (the accept race does not spread them evenly).
    victim=$(status_py "'%d %d' % max((w['connections'], w['pid']) for w in serving[0]['workers'])[::-1]")
    read -r pid conns <<<"$victim"
    [[ -n $pid ]] || die "no serving worker"
    t0=$(now)
    STOPPED_PID=$pid
    kill -STOP "$pid"
    sleep "$((STOP_S / 2))"
    during=$(status_py "[(w['index'], w['state']) for g in serving for w in g['workers']]")
    sleep "$((STOP_S - STOP_S / 2))"
    # The worker watchdog has killed it by now (WATCHDOG_S < STOP_S); continue it if not.
    local fate="killed by the worker watchdog"
    if alive "$pid"; then fate="still alive at the SIGCONT"; kill -CONT "$pid" 2>/dev/null || true; fi
    STOPPED_PID=""
    wait_load sigstop
    record "SIGSTOP of a serving worker for ${STOP_S} s (keep-alive)" sigstop "$t0" '"client"' \
        "the stopped worker had $conns connections and was $fate (worker_watchdog_timeout ${WATCHDOG_S}s); status $((STOP_S / 2)) s into the stop: $during; recovered = SIGSTOP -> the client's last failed request"
}

for phase in $ALL_PHASES; do
    wants "$phase" || continue
    alive "$GW_PID" || die "gatewayd (pid $GW_PID) is gone before the $phase phase"
    "phase_${phase//-/_}"
done

# ---------------------------------------------------------------------------- report
printf '\nchaos: %s, %s s phases (storm %s s), %s load connections, gatewayd 2 workers proxying to 2 demo upstreams\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$PHASE_S" "$STORM_S" "$CONNS"
printf 'gatewayd: %s\n' "$GATEWAYD_BIN"
printf 'machine:  %s cores, %s; load average before %s, after %s; %s s of phases\n\n' "$(nproc)" "$(uname -sr)" \
    "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$((SECONDS - T_START))"
"$PYTHON" "$HELPER" report "$PHASES"
printf '\n(failed: connect + read/write errors + timeouts (%s s) + non-2xx, as the load client saw them.\n' \
    "$("$PYTHON" -c 'import importlib.util,sys
s = importlib.util.spec_from_file_location("c", sys.argv[1]); m = importlib.util.module_from_spec(s); s.loader.exec_module(m)
print(m.REQUEST_TIMEOUT_S)' "$HELPER")"
printf ' recovered: defined in each row'"'"'s note; "-" where nothing stopped serving.)\n'
nwarn=$(grep -cE ' (warning|error|critical) ' "$TMP/gatewayd.log" || true)
printf '\ngatewayd log: %s warning/error/critical lines' "${nwarn:-0}"
if ((${nwarn:-0} > 0)); then
    printf ', by message (first 15 kinds):\n'
    grep -E ' (warning|error|critical) ' "$TMP/gatewayd.log" | sed -E 's/^[^ ]+ //; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 15
else
    printf '\n'
fi
[[ -n $RESULTS_DIR ]] && printf '\nraw output (load results, status polls, gatewayd log): %s\n' "$RESULTS_DIR"
alive "$GW_PID" || die "gatewayd died during the run (log: ${RESULTS_DIR:-$TMP}/gatewayd.log)"

# ---------------------------------------------------------------------------- --peer
[[ -n $PEERS ]] || exit 0
# gatewayd is stopped first, so that the peer has the machine to itself as gatewayd had.
stop_process "$GW_PID" TERM 10
GW_PID=""
GW_PHASES=$PHASES
# shellcheck source=benchmarks/chaos-peer.sh
. "$REPO_ROOT/benchmarks/chaos-peer.sh"
# peer_log_lines: the peer's warning and error lines, up to the end of its phases (the stop
# that follows logs too).
peer_log_lines() {
    head -n "$PEER_LOG_LINES" "$(peer_log)" | grep -E '\[(warn|error|crit|alert|emerg)\]|\[(WARNING|ALERT)\]' || true
}
compare_args=("gatewayd=$GW_PHASES")
for peer in $PEERS; do
    run_peer "$peer"
    if [[ $peer == nginx ]]; then version=$("$NGINX" -v 2>&1); else version=$("$HAPROXY" -v 2>/dev/null | head -n 1); fi
    printf '\nchaos, peer %s: %s, same phases, load and upstreams; %s\n' "$peer" "$(date -u +%Y-%m-%dT%H:%MZ)" "$version"
    printf 'load average before %s, after %s; %s s of phases; config: %s\n\n' "$PEER_LOAD_BEFORE" "$PEER_LOAD_AFTER" \
        "$PEER_SECONDS" "${RESULTS_DIR:-$TMP}/$peer/${PEER_CONF##*/}"
    "$PYTHON" "$HELPER" report "$TMP/phases-$peer.jsonl"
    nwarn=$(peer_log_lines | wc -l)
    printf '\n%s log: %s warn/error/crit/alert/emerg lines' "$peer" "$nwarn"
    if ((nwarn > 0)); then
        printf ', by message (first 12 kinds):\n'
        peer_log_lines | sed -E 's/^[0-9\/]+ [0-9:]+ //; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -n 12
    else
        printf '\n'
    fi
    compare_args+=("$peer=$TMP/phases-$peer.jsonl")
done
printf '\nfailed requests per fault (failed / requests), gatewayd and %s:\n\n' "${PEERS// / and }"
"$PYTHON" "$HELPER" compare "${compare_args[@]}"
if wants storm; then
    printf '\nreload storm, processes and memory (sampled every 50 ms):\n  gatewayd %s\n' \
        "$(procs_py "$TMP/procs-gatewayd-storm.json" '"peak memory: PSS sum %.1f MiB (RSS sum %.1f MiB), most processes %d (master, workers of every generation, spares)" % (d["max_pss_kb"] / 1024, d["max_rss_kb"] / 1024, d["max_procs"])')"
    for peer in $PEERS; do
        printf '  %s %s\n' "$peer" "$(procs_py "$TMP/procs-$peer-storm.json" '"peak memory: PSS sum %.1f MiB (RSS sum %.1f MiB), most processes %d" % (d["max_pss_kb"] / 1024, d["max_rss_kb"] / 1024, d["max_procs"]) + (", most old workers (shutting down) %d" % d["max_old"] if d["old_match"] else " (master, workers of every generation)")')"
    done
fi
