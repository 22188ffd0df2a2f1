#!/usr/bin/env python3
"""chaos-load.py: the Python half of benchmarks/chaos.sh (standard library only, 127.0.0.1 only).

    chaos-load.py load --port P --duration S --conns N --mode keepalive|close --out FILE
                       [--path /] [--hold N --hold-path /slow?ms=2000]
        Steady closed-loop HTTP/1.1 load: N connections, each sending GET PATH as soon as the
        previous answer is in. Every request is an outcome: ok (2xx), or a failure of one kind:
        connect (refused, reset or timed out while connecting), write, read (the connection
        closed or reset before a whole response), timeout (no whole response within --timeout),
        status (a non-2xx answer). Failures are kept with their wall-clock time, so that the
        report can say when they stopped after a fault. --hold adds N more connections that
        each send HOLD_PATH in a loop (long requests that keep draining generations alive).

    chaos-load.py status-poll --socket SOCK --duration S --out FILE
        Asks the master for its status (control protocol, JSON lines) every POLL_S seconds and
        keeps the most generations seen draining at once, and the most worker processes.

    chaos-load.py kill-workers --socket SOCK --duration S --every S --out FILE
        Every --every seconds, SIGKILLs one worker of the serving generation (indexes in turn)
        and measures the time until the status shows a replacement for that index `ready`.

    chaos-load.py proc-sample --pid MASTER --duration S --out FILE [--old-match TEXT]
        (--peer runs) Every SAMPLE_S seconds, the process MASTER and all its descendants: the
        most processes at once, the most whose command line contains TEXT (nginx's old workers:
        "shutting down"), and the largest sum of their VmRSS.

    chaos-load.py kill-children --pid MASTER --every S --duration S --out FILE [--match TEXT]
        (--peer runs) Every --every seconds, SIGKILLs one child of MASTER whose command line
        contains TEXT (a serving worker; in turn), and measures the time until MASTER has as
        many such children again (a respawned worker); stops when MASTER is gone.

    chaos-load.py compare NAME=PHASES.jsonl ...
        (--peer runs) Failed requests per fault, one column per server; rows are matched by
        the load's name (the peer's loads are named PEER-<gatewayd's name>).

    chaos-load.py report PHASES.jsonl
        The table: fault | requests | failed | recovered (ms) | note.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import time

# A whole response must arrive within this. Where it comes from: p99 latency through gatewayd
# on this machine is 5-13 ms under wrk load (docs/benchmarks.md), so 3 s is only reached by a
# request that is stuck; and it is above gatewayd's default upstream connect_timeout (2 s),
# so an upstream that does not answer a connect shows as gatewayd's 502, not as our timeout.
REQUEST_TIMEOUT_S = 3.0
# Status polling period: a worker restart is 100 ms of backoff plus a few ms of start-up
# (docs/reload.md), so 10 ms resolves it to about a tenth; each poll is one small JSON line.
POLL_S = 0.01
# At most this many failure events are kept per run (the counts stay exact); enough for
# every fault's timeline without letting a run that fails everything grow without bound.
MAX_EVENTS = 20000
# proc-sample period (--peer runs): old nginx workers live for seconds, a reload takes tens of
# milliseconds; 50 ms sees every generation while scanning /proc costs little.
SAMPLE_S = 0.05


# ---------------------------------------------------------------------------- load
class Stats:
    def __init__(self):
        self.ok = 0
        self.kinds = {}
        self.statuses = {}
        self.events = []  # [wall time, kind, detail]
        self.ok_times = []  # wall time of every 50th success: enough to see serving resume

    def fail(self, kind, detail):
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.events) < MAX_EVENTS:
            self.events.append([time.time(), kind, detail])

    def success(self):
        self.ok += 1
        if self.ok % 50 == 0:
            self.ok_times.append(time.time())


async def read_response(reader):
    """Returns (status, keep_alive) after reading one whole response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked, keep = 0, False, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"connection" and b"close" in value:
            keep = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep


