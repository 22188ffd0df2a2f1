#!/bin/sh
# What the Kubernetes example's memory request and limit come from (docs/container.md#memory):
# gatewayd on the example's ConfigMap config (2 workers, their 2 spares, the admin listener),
# the sum of Pss over the master and its children (/proc/PID/smaps_rollup: shared pages, the
# binary's and the shared segment's, counted once in all, as a container's cgroup charges
# them), sampled every 0.2 s: started and idle, under wrk load, and in a reload storm under
# load (20 reloads, 0.25 s apart, so that old generations drain beside new ones).
#
#   make release && packaging/container/measure-memory.sh    # GATEWAYD_BIN, GATEWAYCTL_BIN to override
set -eu
cd "$(dirname "$0")/../.."
gatewayd=${GATEWAYD_BIN:-.build/release/gatewayd}
gatewayctl=${GATEWAYCTL_BIN:-.build/release/gatewayctl}
dir=$(mktemp -d "${TMPDIR:-/tmp}/gatewayd-memory.XXXXXX")
master=
cleanup() {
    [ -n "$master" ] && kill -TERM "$master" 2>/dev/null && wait "$master" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
web=$(free_port)
admin=$(free_port)
# The ConfigMap's gatewayd.yaml, on loopback ports and a private control socket.
sed -n '/^  gatewayd.yaml: |$/,/^---$/p' examples/kubernetes/gatewayd.yaml | sed -e '1d' -e '$d' -e 's/^    //' |
    sed -e "s/0.0.0.0:8080/127.0.0.1:$web/" -e "s/0.0.0.0:9090/127.0.0.1:$admin/" \
        -e "s|/run/gatewayd/control.sock|$dir/control.sock|" >"$dir/gatewayd.yaml"

"$gatewayd" -c "$dir/gatewayd.yaml" >"$dir/gatewayd.log" 2>&1 &
master=$!
i=0
until "$gatewayctl" --socket "$dir/control.sock" --timeout 1s status >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { cat "$dir/gatewayd.log" >&2; exit 1; }
    sleep 0.1
done

pss_kib() {
    total=0
    for pid in "$master" $(pgrep -P "$master"); do
        kib=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + ${kib:-0}))
    done
    echo $total
}
# Samples until the file $1 exists; prints the largest sum in KiB. (A finished wrk is a zombie
# until this shell waits for it, and kill -0 still finds a zombie: hence a file.)
peak_until() {
    peak=0
    while [ ! -e "$1" ]; do
        now=$(pss_kib)
        [ "$now" -gt "$peak" ] && peak=$now
        sleep 0.2
    done
    echo $peak
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

sleep 2
idle=$(pss_kib)
(wrk -t2 -c64 -d10s "http://127.0.0.1:$web/" >"$dir/wrk-load.txt"; touch "$dir/load.done") &
load=$(peak_until "$dir/load.done")
(wrk -t2 -c64 -d12s "http://127.0.0.1:$web/" >"$dir/wrk-storm.txt"; touch "$dir/storm.done") &
(
    sleep 1
    for _ in $(seq 20); do
        "$gatewayctl" --socket "$dir/control.sock" reload >/dev/null
        sleep 0.25
    done
) &
reloads=$!
storm=$(peak_until "$dir/storm.done")
wait "$reloads"

echo "gatewayd $("$gatewayd" --version), PSS summed over the master and its children:"
echo "  started, idle:                 $(mib "$idle")"
echo "  wrk -c64 load, peak:           $(mib "$load")   ($(grep 'Requests/sec' "$dir/wrk-load.txt" | tr -s ' '))"
echo "  load + 20 reloads, peak:       $(mib "$storm")"
