#!/usr/bin/env bash
# transfer-and-memory.sh: gatewayd and nginx 1.22 as reverse proxies in front of the same
# origin (2 workers each, as proxy-throughput.sh), side by side in one run, measured for:
#
#   1. transfers: download (GET of a static file the origin nginx serves) and upload (POST of a
#      body a small Python sink reads whole and counts) of 1 MiB and 100 MiB, one curl, one
#      connection per transfer, repeated (20x and 3x); median MB/s, and the workers' RSS before,
#      at the peak (sampled every 50 ms) and after, to show that no body is held whole.
#   2. idle keep-alive connections: 10,000 client connections, each sends one request, reads its
#      answer and stays open; the workers' PSS and RSS (smaps_rollup) before and with them open,
#      and the KiB each connection costs.
#   3. memory at rest: RSS, PSS and private memory of every process of each server (gatewayd:
#      master, workers and its pre-started spare workers, listed apart; nginx: master, workers).
#
# gatewayd and nginx run at the same time (the transfers and the idle connections go to one of
# them at a time). Everything listens on 127.0.0.1 only; everything started here is stopped on
# exit, Ctrl-C and SIGTERM included, and the whole run is bounded (--max-seconds).
#
# Usage: benchmarks/transfer-and-memory.sh [--quick] [options]; --help for the options.
set -euo pipefail
# shellcheck source=benchmarks/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
Usage: benchmarks/transfer-and-memory.sh [options]

  --small-runs N      transfers of the small body per direction and server (default 20)
  --large-runs N      transfers of the large body per direction and server (default 3)
  --small-mib N       the small body, MiB (default 1)
  --large-mib N       the large body, MiB (default 100)
  --idle-conns N      idle keep-alive client connections (default 10000; 0: skip)
  --nginx-request-buffering on|off
                      nginx's proxy_request_buffering (default off: the upload streams to the
                      origin as gatewayd's does; on, nginx's default, spools the whole body
                      to a temp file first)
  --max-seconds S     stop everything after S seconds (default 900)
  --quick             a short check of the script: 3x 1 MiB, 1x 20 MiB, 1000 idle connections
  -h, --help          this help

Environment: GATEWAYD_BIN (default .build/release/gatewayd, built with `make release` when
missing) and GATEWAYCTL_BIN (default: gatewayctl next to GATEWAYD_BIN; it tells serving
workers from spares); GATEWAYD_ALT_BIN: a second gatewayd binary (e.g. a dead-stripped
build) whose memory at rest and file size are reported next to GATEWAYD_BIN's, after a smoke
request through it; RESULTS_DIR (default benchmarks/results/transfer-and-memory-<UTC time>;
empty: none); KEEP_TMP=1 keeps the temp directory.
EOF
}

# ---------------------------------------------------------------------------- options
SMALL_RUNS=20
LARGE_RUNS=3
SMALL_MIB=1
LARGE_MIB=100
IDLE_CONNS=10000
NGINX_REQUEST_BUFFERING=off
MAX_SECONDS=900
WORKERS=2            # nginx worker_processes, gatewayd workers
KEEPALIVE=32         # idle upstream connections per endpoint (nginx: per worker)
IDLE_TIMEOUT=300     # seconds a client keep-alive connection may stay idle, both servers
READY_TIMEOUT=30     # seconds for a server to answer after it starts
NOFILE=65536         # RLIMIT_NOFILE for the servers and the idle client
BODY="hello world!"  # + "\n": small.txt, the body of the readiness probes and the idle requests

while (($#)); do
    case $1 in
        --small-runs) SMALL_RUNS=${2:?--small-runs needs a value}; shift 2 ;;
        --large-runs) LARGE_RUNS=${2:?--large-runs needs a value}; shift 2 ;;
        --small-mib) SMALL_MIB=${2:?--small-mib needs a value}; shift 2 ;;
        --large-mib) LARGE_MIB=${2:?--large-mib needs a value}; shift 2 ;;
        --idle-conns) IDLE_CONNS=${2:?--idle-conns needs a value}; shift 2 ;;
        --nginx-request-buffering) NGINX_REQUEST_BUFFERING=${2:?--nginx-request-buffering needs on or off}; shift 2 ;;
        --max-seconds) MAX_SECONDS=${2:?--max-seconds needs a value}; shift 2 ;;
        --quick) SMALL_RUNS=3; LARGE_RUNS=1; LARGE_MIB=20; IDLE_CONNS=1000; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
