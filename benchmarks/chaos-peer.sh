# shellcheck shell=bash
# Variables set here are read by chaos.sh (LOAD_PORT, STOPPED_PID, PEER_*):
# shellcheck disable=SC2034
# chaos-peer.sh: the `--peer nginx|haproxy` half of chaos.sh (sourced by it, never run): the
# phases of chaos.sh that have an equivalent, run against nginx 1.22 or HAProxy 2.6 configured
# like gatewayd there, on the same two demo upstreams, with the same load client.
#
#   nginx:    worker_processes 2, round robin over the two upstreams (max_fails=3
#             fail_timeout=10s), keepalive 32 to them, proxy_next_upstream error timeout (the
#             default) with 2 tries (gatewayd: retries 1), proxy_connect_timeout 2s,
#             worker_shutdown_timeout 10s (gatewayd's drain_timeout). Reloads: `nginx -s reload`
#             (what Debian's ExecReload runs). Master and workers in the foreground, pid file,
#             error log and temp paths in the temp dir.
#   haproxy:  master-worker (-W), nbthread 2 (one worker process, two threads), roundrobin,
#             retries 1 + option redispatch (a retry goes to the other server, on connection
#             failures only, like gatewayd), passive health (observe layer4, error-limit 3,
#             on-error mark-down) with active checks every 2 s to bring a server back,
#             hard-stop-after 10s (drain_timeout). Reloads: SIGUSR2 to the master (what
#             Debian's ExecReload sends, after `haproxy -c`).
#
# Uses chaos.sh's variables and functions (TMP, PYTHON, HELPER, PHASE_S, start_load, record, ...).
# Sets PEER, PEER_PID, PEER_PORT, PEER_DIR; cleanup() in chaos.sh stops PEER_PID.

PEER=""
PEER_PID=""
PEER_PORT=""
PEER_DIR=""
PEER_CONF=""
PEER_NGINX_TEMP_PATHS=""

# peer_workers_n: worker processes one generation of the peer has.
peer_workers_n() { if [[ $PEER == nginx ]]; then echo 2; else echo 1; fi; }

# peer_write_config TAG [syntax|port]: the config, atomically replaced; TAG is the /tag body;
# "syntax" adds a line the parser refuses, "port" a second listener on api-1's port (taken).
peer_write_config() {
    local tag=$1 bad=${2:-} extra_listen="" broken=""
    if [[ $PEER == nginx ]]; then
        [[ $bad == port ]] && extra_listen="        listen 127.0.0.1:$PORT_API1;"
        [[ $bad == syntax ]] && broken="    broken_directive [unclosed"
        cat >"$PEER_CONF.tmp" <<EOF
worker_processes 2;
daemon off;
master_process on;
pid $PEER_DIR/nginx.pid;
error_log $PEER_DIR/error.log notice;
worker_shutdown_timeout ${DRAIN_TIMEOUT_S}s;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
$PEER_NGINX_TEMP_PATHS    upstream api {
        server 127.0.0.1:$PORT_API1 max_fails=3 fail_timeout=10s;
        server 127.0.0.1:$PORT_API2 max_fails=3 fail_timeout=10s;
        keepalive 32;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$PEER_PORT backlog=4096;
$extra_listen
        location = /tag { return 200 "$tag\n"; }
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }
    }
$broken
}
EOF
    else
        [[ $bad == port ]] && extra_listen="    bind 127.0.0.1:$PORT_API1"
        [[ $bad == syntax ]] && broken="    broken_directive [unclosed"
        cat >"$PEER_CONF.tmp" <<EOF
global
    nbthread 2
    maxconn 4096
    pidfile $PEER_DIR/haproxy.pid
    hard-stop-after ${DRAIN_TIMEOUT_S}s
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
    retries 1
    option redispatch 1
frontend fe
    bind 127.0.0.1:$PEER_PORT backlog 4096
$extra_listen
    http-request return status 200 content-type text/plain string "$tag\\n" if { path /tag }
    default_backend api
backend api
    balance roundrobin
    server api-1 127.0.0.1:$PORT_API1 check inter 2s fall 3 rise 2 observe layer4 error-limit 3 on-error mark-down
    server api-2 127.0.0.1:$PORT_API2 check inter 2s fall 3 rise 2 observe layer4 error-limit 3 on-error mark-down