async def client(args, path, stats, deadline, keepalive, delay=0.0):
    await asyncio.sleep(delay)
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        path, args.host, "" if keepalive else "Connection: close\r\n")).encode()
    reader = writer = None
    while time.time() < deadline:
        stage = "connect"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
                stage = "write"
                writer.write(req)
                await writer.drain()
                stage = "read"
                status, keep = await read_response(reader)
            if 200 <= status < 300:
                stats.success()
            else:
                stats.fail("status", status)
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if not (keep and keepalive):
                writer.close()
                writer = None
        except TimeoutError:
            stats.fail("timeout", stage)
            writer = close(writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            stats.fail(stage, type(e).__name__)
            writer = close(writer)
            if stage == "connect":
                # Nothing listens: do not spin a core on refused connects (that would slow
                # down the recovery it measures); 10 ms keeps the recovery resolution.
                await asyncio.sleep(0.01)
    close(writer)


def close(writer):
    if writer is not None:
        try:
            writer.transport.abort()
        except Exception:
            pass
    return None


async def announce_ready(args, stats):
    """Writes --ready-file once the load has had as many answers as it has connections (or
    after 5 s): the caller schedules its faults from then, against a server under load."""
    end = time.time() + 5
    while stats.ok < args.conns and time.time() < end:
        await asyncio.sleep(0.005)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write("ready %d\n" % stats.ok)


async def run_load(args):
    stats, hold = Stats(), Stats()
    deadline = time.time() + args.duration
    keepalive = args.mode == "keepalive"
    tasks = [client(args, args.path, stats, deadline, keepalive) for _ in range(args.conns)]
    # Holders start spread over --hold-spread seconds: started together, they would finish and
    # reconnect together, all to the same generation, and keep only one or two draining.
    tasks += [client(args, args.hold_path, hold, deadline, True, i * args.hold_spread / max(1, args.hold))
              for i in range(args.hold)]
    tasks.append(announce_ready(args, stats))
    start = time.time()
    await asyncio.gather(*tasks)
    out = {"start": start, "end": time.time(), "mode": args.mode, "conns": args.conns,
           "ok": stats.ok, "kinds": stats.kinds, "statuses": stats.statuses,
           "events": stats.events, "ok_times": stats.ok_times}
    if args.hold:
        out["hold"] = {"conns": args.hold, "path": args.hold_path, "ok": hold.ok, "kinds": hold.kinds,
                       "statuses": hold.statuses, "events": hold.events[:200]}
    with open(args.out, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------- control socket
def status(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The master answers status from memory in well under a millisecond; 2 s means it is
    # stuck, and the poll counts an error instead of hanging the phase.
    s.settimeout(2)
    try:
        s.connect(sock_path)
        s.sendall(b'{"version":1,"command":"status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return json.loads(data)["status"]


def status_poll(args):
    end = time.time() + args.duration
    most_draining, most_live, most_workers, polls, errors, draining_ids = 0, 0, 0, 0, 0, set()
    while time.time() < end:
        try:
            st = status(args.socket)
            polls += 1
            draining = [g for g in st["generations"] if g["state"] == "draining"]
            draining_ids.update(g["id"] for g in draining)
            most_draining = max(most_draining, len(draining))
            # A generation stopped early by max_draining_generations stays listed as draining
            # until its workers have exited; "live" ones still have a worker that is not
            # terminating, i.e. one the limit has not stopped yet.
            live = [g for g in draining if any(w["state"] not in ("terminating", "exited") for w in g["workers"])]
            most_live = max(most_live, len(live))
            most_workers = max(most_workers, sum(len(g["workers"]) for g in st["generations"]))
        except (OSError, ValueError, KeyError):
            errors += 1
        time.sleep(POLL_S)
    with open(args.out, "w") as f:
        json.dump({"max_draining": most_draining, "max_live_draining": most_live, "max_workers": most_workers, "polls": polls,
                   "errors": errors, "generations_seen_draining": len(draining_ids)}, f)


def serving(st):
    return [g for g in st["generations"] if g["state"] == "serving"]


def kill_workers(args):
    """SIGKILL a serving worker every --every s; time until its index has a ready replacement."""
    end = time.time() + args.duration
    kills, index = [], 0
    next_kill = time.time() + args.every
    while next_kill < end:
        time.sleep(max(0.0, next_kill - time.time()))
        next_kill += args.every
        try:
            gen = serving(status(args.socket))[0]
        except (OSError, ValueError, KeyError, IndexError) as e:
            kills.append({"error": "no serving generation: %s" % e})
            continue
        workers = sorted(gen["workers"], key=lambda w: w["index"])
        victim = workers[index % len(workers)]
        index += 1
        t0 = time.time()
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        rec = {"t": t0, "pid": victim["pid"], "index": victim["index"], "ms": None}
        # A replacement comes after the restart backoff (100 ms doubling to 10 s): wait for
        # it up to the next kill, and at least 12 s (the 10 s cap plus start-up).
        limit = t0 + max(args.every, 12.0)
        while time.time() < limit:
            try:
                for g in serving(status(args.socket)):
                    for w in g["workers"]:
                        if w["index"] == victim["index"] and w["pid"] != victim["pid"] and w["state"] == "ready":
                            rec["ms"] = (time.time() - t0) * 1000
                            rec["new_pid"] = w["pid"]
                            rec["restarts"] = w["restarts"]
            except (OSError, ValueError, KeyError):
                pass
            if rec["ms"] is not None:
                break
            time.sleep(POLL_S)
        kills.append(rec)
        if rec["ms"] is not None and time.time() > next_kill:
            next_kill = time.time() + args.every
    with open(args.out, "w") as f:
        json.dump({"kills": kills}, f)


# ---------------------------------------------------------------------------- processes (--peer)
def proc_table():
    """{pid: (ppid, cmdline)} of every process now."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(d)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def descendants(table, root):
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, (pp, _) in table.items() if pp == p]
        found += kids
        todo += kids
    return found


def rss_pss_kb(pid):
    """VmRSS and Pss of one process, in KiB. A sum of RSS counts pages shared between the
    processes (the binary's text, most of all) once per process; the sum of Pss charges each
    shared page once in all, so it is what the processes cost the machine together."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            fields = dict(line.split(":", 1) for line in f if line[:4] in ("Rss:", "Pss:"))
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def proc_sample(args):
    end = time.time() + args.duration
    most_procs = most_match = most_rss = most_pss = samples = 0
    while time.time() < end:
        table = proc_table()
        if args.pid not in table:
            break
        pids = [args.pid] + descendants(table, args.pid)
        samples += 1
        most_procs = max(most_procs, len(pids))
        if args.old_match:
            most_match = max(most_match, sum(args.old_match in table[p][1] for p in pids if p in table))
        sizes = [rss_pss_kb(p) for p in pids]
        most_rss = max(most_rss, sum(rss for rss, _ in sizes))
        most_pss = max(most_pss, sum(pss for _, pss in sizes))
        time.sleep(SAMPLE_S)
    with open(args.out, "w") as f:
        json.dump({"max_procs": most_procs, "max_old": most_match, "max_rss_kb": most_rss, "max_pss_kb": most_pss,
                   "samples": samples, "old_match": args.old_match}, f)


def kill_children(args):
    """SIGKILL a matching child of --pid every --every s; time until the master has respawned it."""

    def workers():
        table = proc_table()
        if args.pid not in table:
            return None
        return sorted(c for c, (pp, cmd) in table.items() if pp == args.pid and args.match in cmd
                      and not (args.skip and args.skip in cmd))

    end = time.time() + args.duration
    kills, index = [], 0
    next_kill = time.time() + args.every
    while next_kill < end:
        time.sleep(max(0.0, next_kill - time.time()))
        next_kill += args.every
        before = workers()
        if not before:
            kills.append({"error": "master gone" if before is None else "no worker"})
            break
        victim = before[index % len(before)]
        index += 1
        t0 = time.time()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        rec = {"t": t0, "pid": victim, "ms": None}
        limit = t0 + max(args.every, 12.0)
        while time.time() < limit:
            now = workers()
            if now is None:
                rec["master_gone"] = True
                break
            new = [p for p in now if p not in before]
            if new and len(now) >= len(before):
                rec["ms"] = (time.time() - t0) * 1000
                rec["new_pid"] = new[0]
                break
            time.sleep(POLL_S)
        kills.append(rec)
        if rec.get("master_gone"):
            break
    with open(args.out, "w") as f:
        json.dump({"kills": kills}, f)


# ---------------------------------------------------------------------------- report
def fmt_ms(v):
    return "-" if v is None else ("%.0f" % v)


def table_rows(phases):
    """[(load name, (fault, requests, failed, recovered, note))] of a phases file."""
    rows = [json.loads(line) for line in open(phases) if line.strip()]
    table = []
    for r in rows:
        name = os.path.basename(r["load"])[len("load-"):-len(".json")]
        try:
            load = json.load(open(r["load"]))
        except (OSError, ValueError) as e:
            table.append((name, (r["fault"], "-", "-", "-", "no load result: %s" % e)))
            continue
        failed = sum(load["kinds"].values())
        total = load["ok"] + failed
        kinds = ", ".join("%s %d" % (k, v) for k, v in sorted(load["kinds"].items()))
        if load["statuses"]:
            kinds += " (" + ", ".join("%s x%d" % (s, n) for s, n in sorted(load["statuses"].items())) + ")"
        # Client side: for each fault, the last failure before the next fault (or the end).
        faults = sorted(r.get("faults", []))
        last_fail = []
        for i, t in enumerate(faults):
            t_next = faults[i + 1] if i + 1 < len(faults) else load["end"]
            fails = [e[0] for e in load["events"] if t <= e[0] < t_next]
            last_fail.append((max(fails) - t) * 1000 if fails else 0.0)
        rec = r.get("recovered")
        if rec == "client":
            rec_txt = fmt_ms(max(last_fail)) if last_fail else "-"
        elif isinstance(rec, list):
            vals = [v for v in rec if v is not None]
            if not vals:
                rec_txt = "never" if rec else "-"
            elif len(vals) == 1:
                rec_txt = fmt_ms(vals[0])
            else:
                rec_txt = "%s / %s" % (fmt_ms(statistics.median(vals)), fmt_ms(max(vals)))
            if len(vals) < len(rec):
                rec_txt += " (%d never)" % (len(rec) - len(vals))
        else:
            rec_txt = "-" if rec is None else str(rec)
        note = r.get("note", "")
        if failed:
            note = ("failed: %s. " % kinds) + note
        if "hold" in load:
            h = load["hold"]
            hf = sum(h["kinds"].values())
            note += " Holders (%d conns, %s): %d ok, %d failed%s." % (
                h["conns"], h["path"], h["ok"], hf,
                (" (" + ", ".join("%s %d" % kv for kv in sorted(h["kinds"].items())) + ")") if hf else "")
        if last_fail and rec != "client" and any(last_fail):
            note += " Last failure %s ms after its fault (max)." % fmt_ms(max(last_fail))
        table.append((name, (r["fault"], str(total), str(failed), rec_txt, note.strip())))
    return table


def report(args):
    table = [row for _, row in table_rows(args.phases)]
    w = [max(len(row[i]) for row in table + [("fault", "requests", "failed", "recovered (ms)", "")]) for i in range(4)]
    line = "%-*s | %*s | %*s | %*s | %s"
    print(line % (w[0], "fault", w[1], "requests", w[2], "failed", w[3], "recovered (ms)", "note"))
    print("-" * (sum(w) + 13) + "-+-" + "-" * 20)
    for row in table:
        print(line % (w[0], row[0], w[1], row[1], w[2], row[2], w[3], row[3], row[4]))


def compare(args):
    """Failed requests (of requests) and recovered per fault, one column per server."""
    servers = [spec.split("=", 1) for spec in args.servers]
    first = servers[0][0]
    by_server = {}
    for label, path in servers:
        rows = table_rows(path)
        prefix = "" if label == first else label + "-"
        by_server[label] = {n[len(prefix):]: row for n, row in rows if n.startswith(prefix)}
    order = [n for n, _ in table_rows(servers[0][1])]
    for label, _ in servers[1:]:
        order += [n for n in by_server[label] if n not in order]
    head = ["phase (load)"] + ["%s failed / requests" % label for label, _ in servers] + \
           ["%s recovered (ms)" % label for label, _ in servers]
    table = []
    for n in order:
        cells = [n]
        for label, _ in servers:
            row = by_server[label].get(n)
            cells.append("%s / %s" % (row[2], row[1]) if row else "not run")
        for label, _ in servers:
            row = by_server[label].get(n)
            cells.append(row[3] if row else "")
        table.append(cells)
    w = [max(len(c[i]) for c in table + [head]) for i in range(len(head))]
    print(" | ".join("%-*s" % (w[i], head[i]) for i in range(len(head))).rstrip())
    print("-+-".join("-" * x for x in w))
    for cells in table:
        print(" | ".join(("%-*s" if i == 0 else "%*s") % (w[i], cells[i]) for i in range(len(cells))).rstrip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--path", default="/")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--mode", choices=["keepalive", "close"], default="keepalive")
    p.add_argument("--hold", type=int, default=0)
    p.add_argument("--hold-path", default="/slow?ms=2000")
    p.add_argument("--hold-spread", type=float, default=0.0)
    p.add_argument("--ready-file", default="", help="written once the load is answered on every connection")
    p.add_argument("--out", required=True)
    p = sub.add_parser("status-poll")
    p.add_argument("--socket", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("kill-workers")
    p.add_argument("--socket", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--every", type=float, default=3.0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("phases")
    p = sub.add_parser("proc-sample")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--old-match", default="")
    p.add_argument("--out", required=True)
    p = sub.add_parser("kill-children")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--every", type=float, default=3.0)
    p.add_argument("--match", default="")
    p.add_argument("--skip", default="")
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare")
    p.add_argument("servers", nargs="+", help="NAME=PHASES.jsonl; the first is the reference")
    args = ap.parse_args()
    # SIGTERM from chaos.sh's cleanup: exit at once, without a traceback.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    if args.cmd == "load":
        asyncio.run(run_load(args))
    elif args.cmd == "status-poll":
        status_poll(args)
    elif args.cmd == "kill-workers":
        kill_workers(args)
    elif args.cmd == "proc-sample":
        proc_sample(args)
    elif args.cmd == "kill-children":
        kill_children(args)
    elif args.cmd == "compare":
        compare(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