for v in SMALL_RUNS LARGE_RUNS SMALL_MIB LARGE_MIB MAX_SECONDS; do
    opt=${v,,}
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${opt//_/-} must be a positive integer, got '${!v}'"
done
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "--idle-conns must be a whole number, got '$IDLE_CONNS'"
[[ $NGINX_REQUEST_BUFFERING == on || $NGINX_REQUEST_BUFFERING == off ]] ||
    die "--nginx-request-buffering must be on or off, got '$NGINX_REQUEST_BUFFERING'"

RESULTS_DIR=${RESULTS_DIR-$REPO_ROOT/benchmarks/results/transfer-and-memory-$(date -u +%Y%m%dT%H%M%SZ)}
SERVERS="gatewayd nginx"

# ---------------------------------------------------------------------------- state and cleanup
declare -A PID=()            # server -> master pid
HELPER_PIDS=()               # the sink, samplers, the idle client
WATCHDOG_PID=""

# shellcheck disable=SC2317  # reached through the trap below
cleanup() {
    local rc=$? s p
    set +e
    trap - EXIT INT TERM
    for p in "${HELPER_PIDS[@]}"; do
        alive "$p" && kill -TERM "$p" 2>/dev/null
    done
    for p in "${HELPER_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for s in gatewayd-alt gatewayd nginx origin sink; do stop_server "$s"; done
    if alive "$WATCHDOG_PID"; then kill -TERM "$WATCHDOG_PID" 2>/dev/null; wait "$WATCHDOG_PID" 2>/dev/null; fi
    # Not worth keeping: the binaries' copies and the bodies (random bytes).
    [[ -n $TMP && -d $TMP ]] && rm -rf "${TMP:?}/bin" "${TMP:?}/origin/www"/*.bin
    lib_cleanup_tail
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The bound on the whole run: SIGTERM to this script (its cleanup stops everything) after
# MAX_SECONDS. The watchdog's own sleep goes with it when the script ends first.
# shellcheck disable=SC2317,SC2329  # its trap is reached through a signal
watchdog() {
    local secs=$1 target=$2 s
    sleep "$secs" &
    s=$!
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    wait "$s"
    printf 'ERROR: --max-seconds %s reached: stopping\n' "$secs" >&2
    kill -TERM "$target" 2>/dev/null
}
watchdog "$MAX_SECONDS" $$ &
WATCHDOG_PID=$!

# ---------------------------------------------------------------------------- packages and build
ensure_packages curl:curl python3:python3 ps:procps nginx:nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ -z ${GATEWAYD_BIN:-} ]]; then
    GATEWAYD_BIN=$REPO_ROOT/.build/release/gatewayd
    [[ -x $GATEWAYD_BIN ]] || { GATEWAYD_BIN=""; build_gatewayd "$REPO_ROOT/.build"; }
fi
[[ -x $GATEWAYD_BIN ]] || die "GATEWAYD_BIN=$GATEWAYD_BIN is not an executable"
GATEWAYCTL_BIN=${GATEWAYCTL_BIN:-$(dirname "$GATEWAYD_BIN")/gatewayctl}
[[ -x $GATEWAYCTL_BIN ]] || die "GATEWAYCTL_BIN=$GATEWAYCTL_BIN is not an executable (it lists the spare workers)"
GATEWAYD_ALT_BIN=${GATEWAYD_ALT_BIN:-}
[[ -z $GATEWAYD_ALT_BIN || -x $GATEWAYD_ALT_BIN ]] || die "GATEWAYD_ALT_BIN=$GATEWAYD_ALT_BIN is not an executable"
[[ -n $GATEWAYD_ALT_BIN ]] && SERVERS+=" gatewayd-alt"

# Open files: 10,000 client connections in one client process, and as many (plus the upstream
# ones) in one worker if it happens to accept them all. The servers inherit the limit (nginx
# gets worker_rlimit_nofile too; gatewayd has no connection limit of its own, only this).
# Raising the hard limit needs CAP_SYS_RESOURCE (a container's root may lack it): then the
# hard limit it is, which is enough as long as it exceeds the idle connections.
if ! ulimit -n "$NOFILE" 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    log "open files limit: $(ulimit -n) (the hard limit; $NOFILE could not be set)"
fi
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
if ((IDLE_CONNS + 1000 > NOFILE)); then
    die "--idle-conns $IDLE_CONNS needs an open files limit of at least $((IDLE_CONNS + 1000)), it is $NOFILE"
fi

TMP=$(mktemp -d /tmp/transfer-and-memory.XXXXXX)
chmod 755 "$TMP"

# Private copies of the binaries: another build replacing GATEWAYD_BIN during the run does not
# touch the processes measured, and the proxies' PSS does not depend on which other processes
# (tests, other benchmarks, the origin nginx) map the same file.
mkdir -p "$TMP/bin"
cp "$GATEWAYD_BIN" "$TMP/bin/gatewayd"
[[ -n $GATEWAYD_ALT_BIN ]] && cp "$GATEWAYD_ALT_BIN" "$TMP/bin/gatewayd-alt"
cp "$NGINX" "$TMP/bin/nginx-origin"
declare -A BIN=([gatewayd]=$TMP/bin/gatewayd [gatewayd-alt]=$TMP/bin/gatewayd-alt [nginx]=$NGINX [origin]=$TMP/bin/nginx-origin)

# ---------------------------------------------------------------------------- ports
declare -A PORT=()
port=""
for s in gatewayd nginx gatewayd-alt origin sink; do
    case $s in gatewayd) p=18280 ;; nginx) p=18281 ;; gatewayd-alt) p=18282 ;; origin) p=18290 ;; sink) p=18291 ;; esac
    pick_port port "$p"
    PORT[$s]=$port
done
url_of() { echo "http://127.0.0.1:${PORT[$1]}"; }

# ---------------------------------------------------------------------------- helper (Python)
HELPER=$TMP/helper.py
cat >"$HELPER" <<'PYEOF'
"""transfer-and-memory.sh's helper: the upload sink, the idle client, the RSS sampler, stats."""
import asyncio, json, os, resource, signal, socket, statistics, sys, threading, time


def sink(port):
    """HTTP/1.1 upload sink: reads every request body whole (Content-Length or chunked), counts
    it, answers 200 "received N" and keeps the connection. GET /ready answers "ok"."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)

    def serve(conn):
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                received = 0
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in pending:
                            data = conn.recv(65536)
                            if not data:
                                return
                            pending += data
                        size_line, _, pending = pending.partition(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        need = size + 2
                        while len(pending) < need:
                            data = conn.recv(max(65536, need - len(pending)))
                            if not data:
                                return
                            pending += data
                        pending = pending[need:]
                        received += size
                        if size == 0:
                            break
                else:
                    left = int(headers.get("content-length", "0"))
                    take = min(left, len(pending))
                    pending, left, received = pending[take:], left - take, take
                    while left > 0:
                        n = conn.recv_into(view, min(left, len(buf)))
                        if n == 0:
                            return
                        left -= n
                        received += n
                body = b"ok\n" if target == "/ready" else b"received %d\n" % received
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()

    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def idle(port, path, conns, concurrency, ready_file, hold_file, max_seconds):
    """Opens CONNS connections (CONCURRENCY at a time), one request each, keeps them open; writes
    READY_FILE (JSON) once all are done, holds them while HOLD_FILE exists (at most MAX_SECONDS),
    then counts those the server closed meanwhile and closes them all."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, conns + 1024)), hard))
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-client\r\n\r\n" % path).encode()
    opened, errors = [], {}

    async def one(sem):
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            except Exception as e:  # noqa: BLE001 - every failure is counted by kind
                errors["connect " + type(e).__name__] = errors.get("connect " + type(e).__name__, 0) + 1
                return
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                status = head.split(b" ", 2)[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await asyncio.wait_for(reader.readexactly(length), 10)
                if status != b"200":
                    errors["status " + status.decode()] = errors.get("status " + status.decode(), 0) + 1
                opened.append((reader, writer))
            except Exception as e:  # noqa: BLE001
                errors["request " + type(e).__name__] = errors.get("request " + type(e).__name__, 0) + 1
                writer.close()

    async def main():
        t0 = time.monotonic()
        sem = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(one(sem) for _ in range(conns)))
        report = {"requested": conns, "open": len(opened), "errors": errors,
                  "seconds": round(time.monotonic() - t0, 2)}
        with open(ready_file + ".tmp", "w") as f:
            json.dump(report, f)
        os.replace(ready_file + ".tmp", ready_file)
        deadline = time.monotonic() + max_seconds
        while os.path.exists(hold_file) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0)
        report["closed_by_server"] = sum(1 for r, _ in opened if r.at_eof())
        for _, w in opened:
            w.close()
        with open(ready_file + ".tmp", "w") as f:
            json.dump(report, f)
        os.replace(ready_file + ".tmp", ready_file)

    asyncio.run(main())


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(out, interval, pids):
    """The largest sum of the PIDS' VmRSS seen, sampled every INTERVAL seconds until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    peak = -1
    while not stop:
        now = sum(rss_kib(p) for p in pids)
        if now > peak:  # written as it grows: the file is there from the first sample on
            peak = now
            with open(out + ".tmp", "w") as f:
                f.write("%d\n" % peak)
            os.replace(out + ".tmp", out)
        time.sleep(interval)


def stats(path, expect_bytes):
    """Lines "code bytes speed seconds" (curl -w): ok count, then median, min and max MB/s and
    the median seconds of the transfers that answered 200 with EXPECT_BYTES."""
    ok, bad = [], 0
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 4 and p[0] == "200" and int(float(p[1])) == expect_bytes:
                ok.append((float(p[2]) / 1e6, float(p[3])))
            else:
                bad += 1
    if not ok:
        print("0 %d - - - -" % bad)
        return
    mbs = [s for s, _ in ok]
    print("%d %d %.0f %.0f %.0f %.3f" % (len(ok), bad, statistics.median(mbs), min(mbs), max(mbs),
                                         statistics.median(t for _, t in ok)))


def gw_roles(path):
    """gatewayctl status --json -> "worker PID" and "spare PID" lines."""
    with open(path) as f:
        status = json.load(f)
    for gen in status.get("generations", []):
        if gen.get("state") == "serving":
            for w in gen.get("workers", []):
                print("worker", w["pid"])
    for pid in status.get("spare_workers", []):
        print("spare", pid)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sink":
        sink(int(args[0]))
    elif cmd == "idle":
        idle(int(args[0]), args[1], int(args[2]), int(args[3]), args[4], args[5], float(args[6]))
    elif cmd == "sample":
        sample(args[0], float(args[1]), [int(p) for p in args[2:]])
    elif cmd == "stats":
        stats(args[0], int(args[1]))
    elif cmd == "gw-roles":
        gw_roles(args[0])
    else:
        sys.exit("unknown command " + cmd)
PYEOF

# ---------------------------------------------------------------------------- files and configs
mkdir -p "$TMP/origin/www" "$TMP/nginx" "$TMP/gatewayd" "$TMP/gatewayd-alt" "$TMP/sink" "$TMP/transfers" "$TMP/idle"
printf '%s\n' "$BODY" >"$TMP/origin/www/small.txt"
SMALL_BYTES=$((SMALL_MIB * 1048576))
LARGE_BYTES=$((LARGE_MIB * 1048576))
SMALL_FILE=small-${SMALL_MIB}m.bin
LARGE_FILE=large-${LARGE_MIB}m.bin
head -c "$SMALL_BYTES" /dev/urandom >"$TMP/origin/www/$SMALL_FILE"
head -c "$LARGE_BYTES" /dev/urandom >"$TMP/origin/www/$LARGE_FILE"

# The origin: static files (sendfile), 1 worker. Uploads go to the sink (helper.py sink), which
# reads every body whole before it answers: nginx's `return 200` would answer before the body
# is read and discard the rest, so an upload could "finish" before its bytes had arrived.
cat >"$TMP/origin/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log notice;
worker_rlimit_nofile $NOFILE;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths "$NGINX" "$TMP/origin")
    server {
        listen 127.0.0.1:${PORT[origin]} backlog=4096;
        root $TMP/origin/www;
    }
}
EOF

# The nginx proxy: as proxy-throughput.sh's, plus: no body size limit (client_max_body_size 0),
# the idle connections' limits (worker_connections, worker_rlimit_nofile, keepalive_timeout),
# and /upload to the sink. Responses are buffered as nginx does by default (proxy_buffering on);
# request bodies stream (proxy_request_buffering off) unless --nginx-request-buffering on.
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log notice;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((IDLE_CONNS + 4096)); }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout ${IDLE_TIMEOUT}s;
    client_max_body_size 0;
$(nginx_temp_paths "$NGINX" "$TMP/nginx")
    upstream origin {
        server 127.0.0.1:${PORT[origin]};
        keepalive $KEEPALIVE;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    upstream sink {
        server 127.0.0.1:${PORT[sink]};
        keepalive $KEEPALIVE;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / { proxy_pass http://origin; }
        location /upload {
            proxy_request_buffering $NGINX_REQUEST_BUFFERING;
            proxy_pass http://sink;
        }
    }
}
EOF

# gatewayd: the same two upstreams and routes; limits.max_body_bytes 0 (no limit, as nginx's
# client_max_body_size 0; the default, 10 MiB, would refuse the large upload with a 413) and
# limits.idle_timeout as nginx's keepalive_timeout. It has no connection limit to raise: the
# open files limit it inherits is the only one.
gw_config() { # gw_config SERVER
    cat <<EOF
workers: $WORKERS
listeners:
  - { name: http, address: 127.0.0.1:${PORT[$1]}, backlog: 4096 }
limits: { max_body_bytes: 0, idle_timeout: ${IDLE_TIMEOUT}s }
upstreams:
  origin:
    endpoints: [127.0.0.1:${PORT[origin]}]
    keepalive: { max_idle_per_endpoint: $KEEPALIVE, idle_timeout: 60s }
  sink:
    endpoints: [127.0.0.1:${PORT[sink]}]
    keepalive: { max_idle_per_endpoint: $KEEPALIVE, idle_timeout: 60s }
routes:
  - name: upload
    match: { path_prefix: /upload }
    upstream: sink
  - name: all
    match: { path_prefix: / }
    upstream: origin
EOF
}
gw_config gatewayd >"$TMP/gatewayd/gateway.yaml"
gw_config gatewayd-alt >"$TMP/gatewayd-alt/gateway.yaml"

# ---------------------------------------------------------------------------- servers
log_of() {
    case $1 in
        origin | nginx) echo "$TMP/$1/error.log" ;;
        sink) echo "$TMP/sink/sink.log" ;;
        *) echo "$TMP/$1/gatewayd.log" ;;
    esac
}
log_tail() {
    local f
    f=$(log_of "$1")
    printf -- '---- last lines of %s ----\n' "$f" >&2
    tail -n 30 "$f" >&2 2>/dev/null || true
    printf -- '----\n' >&2
}

# start_server SERVER: starts it and waits (bounded) until it answers; dies when it does not.
start_server() {
    local server=$1 pid rc=0 path=/small.txt expected=$BODY
    case $server in
        origin | nginx)
            "${BIN[$server]}" -t -q -p "$TMP/$server" -e "$TMP/$server/error.log" -c "$TMP/$server/nginx.conf" \
                2>"$TMP/$server/configtest.log" || {
                cat "$TMP/$server/configtest.log" >&2
                die "nginx rejected $TMP/$server/nginx.conf"
            }
            "${BIN[$server]}" -p "$TMP/$server" -e "$TMP/$server/error.log" -c "$TMP/$server/nginx.conf" \
                </dev/null >"$TMP/$server/stdout.log" 2>"$TMP/$server/stderr.log" &
            ;;
        sink)
            python3 "$HELPER" sink "${PORT[sink]}" </dev/null >"$TMP/sink/sink.log" 2>&1 &
            path=/ready expected=ok
            ;;
        gatewayd | gatewayd-alt)
            "${BIN[$server]}" check --config "$TMP/$server/gateway.yaml" >"$TMP/$server/check.log" 2>&1 || {
                cat "$TMP/$server/check.log" >&2
                die "$server refused $TMP/$server/gateway.yaml"
            }
            "${BIN[$server]}" --config "$TMP/$server/gateway.yaml" --control-socket "$TMP/$server/control.sock" \
                --pid-file "$TMP/$server/gatewayd.pid" --log-level notice \
                </dev/null >"$TMP/$server/stdout.log" 2>"$TMP/$server/gatewayd.log" &
            ;;
    esac
    pid=$!
    PID[$server]=$pid
    remember_pid "$pid"
    wait_body "$(url_of "$server")$path" "$expected" "$READY_TIMEOUT" "$pid" || rc=$?
    ((rc == 0)) || { log_tail "$server"; die "$server did not answer within ${READY_TIMEOUT}s (status $rc)"; }
    remember_children "$pid"
    log "$server ready on $(url_of "$server") (pid $pid)"
}

# ---------------------------------------------------------------------------- memory
# mem_kib PID: "RSS PSS PRIVATE" in KiB (smaps_rollup; private = Private_Clean + Private_Dirty).
mem_kib() {
    awk '/^Rss:/ {r = $2} /^Pss:/ {p = $2} /^Private_(Clean|Dirty):/ {u += $2}
         END {printf "%d %d %d\n", r, p, u}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "0 0 0"
}
# roles SERVER: "ROLE PID" lines: master, then worker (serving) and, for gatewayd, spare.
roles() {
    local server=$1 master=${PID[$1]} c
    echo "master $master"
    case $server in
        nginx | origin)
            for c in $(children_of "$master"); do echo "worker $c"; done
            ;;
        *)
            "$GATEWAYCTL_BIN" --socket "$TMP/$server/control.sock" status --json >"$TMP/$server/status.json" 2>/dev/null ||
                die "gatewayctl status failed for $server"
            python3 "$HELPER" gw-roles "$TMP/$server/status.json"
            ;;
    esac
}
workers_of() { roles "$1" | awk '$1 == "worker" {print $2}'; }
# sum_mem PID...: the sums of "RSS PSS PRIVATE" in KiB.
sum_mem() {
    local p r=0 s=0 u=0 a b c
    for p in "$@"; do
        read -r a b c < <(mem_kib "$p")
        r=$((r + a)) s=$((s + b)) u=$((u + c))
    done
    echo "$r $s $u"
}
open_fds() { # open_fds PID: its open file descriptors
    local n
    n=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || n=0
    echo "$n"
}
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
ratio() { # ratio A B -> A/B as N.NNx, or n/a
    awk -v a="$1" -v b="$2" 'BEGIN{
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b + 0 == 0) { print "n/a"; exit }
        printf "%.2fx", a / b }'
}

# settle: memory is read after the servers have been quiet for a moment (gatewayd's spares
# warm up once after they start; nginx's workers initialise their caches).
settle() { sleep "${1:-2}"; }

# ---------------------------------------------------------------------------- 3. memory at rest
declare -A REST=()           # "server/role/pid" and totals -> "RSS PSS PRIVATE"
declare -a REST_ROWS=()      # "server role pid" in order
measure_rest() {
    local server=$1 role pid all=() noSpare=()
    while read -r role pid; do
        REST[$server/$role/$pid]=$(mem_kib "$pid")
        REST_ROWS+=("$server $role $pid")
        all+=("$pid")
        [[ $role == spare ]] || noSpare+=("$pid")
    done < <(roles "$server")
    REST[$server/total]=$(sum_mem "${all[@]}")
    REST[$server/nospare]=$(sum_mem "${noSpare[@]}")
    REST[$server/count]=${#all[@]}
}

# ---------------------------------------------------------------------------- 1. transfers
declare -A T_STATS=() T_MEM=()
SAMPLER_PID=""
start_sampler() { # start_sampler OUT PID...
    local out=$1
    shift
    local i
    rm -f "$out"
    python3 "$HELPER" sample "$out" 0.05 "$@" &
    SAMPLER_PID=$!
    HELPER_PIDS+=("$SAMPLER_PID")
    # Its first sample is the start of the measurement.
    for ((i = 0; i < 200; i++)); do
        [[ -s $out ]] && return 0
        alive "$SAMPLER_PID" || break
        sleep 0.05
    done
    die "the RSS sampler did not start"
}
stop_sampler() {
    kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
}

# transfer_block SERVER SIZE(small|large): RUNS downloads, then RUNS uploads, one curl each,
# with the workers' RSS sampled meanwhile.
transfer_block() {
    local server=$1 size=$2 runs file bytes url i out workers before after peak max_time line
    if [[ $size == small ]]; then runs=$SMALL_RUNS file=$SMALL_FILE bytes=$SMALL_BYTES; else runs=$LARGE_RUNS file=$LARGE_FILE bytes=$LARGE_BYTES; fi
    # At least 5 MB/s, or it counts as failed.
    max_time=$((bytes / 5000000 + 10))
    url=$(url_of "$server")
    mapfile -t workers < <(workers_of "$server")
    ((${#workers[@]} == WORKERS)) || die "$server: $WORKERS serving workers expected, found ${#workers[@]}"
    before=$(sum_mem "${workers[@]}")
    start_sampler "$TMP/transfers/$server-$size.peak" "${workers[@]}"
    log "$server: ${runs}x GET and ${runs}x POST of $((bytes / 1048576)) MiB"
    out=$TMP/transfers/$server-$size-download.txt
    for ((i = 0; i < runs; i++)); do
        line=$(curl -sS -o /dev/null --max-time "$max_time" -w '%{http_code} %{size_download} %{speed_download} %{time_total}' \
            "$url/$file" 2>>"$TMP/transfers/curl-errors.log") || true
        echo "${line:-failed 0 0 0}" >>"$out"
    done
    out=$TMP/transfers/$server-$size-upload.txt
    for ((i = 0; i < runs; i++)); do
        # -T streams the file (no copy in curl's memory); no "Expect: 100-continue" round trip.
        rm -f "$TMP/transfers/answer.txt"
        line=$(curl -sS -o "$TMP/transfers/answer.txt" --max-time "$max_time" -X POST -T "$TMP/origin/www/$file" \
            -H 'Expect:' -H 'Content-Type: application/octet-stream' \
            -w '%{http_code} %{size_upload} %{speed_upload} %{time_total}' "$url/upload" \
            2>>"$TMP/transfers/curl-errors.log") || true
        # The sink's count: the whole body reached the origin, or the transfer counts as failed.
        if [[ $(cat "$TMP/transfers/answer.txt" 2>/dev/null) != "received $bytes" ]]; then
            warn "$server upload $i: the origin answered '$(head -c 100 "$TMP/transfers/answer.txt" 2>/dev/null)', not 'received $bytes'"
            line="short ${line#* }"
        fi
        echo "${line:-failed 0 0 0}" >>"$out"
    done
    stop_sampler
    after=$(sum_mem "${workers[@]}")
    peak=$(cat "$TMP/transfers/$server-$size.peak" 2>/dev/null || echo "?")
    T_STATS[$server/$size/download]=$(python3 "$HELPER" stats "$TMP/transfers/$server-$size-download.txt" "$bytes")
    T_STATS[$server/$size/upload]=$(python3 "$HELPER" stats "$TMP/transfers/$server-$size-upload.txt" "$bytes")
    T_MEM[$server/$size]="${before%% *} $peak ${after%% *}"
    alive "${PID[$server]}" || die "$server died during the transfers"
}

# ---------------------------------------------------------------------------- 2. idle connections
declare -A I_BEFORE=() I_WITH=() I_REPORT=() I_FDS=()
idle_run() {
    local server=$1 workers w ready hold client report fds="" fd0 fd1 i
    mapfile -t workers < <(workers_of "$server")
    ((${#workers[@]} == WORKERS)) || die "$server: $WORKERS serving workers expected, found ${#workers[@]}"
    declare -A fd_before=()
    for w in "${workers[@]}"; do fd_before[$w]=$(open_fds "$w"); done
    I_BEFORE[$server]=$(sum_mem "${workers[@]}")
    ready=$TMP/idle/$server-report.json
    hold=$TMP/idle/$server.hold
    touch "$hold"
    log "$server: $IDLE_CONNS idle keep-alive connections"
    python3 "$HELPER" idle "${PORT[$server]}" /small.txt "$IDLE_CONNS" 256 "$ready" "$hold" 120 \
        >"$TMP/idle/$server-client.log" 2>&1 &
    client=$!
    HELPER_PIDS+=("$client")
    for ((i = 0; i < 1200; i++)); do
        [[ -s $ready ]] && break
        alive "$client" || break
        sleep 0.1
    done
    [[ -s $ready ]] || { cat "$TMP/idle/$server-client.log" >&2; rm -f "$hold"; die "the idle client did not get its $IDLE_CONNS connections to $server open within 120 s"; }
    settle 2
    I_WITH[$server]=$(sum_mem "${workers[@]}")
    for w in "${workers[@]}"; do
        fd0=${fd_before[$w]} fd1=$(open_fds "$w")
        fds+="${fds:+/}$((fd1 - fd0))"
    done
    I_FDS[$server]=$fds
    rm -f "$hold"
    wait "$client" 2>/dev/null || warn "the idle client exited with status $? ($TMP/idle/$server-client.log)"
    report=$(cat "$ready")
    I_REPORT[$server]=$report
    alive "${PID[$server]}" || die "$server died during the idle connections"
}
json_field() { python3 -c 'import json,sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print(json.dumps(v) if isinstance(v, dict) else v)' "$1" "$2"; }

# ---------------------------------------------------------------------------- run
log "ports: gatewayd ${PORT[gatewayd]}, nginx ${PORT[nginx]}, origin ${PORT[origin]}, sink ${PORT[sink]}; temp dir $TMP"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_server origin
start_server sink
for s in $SERVERS; do start_server "$s"; done
settle 3

# 3. at rest, before any traffic beyond the readiness probes.
for s in $SERVERS; do measure_rest "$s"; done

# The alternative binary: a smoke request through it, then it is stopped (it is measured at rest only).
ALT_SMOKE=""
if [[ -n $GATEWAYD_ALT_BIN ]]; then
    ALT_SMOKE=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "$(url_of gatewayd-alt)/$SMALL_FILE" 2>&1 || true)
    ALT_SMOKE+=", upload: $(curl -sS --max-time 10 -X POST -T "$TMP/origin/www/$SMALL_FILE" -H 'Expect:' "$(url_of gatewayd-alt)/upload" 2>&1 || true)"
    stop_server gatewayd-alt
fi

# 1. transfers: small then large; the servers' order alternates so that neither always goes first.
transfer_block gatewayd small
transfer_block nginx small
transfer_block nginx large
transfer_block gatewayd large

# 2. idle connections.
if ((IDLE_CONNS > 0)); then
    for s in gatewayd nginx; do idle_run "$s"; done
fi

# ---------------------------------------------------------------------------- report
version_of() {
    case $1 in
        nginx) "$NGINX" -v 2>&1 | sed 's/^nginx version: //' ;;
        gatewayd) printf '%s (%s)' "$("$TMP/bin/gatewayd" --version 2>/dev/null || echo '?')" "$GATEWAYD_BIN" ;;
        gatewayd-alt) printf '%s (%s)' "$("$TMP/bin/gatewayd-alt" --version 2>/dev/null || echo '?')" "$GATEWAYD_ALT_BIN" ;;
    esac
}
printf '\n'
printf 'transfer-and-memory: %s, everything on 127.0.0.1, %s workers per proxy\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$WORKERS"
for s in $SERVERS; do printf '  %-13s %s\n' "$s:" "$(version_of "$s")"; done
printf '  origin:       %s, 1 worker, static files (sendfile); uploads to a Python sink that reads each body whole\n' "$(version_of nginx)"
printf '  nginx:        proxy_buffering on (default), proxy_request_buffering %s, client_max_body_size 0\n' "$NGINX_REQUEST_BUFFERING"
printf '  gatewayd:     limits.max_body_bytes 0 (no limit), limits.idle_timeout %ss\n' "$IDLE_TIMEOUT"
printf 'machine: %s cores, %s; open files limit %s; load average before the run %s, after %s\n' "$(nproc)" \
    "$(uname -sr)" "$NOFILE" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"

printf '\n== 1. Transfers: curl, a new connection per transfer; MB/s = 10^6 bytes/s, median (min-max) of the runs\n'
trow() { printf '%-8s %-9s %5s  %-20s %-20s %7s  %s\n' "$@"; }
trow size direction runs "gatewayd MB/s" "nginx MB/s" "ratio" "note"
fmt_stat() { # "ok bad median min max secs" -> "median (min-max)"
    local ok bad med lo hi secs
    read -r ok bad med lo hi secs <<<"$1"
    if ((ok == 0)); then echo "failed"; else echo "$med ($lo-$hi)"; fi
}
for size in small large; do
    for dir in download upload; do
        g=${T_STATS[gatewayd/$size/$dir]:-0 0 - - - -}
        n=${T_STATS[nginx/$size/$dir]:-0 0 - - - -}
        note=""
        for pair in "gatewayd:$g" "nginx:$n"; do
            read -r ok bad _ <<<"${pair#*:}"
            ((bad > 0)) && note+="${pair%%:*}: $bad of $((ok + bad)) failed; "
        done
        if [[ $size == small ]]; then label="$SMALL_MIB MiB" runs=$SMALL_RUNS; else label="$LARGE_MIB MiB" runs=$LARGE_RUNS; fi
        trow "$label" "$dir" "$runs" "$(fmt_stat "$g")" "$(fmt_stat "$n")" \
            "$(ratio "$(awk '{print $3}' <<<"$g")" "$(awk '{print $3}' <<<"$n")")" "$note"
    done
done
printf '\nWorkers'"'"' RSS during the transfers (MiB, sum of the %s serving workers; peak sampled every 50 ms)\n' "$WORKERS"
mrow() { printf '%-8s %-10s %8s %8s %8s\n' "$@"; }
mrow size server before peak after
for size in small large; do
    for s in gatewayd nginx; do
        read -r b p a <<<"${T_MEM[$s/$size]:-0 0 0}"
        if [[ $size == small ]]; then label="$SMALL_MIB MiB"; else label="$LARGE_MIB MiB"; fi
        mrow "$label" "$s" "$(mib "$b")" "$(mib "$p")" "$(mib "$a")"
    done
done

if ((IDLE_CONNS > 0)); then
    printf '\n== 2. Idle keep-alive connections: %s client connections, one request each (GET /small.txt), then idle\n' "$IDLE_CONNS"
    irow() { printf '%-9s %7s %7s %8s  %-13s %-19s %-19s %9s %9s\n' "$@"; }
    irow server open failed "closed*" "fds/worker" "PSS MiB before/with" "RSS MiB before/with" "KiB/conn" "KiB/conn"
    irow "" "" "" "" "" "" "" "(PSS)" "(RSS)"
    declare -A KIB_PSS=() KIB_RSS=()
    for s in gatewayd nginx; do
        rep=${I_REPORT[$s]:-}
        [[ -n $rep ]] || { irow "$s" - - - - - - - -; continue; }
        open=$(json_field "$rep" open)
        errs=$(json_field "$rep" errors)
        failed=$(python3 -c 'import json,sys; print(sum(json.loads(sys.argv[1]).values()))' "$errs")
        closed=$(json_field "$rep" closed_by_server)
        read -r rb pb _ <<<"${I_BEFORE[$s]}"
        read -r rw pw _ <<<"${I_WITH[$s]}"
        KIB_PSS[$s]=$(awk -v a="$pb" -v b="$pw" -v n="$open" 'BEGIN{ if (n > 0) printf "%.2f", (b - a) / n; else print "?" }')
        KIB_RSS[$s]=$(awk -v a="$rb" -v b="$rw" -v n="$open" 'BEGIN{ if (n > 0) printf "%.2f", (b - a) / n; else print "?" }')
        irow "$s" "$open" "$failed" "$closed" "${I_FDS[$s]}" "$(mib "$pb") / $(mib "$pw")" "$(mib "$rb") / $(mib "$rw")" \
            "${KIB_PSS[$s]}" "${KIB_RSS[$s]}"
        [[ $errs == "{}" ]] || printf '          errors: %s\n' "$errs"
    done
    printf '(* closed: connections the server had closed by the time the client let go, after the measurement.\n'
    printf ' fds/worker: descriptors each worker opened meanwhile. Kernel socket buffers are not in RSS/PSS.\n'
    printf ' nginx allocates its worker_connections slots (here %s per worker) at start, about 0.4 KiB each:\n' "$((IDLE_CONNS + 4096))"
    printf ' that part of its cost per connection is already in "before" and in the memory at rest.)\n'
    printf 'ratio gatewayd / nginx, KiB per connection: PSS %s, RSS %s\n' \
        "$(ratio "${KIB_PSS[gatewayd]}" "${KIB_PSS[nginx]}")" "$(ratio "${KIB_RSS[gatewayd]}" "${KIB_RSS[nginx]}")"
fi

printf '\n== 3. Memory at rest (smaps_rollup, KiB -> MiB), after start and %s s of quiet, before the transfers\n' 3
rrow() { printf '%-13s %-8s %8s %9s %9s %9s\n' "$@"; }
rrow server process pid "RSS MiB" "PSS MiB" "private"
for r in "${REST_ROWS[@]}"; do
    read -r s role pid <<<"$r"
    read -r a b c <<<"${REST[$s/$role/$pid]}"
    rrow "$s" "$role" "$pid" "$(mib "$a")" "$(mib "$b")" "$(mib "$c")"
done
for s in $SERVERS; do
    read -r a b c <<<"${REST[$s/total]}"
    rrow "$s" "total" "${REST[$s/count]}" "$(mib "$a")" "$(mib "$b")" "$(mib "$c")"
    if [[ $s == gatewayd* ]]; then
        read -r a b c <<<"${REST[$s/nospare]}"
        rrow "$s" "no spares" "" "$(mib "$a")" "$(mib "$b")" "$(mib "$c")"
    fi
done
printf '(RSS counts shared pages in every process; PSS splits them between the processes that map them,\n'
printf ' so the PSS total is what the group costs. nginx shares libc, libssl, libpcre2 with other programs.\n'
printf ' nginx'"'"'s workers include their %s preallocated worker_connections slots each.)\n' "$((IDLE_CONNS + 4096))"
read -r _ gp gu <<<"${REST[gatewayd/total]}"
read -r _ gps gus <<<"${REST[gatewayd/nospare]}"
read -r _ np nu <<<"${REST[nginx/total]}"
printf 'ratio gatewayd / nginx: PSS total %s (without spares %s); private total %s (without spares %s)\n' \
    "$(ratio "$gp" "$np")" "$(ratio "$gps" "$np")" "$(ratio "$gu" "$nu")" "$(ratio "$gus" "$nu")"
if [[ -n $GATEWAYD_ALT_BIN ]]; then
    read -r _ ap au <<<"${REST[gatewayd-alt/total]}"
    printf '\ngatewayd-alt (%s): smoke GET %s\n' "$GATEWAYD_ALT_BIN" "$ALT_SMOKE"
    printf 'binary size: gatewayd %s bytes, gatewayd-alt %s bytes (%s)\n' "$(stat -c %s "$GATEWAYD_BIN")" \
        "$(stat -c %s "$GATEWAYD_ALT_BIN")" "$(ratio "$(stat -c %s "$GATEWAYD_ALT_BIN")" "$(stat -c %s "$GATEWAYD_BIN")")"
    printf 'PSS total at rest: gatewayd %s MiB, gatewayd-alt %s MiB (%s); private %s vs %s MiB\n' \
        "$(mib "$gp")" "$(mib "$ap")" "$(ratio "$ap" "$gp")" "$(mib "$gu")" "$(mib "$au")"
fi

printf '\nwarnings and errors in the logs:\n'
for s in $SERVERS origin; do
    f=$(log_of "$s")
    grep -E -i '\[(warn|error|crit|alert|emerg)\]|warning|error' "$f" 2>/dev/null | head -n 5 | sed "s/^/  $s: /" || true
done
[[ -n $RESULTS_DIR ]] && printf '\nraw output (curl lines, idle client reports, configs, logs): %s\n' "$RESULTS_DIR"
exit 0