$broken
EOF
    fi
    mv -f "$PEER_CONF.tmp" "$PEER_CONF"
}

peer_log() { if [[ $PEER == nginx ]]; then echo "$PEER_DIR/error.log"; else echo "$PEER_DIR/haproxy.log"; fi; }

# peer_start_master: starts a master on PEER_CONF in the background; PEER_PID.
peer_start_master() {
    if [[ $PEER == nginx ]]; then
        "$NGINX" -p "$PEER_DIR" -e "$PEER_DIR/error.log" -c "$PEER_CONF" </dev/null \
            >>"$PEER_DIR/stdout.log" 2>>"$PEER_DIR/stderr.log" &
    else
        "$HAPROXY" -W -db -f "$PEER_CONF" </dev/null >>"$PEER_DIR/haproxy.log" 2>&1 &
    fi
    PEER_PID=$!
    remember_pid "$PEER_PID"
}

# peer_workers: the serving workers (children of the master, not the old ones), by pid.
peer_workers() {
    local p
    alive "$PEER_PID" || return 0
    if [[ $PEER == nginx ]]; then
        # "nginx: worker process"; an old one is "nginx: worker process is shutting down".
        pgrep -P "$PEER_PID" -f 'worker process$' | sort -n || true
    else
        # One worker process; after a reload the newest child is the current one.
        p=$(ps --ppid "$PEER_PID" -o pid= --sort=start_time 2>/dev/null | tail -n 1 | tr -d ' ')
        [[ -n $p ]] && echo "$p"
    fi
    return 0
}

# peer_wait_serving SECONDS: /tag answers "tag $TAG" and the master has its workers, no old ones.
peer_wait_serving() {
    local secs=$1 start=$SECONDS rc=0
    wait_body "http://127.0.0.1:$PEER_PORT/tag" "tag $TAG" "$secs" "$PEER_PID" || rc=$?
    ((rc == 0)) || return "$rc"
    while ((SECONDS - start < secs)); do
        remember_children "$PEER_PID"
        (($(children_of "$PEER_PID" | wc -l) == $(peer_workers_n))) && (($(peer_workers | wc -l) == $(peer_workers_n))) && return 0
        sleep 0.1
    done
    return 1
}

peer_start() {
    local rc=0
    peer_start_master
    peer_wait_serving "$READY_TIMEOUT" || rc=$?
    ((rc == 0)) || { tail -n 30 "$(peer_log)" >&2; die "$PEER did not serve within ${READY_TIMEOUT}s (rc $rc)"; }
}

peer_settle() {
    peer_wait_serving "$SETTLE_S" && return 0
    warn "$PEER not settled ${SETTLE_S}s after the phase: $(ps --ppid "$PEER_PID" -o pid=,args= 2>/dev/null | tr '\n' ';')"
}

# peer_reload: what an operator's reload does; 0 when the command was accepted.
peer_reload() {
    if [[ $PEER == nginx ]]; then
        "$NGINX" -p "$PEER_DIR" -e "$PEER_DIR/cli.log" -c "$PEER_CONF" -s reload >>"$PEER_DIR/reloads.log" 2>&1
    else
        kill -USR2 "$PEER_PID"
    fi
}

# peer_reload_wait SECONDS: after a peer_reload, until /tag answers the new config (curl every
# 50 ms, a new connection each); 0 when it did within SECONDS.
peer_reload_wait() { wait_body "http://127.0.0.1:$PEER_PORT/tag" "tag $TAG" "$1" "$PEER_PID"; }

