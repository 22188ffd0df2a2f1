# shellcheck shell=bash
# lib.sh: helpers shared by the benchmark scripts (proxy-throughput.sh, reload-under-load.sh,
# chaos.sh). Sourced, never run. It defines functions and a few variables and starts nothing:
# each script keeps its own cleanup() and traps, and calls lib_cleanup_tail from it.
#
# Variables a script may read or set:
#   REPO_ROOT     the repository (set here)
#   TMP           the script's temp dir (the script creates it; lib_cleanup_tail removes it)
#   RESULTS_DIR   where lib_cleanup_tail copies TMP (empty: nowhere)
#   KEEP_TMP      1: lib_cleanup_tail keeps TMP
#   STARTED_PIDS  every process the script started or saw its servers start; killed at exit

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=${TMP:-}
KEEP_TMP=${KEEP_TMP:-0}
declare -a STARTED_PIDS=()

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------- processes
children_of() { ps --ppid "$1" -o pid= 2>/dev/null | tr -d ' ' | grep -v '^$' || true; }
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# Workers of a master are its children: remembered, so that they are killed at exit even if
# the master dies first and they are re-parented away from it.
remember_children() {
    local c
    for c in $(children_of "$1"); do STARTED_PIDS+=("$c"); done
}
remember_pid() { STARTED_PIDS+=("$@"); }

# stop_process PID SIGNAL SECONDS: send SIGNAL (the server's graceful stop), wait at most
# SECONDS, then SIGKILL it and its children. Reaps it when it is our child.
stop_process() {
    local pid=$1 sig=$2 secs=$3 c i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    remember_children "$pid"
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || break
        remember_children "$pid"
        sleep 0.1
    done
    if alive "$pid"; then
        warn "pid $pid still running ${secs}s after SIG$sig: SIGKILL"
        for c in $(children_of "$pid"); do kill -KILL "$c" 2>/dev/null || true; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# lib_cleanup_tail: the end of every script's cleanup(): SIGKILL whatever remembered process
# is still there, copy TMP to RESULTS_DIR, remove TMP (unless KEEP_TMP=1).
lib_cleanup_tail() {
    local p
    for p in "${STARTED_PIDS[@]}"; do
        alive "$p" && kill -KILL "$p" 2>/dev/null
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ -n ${RESULTS_DIR:-} ]]; then
            mkdir -p "$RESULTS_DIR" && cp -r "$TMP"/. "$RESULTS_DIR"/ 2>/dev/null
        fi
        if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    return 0
}

# ---------------------------------------------------------------------------- packages
# ensure_packages CMD:PACKAGE ...: installs (apt-get, Debian 12, as root) the PACKAGE of every
# CMD that is not on the PATH nor in /usr/sbin. CMD "-" means: check PACKAGE with dpkg (a
# library such as libsystemd-dev has no command). The packages' services are not started
# (policy-rc.d): the nginx and haproxy packages would otherwise start system servers on
# ports 80 and 8080.
ensure_packages() {
    local missing=() spec cmd pkg policy_created=0 ok=1
    for spec in "$@"; do
        cmd=${spec%%:*} pkg=${spec#*:}
        if [[ $cmd == - ]]; then
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
        elif ! command -v "$cmd" >/dev/null && [[ ! -x /usr/sbin/$cmd ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (run as root, or apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]}, and no apt-get to install them"
    log "installing: ${missing[*]}"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_created=1
    fi
    apt-get update -qq || ok=0
    if ((ok)); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || {
            # Older Debian: nginx-light was the small flavour.
            local alt=("${missing[@]/#nginx/nginx-light}")
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${alt[@]}" >/dev/null || ok=0
        }
    fi
    ((policy_created)) && rm -f /usr/sbin/policy-rc.d
    ((ok)) || die "apt-get could not install: ${missing[*]}"
}

# ---------------------------------------------------------------------------- nginx
# stop_server SERVER: the server's graceful stop signal (nginx: QUIT, haproxy: USR1, the rest
# TERM), then SIGKILL after 10 s (idle servers stop in milliseconds; still there after 10 s
# means stuck). The pid is the caller's PID[SERVER], forgotten afterwards.
stop_server() {
    local server=$1 sig=TERM
    case $server in
        origin | nginx) sig=QUIT ;;
        haproxy) sig=USR1 ;;
    esac
    stop_process "${PID[$server]:-}" "$sig" 10
    # shellcheck disable=SC2004  # PID is the caller's associative array, not an indexed one
    PID[$server]=""
}

# nginx_temp_paths NGINX DIR: the *_temp_path lines for an nginx.conf's http block, under DIR
# (the compiled-in ones are under /var/lib/nginx), for every module this nginx has.
nginx_temp_paths() {
    local build t
    build=$("$1" -V 2>&1 || true)
    for t in client_body proxy fastcgi uwsgi scgi; do
        [[ $build == *"--without-http_${t}_module"* ]] && continue
        printf '    %s_temp_path %s/%s_temp;\n' "$t" "$2" "$t"
    done
}

# ---------------------------------------------------------------------------- build
# build_gatewayd SCRATCH: `make release` (the Makefile's static release build, its deps
# included) with its scratch path at SCRATCH; a no-op when up to date. Sets GATEWAYD_BIN and
# GATEWAYCTL_BIN to the binaries built, unless the caller had set them.
build_gatewayd() {
    local scratch=$1
    command -v swift >/dev/null || die "swift is not on the PATH (or set GATEWAYD_BIN and GATEWAYCTL_BIN)"
    log "building gatewayd: make release SCRATCH=$scratch"
    make -C "$REPO_ROOT" release SCRATCH="$scratch" >&2 || die "make release SCRATCH=$scratch failed (output above)"
    GATEWAYD_BIN=${GATEWAYD_BIN:-$scratch/release/gatewayd}
    GATEWAYCTL_BIN=${GATEWAYCTL_BIN:-$scratch/release/gatewayctl}
}

# ---------------------------------------------------------------------------- wrk
# to_ms LATENCY: a wrk latency (812.00us, 1.23ms, 2.01s, 1.5m) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0;
        else if (v ~ /m$/) printf "%.3f", v * 60000; else if (v ~ /s$/) printf "%.3f", v * 1000; else print "?" }'
}

# ---------------------------------------------------------------------------- ports
port_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}
PORTS_TAKEN=" "
# pick_port VAR PREFERRED: sets VAR to the first free port on 127.0.0.1 from PREFERRED that
# no earlier pick_port took. Not meant for $(...): it must update PORTS_TAKEN in this shell.
pick_port() {
    local var=$1 p
    for ((p = $2; p < $2 + 200; p++)); do
        [[ $PORTS_TAKEN == *" $p "* ]] && continue
        if port_free "$p"; then
            PORTS_TAKEN+="$p "
            printf -v "$var" '%s' "$p"
            return 0
        fi
    done
    die "no free port on 127.0.0.1 from $2 to $(($2 + 199))"
}

# wait_body URL EXPECTED SECONDS [PID]: poll URL with curl (a new connection each time, every
# 50 ms) until it answers 200 with the body EXPECTED. Returns 0, or 1 after SECONDS, or 2 as
# soon as PID (the server) is gone. Never a fixed sleep: a server is used once it answers.
wait_body() {
    local url=$1 expected=$2 secs=$3 pid=${4:-} start=$SECONDS got
    while ((SECONDS - start < secs)); do
        [[ -z $pid ]] || alive "$pid" || return 2
        got=$(curl -fsS --max-time 2 -H 'Connection: close' "$url" 2>/dev/null || true)
        [[ $got == "$expected" ]] && return 0
        sleep 0.05
    done
    return 1
}