# peer_sample NAME SECONDS: proc-sample of the peer's processes in the background; SAMPLE_PID.
SAMPLE_PID=""
peer_sample() {
    local match=""
    [[ $PEER == nginx ]] && match="shutting down"
    "$PYTHON" "$HELPER" proc-sample --pid "$PEER_PID" --duration "$2" --old-match "$match" --out "$TMP/procs-$PEER-$1.json" &
    SAMPLE_PID=$!
    BG_PIDS+=("$SAMPLE_PID")
}
# procs_py FILE EXPR: EXPR with d = a proc-sample result ("?" when there is none).
procs_py() { "$PYTHON" -c "import json,sys; d = json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || echo "?"; }

# ---------------------------------------------------------------------------- phases
peer_phase_baseline() {
    local mode
    for mode in keepalive close; do
        log "$PEER baseline, $mode: ${PHASE_S}s"
        start_load "$PEER-baseline-$mode" "$mode"
        wait_load "$PEER-baseline-$mode"
        record "none ($mode)" "$PEER-baseline-$mode" "" null "baseline for the rows below"
    done
}

peer_reload_cmd() { if [[ $PEER == nginx ]]; then echo "nginx -s reload"; else echo "SIGUSR2 (master-worker)"; fi; }

peer_phase_reload() {
    local mode i n durs t0 bad
    for mode in keepalive close; do
        log "$PEER reload every 1 s, $mode: ${PHASE_S}s"
        start_load "$PEER-reload-$mode" "$mode"
        peer_sample "reload-$mode" "$((PHASE_S - 1))"
        durs="" bad=0 n=0
        for ((i = 1; i < PHASE_S; i++)); do
            sleep 1
            TAG=$((TAG + 1))
            peer_write_config "tag $TAG"
            t0=$(now)
            if peer_reload && peer_reload_wait 10; then durs+="$(ms_since "$t0"),"; else bad=$((bad + 1)); durs+="null,"; fi
            remember_children "$PEER_PID"
            n=$((n + 1))
        done
        wait "$SAMPLE_PID" || true
        wait_load "$PEER-reload-$mode"
        record "$(peer_reload_cmd) every 1 s ($mode)" "$PEER-reload-$mode" "" "[${durs%,}]" \
            "$n reloads, $bad not serving the new config within 10 s; most processes at once: $(procs_py "$TMP/procs-$PEER-reload-$mode.json" 'd["max_procs"]') (master included); recovered = median / max reload command -> first answer of the new config (curl every 50 ms)"
        peer_settle
    done
}

# As many reloads as fit in STORM_S, each waited for until the new config answers (gatewayctl
# reload returns when the new generation serves), with the same held long requests.
peer_phase_storm() {
    local n=0 bad=0 t0 durs="" end saved=$PHASE_S f old
    log "$PEER reload storm: ${STORM_S}s of back-to-back $(peer_reload_cmd), $HOLDERS holders of /slow?ms=$HOLD_MS"
    PHASE_S=$((STORM_S + 2))
    start_load "$PEER-storm" keepalive --hold "$HOLDERS" --hold-path "/slow?ms=$HOLD_MS" \
        --hold-spread "$(awk -v ms="$HOLD_MS" 'BEGIN{print ms / 1000}')"
    PHASE_S=$saved
    peer_sample storm "$STORM_S"
    end=$((SECONDS + STORM_S))
    while ((SECONDS < end)); do
        TAG=$((TAG + 1))
        peer_write_config "tag $TAG"
        t0=$(now)
        if peer_reload && peer_reload_wait 10; then durs+="$(ms_since "$t0"),"; else bad=$((bad + 1)); durs+="null,"; fi
        n=$((n + 1))
        remember_children "$PEER_PID"
    done
    wait "$SAMPLE_PID" || true
    wait_load "$PEER-storm"
    f=$TMP/procs-$PEER-storm.json
    if [[ $PEER == nginx ]]; then
        old="most old workers alive at once ('nginx: worker process is shutting down'): $(procs_py "$f" 'd["max_old"]')"
    else
        old="most old worker processes alive at once: $(procs_py "$f" 'd["max_procs"] - 2') (processes minus master and the current worker)"
    fi
    record "reload storm ($n reloads in ${STORM_S} s, keep-alive)" "$PEER-storm" "" "[${durs%,}]" \
        "$n reloads ($(awk -v n="$n" -v s="$STORM_S" 'BEGIN{printf "%.0f", n / s}')/s), $bad not serving the new config within 10 s; $old; most processes at once: $(procs_py "$f" 'd["max_procs"]'); peak PSS sum of its processes: $(procs_py "$f" '"%.1f MiB (RSS sum %.1f)" % (d["max_pss_kb"] / 1024, d["max_rss_kb"] / 1024)') (gatewayd's storm: $(procs_py "$TMP/procs-gatewayd-storm.json" '"%.1f MiB (RSS sum %.1f), %d processes" % (d["max_pss_kb"] / 1024, d["max_rss_kb"] / 1024, d["max_procs"])')). recovered = median / max reload -> new config answers."
    peer_settle
}

# Reloads to configs that must fail: a syntax error, a listener on a taken port (api-1's),
# one a second as for gatewayd. The peer's reload is asynchronous: after each one the script
# waits (at most 5 s) for the master to log its failure before it writes the next config, or
# the master could read the next file instead (both retry a failed bind for about 2.5 s).
peer_phase_invalid() {
    local n=0 cli_refused=0 failed=0 before after pattern c0 c1 t_end end kind
    log "$PEER invalid reloads, keep-alive: ${PHASE_S}s"
    before=$(peer_workers | tr '\n' ' ')
    if [[ $PEER == nginx ]]; then pattern='still could not bind()'; else pattern='Loading failure'; fi
    start_load "$PEER-invalid" keepalive
    end=$((SECONDS + PHASE_S - 1))
    while ((SECONDS < end)); do
        sleep 1
        n=$((n + 1))
        if ((n % 2)); then kind=syntax; else kind=port; fi
        peer_write_config "tag $TAG" "$kind"
        c0=$(grep -c "$pattern" "$(peer_log)" || true)
        if ! peer_reload; then cli_refused=$((cli_refused + 1)); continue; fi
        t_end=$((SECONDS + 5))
        while ((SECONDS < t_end)); do
            c1=$(grep -c "$pattern" "$(peer_log)" || true)
            ((c1 > c0)) && { failed=$((failed + 1)); break; }
            sleep 0.05
        done
    done
    peer_write_config "tag $TAG"
    wait_load "$PEER-invalid"
    after=$(peer_workers | tr '\n' ' ')
    local how
    if [[ $PEER == nginx ]]; then
        how="$cli_refused refused by \`nginx -s reload\` itself (exit 1: it parses the file before it signals: the syntax errors), $failed failed in the master ('still could not bind()' after 2.5 s of retries: the port in use; it keeps the old config)"
    else
        how="$failed logged 'Loading failure!' by the master (it stays, in wait mode, with the old worker; the bind failures after about 2.5 s of retries)"
    fi
    record "reload to an invalid config ($n, keep-alive)" "$PEER-invalid" "" null \
        "$n reloads, half with a syntax error, half with a listener on a port in use: $how; serving workers ${before% } before, ${after% } after"
}

# nginx: SIGKILL a serving worker every KILL_EVERY s; recovered: kill -> the master has forked a
# replacement. haproxy: its one worker; the master then exits (exit-on-failure), and a new one
# is started at once (Debian's unit: Restart=always); recovered: kill -> first 200.
peer_phase_worker_kill() {
    local mode kp rec faults note t0 i
    for mode in keepalive close; do
        log "$PEER SIGKILL a serving worker every ${KILL_EVERY}s, $mode: ${PHASE_S}s"
        start_load "$PEER-wkill-$mode" "$mode"
        if [[ $PEER == nginx ]]; then
            "$PYTHON" "$HELPER" kill-children --pid "$PEER_PID" --match "worker process" --skip "shutting down" \
                --duration "$((PHASE_S - 1))" --every "$KILL_EVERY" --out "$TMP/$PEER-wkill-$mode.json" &
            kp=$!
            BG_PIDS+=("$kp")
            while alive "$kp"; do remember_children "$PEER_PID"; sleep 0.5; done
            wait "$kp" || warn "kill-children exited with status $?"
            read -r faults rec note < <("$PYTHON" -c 'import json,sys
k = [x for x in json.load(open(sys.argv[1]))["kills"] if "t" in x]
print(",".join(str(x["t"]) for x in k) or "-", json.dumps([x["ms"] for x in k]).replace(" ", ""),
      "%d kills; the master forked a replacement each time" % len(k))' "$TMP/$PEER-wkill-$mode.json")
            note+="; recovered = kill -> the master has a new worker process, median / max."
        else
            faults="" rec="" note=""
            local end=$((SECONDS + PHASE_S - 1)) kills=0 gone=0 starts=0 w
            while ((SECONDS + KILL_EVERY < end)); do
                sleep "$KILL_EVERY"
                w=$(peer_workers)
                [[ -n $w ]] || break
                t0=$(now)
                kill -KILL "$w"
                kills=$((kills + 1))
                faults+="$t0,"
                for ((i = 0; i < 50; i++)); do alive "$PEER_PID" || break; sleep 0.1; done
                alive "$PEER_PID" && { rec+="null,"; continue; }
                wait "$PEER_PID" 2>/dev/null || true
                gone=$((gone + 1))
                for ((i = 1; i <= 50; i++)); do
                    starts=$((starts + 1))
                    peer_start_master
                    if wait_body "http://127.0.0.1:$PEER_PORT/tag" "tag $TAG" "$READY_TIMEOUT" "$PEER_PID"; then break; fi
                    sleep 0.1
                done
                rec+="$(ms_since "$t0"),"
                remember_children "$PEER_PID"
            done
            faults=${faults%,}
            rec="[${rec%,}]"
            note="$kills kills of its one worker process (nbthread 2); the master exited each time ($gone of $kills: exit-on-failure kills everything), and a new haproxy was started at once ($starts starts, as Restart=always would); recovered = kill -> first 200 from the new haproxy."
        fi
        [[ $faults == - ]] && faults=""
        wait_load "$PEER-wkill-$mode"
        record "SIGKILL of a serving worker every ${KILL_EVERY} s ($mode)" "$PEER-wkill-$mode" "${faults//,/ }" "$rec" "$note"
        peer_settle
    done
}

peer_phase_upstream_kill() {
    local pid t0 third=$((PHASE_S / 3))
    log "$PEER SIGKILL of upstream api-1, keep-alive: ${PHASE_S}s"
    start_load "$PEER-upstream" keepalive
    sleep "$third"
    pid=${UPSTREAM_PID[api-1]}
    alive "$pid" || die "api-1 (pid $pid) is not running"
    t0=$(now)
    kill -KILL "$pid"
    wait_load "$PEER-upstream"
    wait "$pid" 2>/dev/null || true
    start_upstream api-1 "$PORT_API1"
    record "SIGKILL of 1 of 2 upstream endpoints (keep-alive)" "$PEER-upstream" "$t0" '"client"' \
        "recovered = kill -> the client's last failed request"
}

# SIGKILL of the master a third into the phase, and a new master started at once, as chaos.sh
# does for gatewayd. nginx's workers do not notice their master's death and keep serving,
# holding the port: the new master cannot bind (it retries for 2.5 s, then exits); the orphans
# are stopped after the phase and a fresh nginx started for the next one.
peer_phase_master_kill() {
    local mode t0 old rec tries note orphans rc p
    for mode in keepalive close; do
        log "$PEER SIGKILL of the master, then a new master, $mode: ${PHASE_S}s"
        start_load "$PEER-mkill-$mode" "$mode"
        sleep "$((PHASE_S / 3))"
        remember_children "$PEER_PID"
        orphans=$(children_of "$PEER_PID" | tr '\n' ' ')
        old=$PEER_PID
        t0=$(now)
        kill -KILL "$old"
        wait "$old" 2>/dev/null || true
        rec=null
        if [[ $PEER == nginx ]]; then
            peer_start_master
            rc=0
            wait "$PEER_PID" || rc=$?
            tries=1
            note="the old workers ($orphans) kept serving without a master (orphans, re-parented to init: no reload, no respawn, no graceful stop through the master); the new master exited with status $rc ($(grep -c 'bind() to .* failed' "$PEER_DIR/error.log") bind() failures in its log so far$(grep -q 'still could not bind()' "$PEER_DIR/error.log" && echo ", then 'still could not bind()'")). recovered: nothing stopped for clients; the orphans were stopped (SIGQUIT) after the phase and a fresh nginx started"
        else
            for ((tries = 1; tries <= 50; tries++)); do
                peer_start_master
                if wait_body "http://127.0.0.1:$PEER_PORT/tag" "tag $TAG" "$READY_TIMEOUT" "$PEER_PID"; then
                    rec="[$(ms_since "$t0")]"
                    break
                fi
                sleep 0.1
            done
            note="the old worker exited with its master; $tries master start(s); recovered = kill -> first 200 from the new master."
        fi
        wait_load "$PEER-mkill-$mode"
        record "SIGKILL of the master, new master started at once ($mode)" "$PEER-mkill-$mode" "$t0" "$rec" "$note"
        if [[ $PEER == nginx ]]; then
            for p in $orphans; do kill -QUIT "$p" 2>/dev/null || true; done
            for p in $orphans; do stop_process "$p" QUIT 15; done
            peer_start
        else
            remember_children "$PEER_PID"
            peer_settle
        fi
    done
}

peer_phase_sigstop() {
    local pid t0 during victim conns fate
    log "$PEER SIGSTOP of a serving worker for ${STOP_S}s, keep-alive: ${PHASE_S}s"
    start_load "$PEER-sigstop" keepalive
    sleep "$((PHASE_S / 4))"
    # The worker with the most client connections on the listener (ss).
    victim=$(ss -Htnp state established "( sport = :$PEER_PORT )" 2>/dev/null | grep -o 'pid=[0-9]*' | sort | uniq -c |
        sort -rn | head -n 1 | awk '{sub("pid=", "", $2); print $2, $1}')
    read -r pid conns <<<"$victim"
    [[ -n $pid ]] || { pid=$(peer_workers | head -n 1); conns="?"; }
    [[ -n $pid ]] || die "$PEER: no serving worker"
    t0=$(now)
    STOPPED_PID=$pid
    kill -STOP "$pid"
    sleep "$((STOP_S / 2))"
    during="$(ps -o stat= -p "$pid" | tr -d ' ') (state), master's children: $(children_of "$PEER_PID" | tr '\n' ' ')"
    sleep "$((STOP_S - STOP_S / 2))"
    fate="still alive at the SIGCONT (no watchdog)"
    if alive "$pid"; then kill -CONT "$pid" 2>/dev/null || true; else fate="gone before the SIGCONT"; fi
    STOPPED_PID=""
    wait_load "$PEER-sigstop"
    record "SIGSTOP of a serving worker for ${STOP_S} s (keep-alive)" "$PEER-sigstop" "$t0" '"client"' \
        "the stopped worker (pid $pid) had $conns client connections and was $fate; $((STOP_S / 2)) s into the stop: $during; recovered = SIGSTOP -> the client's last failed request"
}

# run_peer NAME: every wanted phase against the peer; its rows go to $TMP/phases-NAME.jsonl.
run_peer() {
    local phase
    PEER=$1
    PEER_DIR=$TMP/$PEER
    mkdir -p "$PEER_DIR"
    if [[ $PEER == nginx ]]; then PEER_PORT=$PORT_NGINX; PEER_CONF=$PEER_DIR/nginx.conf; else PEER_PORT=$PORT_HAPROXY; PEER_CONF=$PEER_DIR/haproxy.cfg; fi
    # nginx's compiled-in temp paths are under /var/lib/nginx: the temp dir's instead, for
    # every module this nginx has.
    PEER_NGINX_TEMP_PATHS=""
    if [[ $PEER == nginx ]]; then
        local t build
        build=$("$NGINX" -V 2>&1 || true)
        for t in client_body proxy fastcgi uwsgi scgi; do
            [[ $build == *"--without-http_${t}_module"* ]] && continue
            PEER_NGINX_TEMP_PATHS+="    ${t}_temp_path $PEER_DIR/${t}_temp;"$'\n'
        done
    fi
    PHASES=$TMP/phases-$PEER.jsonl
    : >"$PHASES"
    LOAD_PORT=$PEER_PORT
    peer_write_config "tag $TAG"
    if [[ $PEER == nginx ]]; then
        "$NGINX" -t -q -p "$PEER_DIR" -e "$PEER_DIR/error.log" -c "$PEER_CONF" >&2 || die "nginx -t refused $PEER_CONF"
    else
        "$HAPROXY" -c -q -f "$PEER_CONF" >&2 || die "haproxy -c refused $PEER_CONF"
    fi
    log "$PEER on 127.0.0.1:$PEER_PORT; config $PEER_CONF"
    peer_start
    PEER_T_START=$SECONDS
    PEER_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    for phase in $ALL_PHASES; do
        wants "$phase" || continue
        alive "$PEER_PID" || die "$PEER (pid $PEER_PID) is gone before the $phase phase"
        "peer_phase_${phase//-/_}"
    done
    PEER_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
    PEER_SECONDS=$((SECONDS - PEER_T_START))
    # The report reads the log up to here, not the lines of the stop below.
    PEER_LOG_LINES=$(wc -l <"$(peer_log)")
    stop_process "$PEER_PID" TERM 10
    PEER_PID=""
}
