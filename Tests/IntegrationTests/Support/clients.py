#!/usr/bin/env python3
"""clients.py: HTTP/1.1 and WebSocket test clients the integration tests spawn.

Python 3 standard library only. Every command connects to 127.0.0.1:PORT, prints exactly one
JSON object on one line to stdout, and exits:

    0  the exchange went as expected (see each command)
    1  it completed, but not as expected (wrong status, checksum mismatch, ...)
    2  it could not complete: connection refused, timeout, protocol error (see "error")

Every command is bounded by --timeout seconds (default 30) in total. `--header 'name: value'`
(repeatable) adds a request header; `Host` defaults to 127.0.0.1:PORT unless given that way.

Commands:

  ws-echo --port P [--path /ws] [--messages N] [--size B] [--header k:v]
      WebSocket handshake (checks 101 and Sec-WebSocket-Accept), N messages alternating text
      and binary of B bytes each (default 16), each echo checked, a ping (pong checked), then
      a close handshake. Exit 0 if everything matched.
  upload --port P [--path /upload] --bytes N [--chunked] [--expect-continue] [--method POST]
      Streams N bytes of the pattern byte i = i % 256 (Content-Length, or chunked in 64 KiB
      chunks), printing the response status and body, and the local length and sha256. A
      response that arrives before the body is sent stops the sending ("early_response").
      --expect-continue waits for the 100 ("got_100") up to --continue-wait seconds (2).
      Exit 0 if the status is 2xx and, when the body is JSON with length/sha256, they match.
  download --port P [--path '/bytes?n=N'] [--method GET]
      Streams the response (Content-Length, chunked or until close), printing status, length
      and sha256; when the path has n=N, compares them with the pattern's. Exit 0 if 2xx and
      (when n is known) equal.
  raw --port P (--send-hex HEX | --send-file F) [--half-close] [--idle-ms MS]
      Sends exactly those bytes, then reads until the peer closes, resets, or nothing arrives
      for --idle-ms (default 1000). Prints the responses parsed in order (status, headers,
      body length), their status lines, and how the connection ended: "closed", "reset" or
      "open". Exit 0 whenever it ran (the test judges the result).
  slowloris --port P --connections N --interval S [--duration D]
      N connections each send a request line, then one header byte every S seconds, never
      finishing the head. Reports how and when each ended: "response" (with its status, e.g.
      408), "closed", "reset", or "open" when still open after --duration (default: --timeout
      minus 1 s). Exit 0 if the server ended every connection.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time

BLOCK = bytes(range(256)) * 256  # 64 KiB of the pattern
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = None  # time.monotonic() by which the command must be done


class Failure(Exception):
    """The exchange could not complete (exit 2)."""


def emit(result, code):
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    os._exit(code)


def remaining():
    left = DEADLINE - time.monotonic()
    if left <= 0:
        raise Failure("timeout")
    return left


def pattern(n):
    """Yields n bytes of the pattern in 64 KiB pieces."""
    full, rest = divmod(n, len(BLOCK))
    for _ in range(full):
        yield BLOCK
    if rest:
        yield BLOCK[:rest]


def pattern_sha(n):
    h = hashlib.sha256()
    for piece in pattern(n):
        h.update(piece)
    return h.hexdigest()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=remaining())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request_head(args, method, path, extra):
    names = {h.split(":", 1)[0].strip().lower() for h in args.header}
    lines = ["%s %s HTTP/1.1" % (method, path)]
    if "host" not in names:
        lines.append("Host: 127.0.0.1:%d" % args.port)
    lines += [h for h in extra if h.split(":", 1)[0].strip().lower() not in names]
    lines += [h if ":" in h else h + ":" for h in args.header]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Reader:
    """Buffered reads from a socket with the global deadline."""

    def __init__(self, sock, data=b""):
        self.sock = sock
        self.buf = bytearray(data)
        self.closed = False

    def fill(self):
        self.sock.settimeout(remaining())
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise Failure("timeout") from None
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def take(self, n):
        chunk = bytes(self.buf[:n])
        del self.buf[:n]
        return chunk

    def exactly(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise Failure("connection closed after %d of %d bytes" % (len(self.buf), n))
        return self.take(n)

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = self.take(i)
                del self.buf[:2]
                return line
            if len(self.buf) > 1 << 20:
                raise Failure("line too long")
            if not self.fill():
                raise Failure("connection closed in the middle of a line")

    def head(self):
        """Reads one response head, skipping 1xx. Returns (status, reason, headers, interim)."""
        interim = []
        while True:
            status_line = self.line().decode("latin-1")
            m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", status_line)
            if m is None:
                raise Failure("bad status line %r" % status_line[:200])
            headers = []
            while True:
                line = self.line()
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers.append([name.strip(), value.strip()])
            status = int(m.group(1))
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            return status, m.group(2) or "", headers, interim

    def body(self, headers, status, method):
        """Yields the response body in pieces (Content-Length, chunked, or until close)."""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding").lower()
        cl = [v for k, v in headers if k.lower() == "content-length"]
        if "chunked" in te:
            while True:
                size_line = self.line().split(b";")[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise Failure("bad chunk size %r" % size_line[:40]) from None
                if size == 0:
                    while self.line():  # trailers
                        pass
                    return
                while size:
                    if not self.buf and not self.fill():
                        raise Failure("connection closed inside a chunk")
                    piece = self.take(min(size, len(self.buf)))
                    size -= len(piece)
                    yield piece
                if self.exactly(2) != b"\r\n":
                    raise Failure("chunk not followed by CRLF")
        elif cl:
            left = int(cl[0])
            while left:
                if not self.buf and not self.fill():
                    raise Failure("connection closed %d bytes before the end of the body" % left)
                piece = self.take(min(left, len(self.buf)))
                left -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    yield self.take(len(self.buf))
                if not self.fill():
                    return

    def read_body(self, headers, status, method="GET"):
        return b"".join(self.body(headers, status, method))


def header_of(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


# ------------------------------------------------------------------------------ ws-echo
def ws_frame(opcode, payload, fin=True):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    if n:
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")
    return head + mask + payload


def ws_read_frame(r):
    b0, b1 = r.exactly(2)
    n = b1 & 0x7F
    if b1 & 0x80:
        raise Failure("server frame is masked")
    if n == 126:
        (n,) = struct.unpack("!H", r.exactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", r.exactly(8))
    return bool(b0 & 0x80), b0 & 0x0F, r.exactly(n)


def ws_read_message(r):
    """(opcode, payload) of the next data message, reassembling fragments; pongs included."""
    opcode, parts = None, []
    while True:
        fin, op, data = ws_read_frame(r)
        if op >= 0x8:
            if opcode is None:
                return op, data
            continue  # control frame inside a fragmented message
        if opcode is None:
            opcode = op
        parts.append(data)
        if fin:
            return opcode, b"".join(parts)


def cmd_ws_echo(args):
    result = {"command": "ws-echo", "messages": args.messages, "echoed": 0}
    s = connect(args.port)
    key = base64.b64encode(os.urandom(16))
    s.sendall(request_head(args, "GET", args.path, [
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key.decode(),
        "Sec-WebSocket-Version: 13"]))
    r = Reader(s)
    status, _, headers, _ = r.head()
    result["status"] = status
    result["response_headers"] = headers
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    result["accept_ok"] = header_of(headers, "sec-websocket-accept") == expected
    if status != 101 or not result["accept_ok"]:
        result["ok"] = False
        result["body"] = r.read_body(headers, status).decode("latin-1")[:500] if status != 101 else ""
        return result, 1
    mismatches = []
    for i in range(args.messages):
        opcode = 0x1 if i % 2 == 0 else 0x2
        if opcode == 0x1:
            text = ("message %d " % i)
            payload = (text * (args.size // len(text) + 1))[:args.size].encode()
        else:
            payload = bytes((i + j) % 256 for j in range(min(args.size, 256))) * (args.size // 256 + 1)
            payload = payload[:args.size]
        s.sendall(ws_frame(opcode, payload))
        op, data = ws_read_message(r)
        if op == opcode and data == payload:
            result["echoed"] += 1
        else:
            mismatches.append({"message": i, "sent_opcode": opcode, "got_opcode": op,
                               "sent_length": len(payload), "got_length": len(data)})
            if op == 0x8:
                break
    result["mismatches"] = mismatches[:10]
    s.sendall(ws_frame(0x9, b"ping!"))
    op, data = ws_read_message(r)
    result["pong"] = op == 0xA and data == b"ping!"
    s.sendall(ws_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    op, data = ws_read_message(r)
    result["close_code"] = struct.unpack("!H", data[:2])[0] if op == 0x8 and len(data) >= 2 else None
    # The server closes the TCP connection after its close frame.
    s.settimeout(min(2.0, remaining()))
    try:
        result["server_closed_tcp"] = s.recv(1) == b""
    except (socket.timeout, ConnectionResetError):
        result["server_closed_tcp"] = False
    s.close()
    ok = result["echoed"] == args.messages and result["pong"] and result["close_code"] == 1000
    result["ok"] = ok
    return result, 0 if ok else 1


# ------------------------------------------------------------------------------ upload
def cmd_upload(args):
    result = {"command": "upload", "length": args.bytes, "chunked": args.chunked}
    extra = ["Content-Type: application/octet-stream"]
    extra.append("Transfer-Encoding: chunked" if args.chunked else "Content-Length: %d" % args.bytes)
    if args.expect_continue:
        extra.append("Expect: 100-continue")
    s = connect(args.port)
    t0 = time.monotonic()
    s.sendall(request_head(args, args.method, args.path, extra))
    r = Reader(s)
    send_body = True
    if args.expect_continue:
        # Wait for the 100 (or a final answer) before sending the body; after --continue-wait
        # seconds without either, send the body anyway, as curl does after 1 s.
        wait_until = min(time.monotonic() + args.continue_wait, DEADLINE)
        s.settimeout(max(0.001, wait_until - time.monotonic()))
        while b"\r\n\r\n" not in r.buf and time.monotonic() < wait_until:
            s.settimeout(max(0.001, wait_until - time.monotonic()))
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                raise Failure("connection closed before 100 Continue")
            r.buf += data
        result["got_100"] = re.match(rb"HTTP/1\.[01] 100", r.buf) is not None and b"\r\n\r\n" in r.buf
        if result["got_100"]:
            r.line()
            while r.line():
                pass
        elif b"\r\n\r\n" in r.buf:
            send_body = False  # a final answer instead of 100: the body is not wanted
    sha = hashlib.sha256()
    wire = 0  # body bytes on the wire (chunk framing included)
    early = False
    if send_body:
        sel = selectors.DefaultSelector()
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)

        def pieces():
            for piece in pattern(args.bytes):
                sha.update(piece)
                yield (b"%x\r\n" % len(piece) + piece + b"\r\n") if args.chunked else piece
            if args.chunked:
                yield b"0\r\n\r\n"

        pending = memoryview(b"")
        it = pieces()
        while True:
            if not pending:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending = memoryview(nxt)
            events = sel.select(remaining())
            if not events:
                continue
            if events[0][1] & selectors.EVENT_READ:
                early = True  # the server answered (or closed) before the whole body was sent
                break
            try:
                k = s.send(pending)
            except (BrokenPipeError, ConnectionResetError) as e:
                early = True
                result["send_error"] = type(e).__name__
                break
            pending = pending[k:]
            wire += k
        sel.close()
        s.setblocking(True)
    result["wire_bytes_sent"] = wire
    result["early_response"] = early
    result["send_ms"] = round((time.monotonic() - t0) * 1000, 1)
    result["sha256"] = sha.hexdigest() if send_body and not early else None
    try:
        status, _, headers, interim = r.head()
        body = r.read_body(headers, status, args.method)
    except (ConnectionResetError, Failure) as e:
        if early or not send_body:
            result["error"] = "no response after the server stopped reading: %s" % e
            result["ok"] = False
            return result, 2
        raise
    result["status"] = status
    result["interim"] = interim
    result["response_headers"] = headers
    text = body.decode("latin-1")
    try:
        result["body"] = json.loads(text)
    except ValueError:
        result["body"] = text[:1000]
    ok = 200 <= status < 300 and send_body and not early
    if ok and isinstance(result["body"], dict) and "sha256" in result["body"]:
        result["match"] = result["body"].get("sha256") == result["sha256"] and \
            result["body"].get("length") == args.bytes
        ok = result["match"]
    result["ok"] = ok
    s.close()
    return result, 0 if ok else 1


# ------------------------------------------------------------------------------ download
def cmd_download(args):
    result = {"command": "download", "path": args.path}
    s = connect(args.port)
    t0 = time.monotonic()
    s.sendall(request_head(args, args.method, args.path, []))
    r = Reader(s)
    status, _, headers, interim = r.head()
    sha = hashlib.sha256()
    n = 0
    for piece in r.body(headers, status, args.method):
        sha.update(piece)
        n += len(piece)
    elapsed = time.monotonic() - t0
    s.close()
    result.update({"status": status, "length": n, "sha256": sha.hexdigest(), "response_headers": headers,
                   "chunked": "chunked" in (header_of(headers, "transfer-encoding") or "").lower(),
                   "interim": interim, "ms": round(elapsed * 1000, 1),
                   "mib_per_s": round(n / (1 << 20) / elapsed, 1) if elapsed > 0 else None})
    m = re.search(r"[?&]n=(\d+)", args.path)
    ok = 200 <= status < 300
    if m and "/bytes" in args.path and args.method != "HEAD":
        expected_n = int(m.group(1))
        result["expected_length"] = expected_n
        result["expected_sha256"] = pattern_sha(expected_n)
        result["match"] = n == expected_n and result["sha256"] == result["expected_sha256"]
        ok = ok and result["match"]
    result["ok"] = ok
    return result, 0 if ok else 1


# ------------------------------------------------------------------------------ raw
def parse_responses(data):
    """Responses in `data`, in order, framed by their headers; the rest is `tail`."""
    out = []
    r = Reader(None, data)
    r.fill = lambda: False  # parse only what was received
    while r.buf:
        start = len(data) - len(r.buf)
        try:
            status, reason, headers, interim = r.head()
            body = r.read_body(headers, status)
        except Failure:
            return out, data[start:]
        for code in interim:
            out.append({"status": code, "interim": True})
        out.append({"status": status, "reason": reason, "headers": headers, "body_length": len(body),
                    "body": body[:300].decode("latin-1")})
    return out, b""


def cmd_raw(args):
    if args.send_hex is not None:
        payload = bytes.fromhex(args.send_hex)
    else:
        with open(args.send_file, "rb") as f:
            payload = f.read()
    result = {"command": "raw", "sent": len(payload)}
    s = connect(args.port)
    t0 = time.monotonic()
    try:
        s.sendall(payload)
        result["send_error"] = None
    except (BrokenPipeError, ConnectionResetError) as e:
        result["send_error"] = type(e).__name__
    if args.half_close:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    received = bytearray()
    peer = "open"
    while True:
        try:
            s.settimeout(min(args.idle_ms / 1000.0, remaining()))
        except Failure:
            break
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            peer = "reset"
            break
        if not data:
            peer = "closed"
            break
        received += data
    result["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
    s.close()
    responses, tail = parse_responses(bytes(received))
    result.update({
        "peer": peer, "received": len(received), "responses": responses,
        "statuses": [x["status"] for x in responses],
        "status_lines": [m.decode("latin-1") for m in re.findall(rb"(?m)^HTTP/1\.[01] \d{3}[^\r\n]*", received)],
        "unparsed_tail": tail[:300].decode("latin-1"),
    })
    result["ok"] = True
    return result, 0


# ------------------------------------------------------------------------------ slowloris
def cmd_slowloris(args):
    duration = args.duration if args.duration is not None else max(0.5, args.timeout - 1.0)
    t0 = time.monotonic()
    stop_at = t0 + duration
    sel = selectors.DefaultSelector()
    conns = []
    drip = b"X-Slow-Header: " + b"a" * 100000
    head = request_head(args, "GET", args.path, [])
    head = head[:-2]  # request line and headers, without the empty line that would end the head
    for i in range(args.connections):
        c = {"index": i, "outcome": None, "bytes_sent": 0, "after_s": None, "status": None}
        try:
            s = socket.create_connection(("127.0.0.1", args.port), timeout=remaining())
            s.sendall(head)
            c["bytes_sent"] = len(head)
            s.setblocking(False)
        except OSError as e:
            c["outcome"] = "connect_error"
            c["error"] = type(e).__name__
            c["after_s"] = round(time.monotonic() - t0, 3)
            conns.append(c)
            continue
        c["sock"] = s
        c["received"] = bytearray()
        c["drip"] = 0
        sel.register(s, selectors.EVENT_READ, c)
        conns.append(c)
    next_drip = time.monotonic() + args.interval

    def end(c, outcome):
        c["outcome"] = outcome
        c["after_s"] = round(time.monotonic() - t0, 3)
        sel.unregister(c["sock"])
        c["sock"].close()

    while any(c["outcome"] is None for c in conns):
        now = time.monotonic()
        if now >= stop_at or now >= DEADLINE - 0.2:
            break
        for key, _ in sel.select(max(0.0, min(next_drip, stop_at, DEADLINE - 0.2) - now)):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except ConnectionResetError:
                end(c, "reset")
                continue
            except BlockingIOError:
                continue
            if not data:
                m = re.match(rb"HTTP/1\.[01] (\d{3})", bytes(c["received"]))
                if m:
                    c["status"] = int(m.group(1))
                end(c, "response" if m else "closed")
                continue
            c["received"] += data
            m = re.match(rb"HTTP/1\.[01] (\d{3})", bytes(c["received"]))
            if m and b"\r\n\r\n" in c["received"]:
                c["status"] = int(m.group(1))
        if time.monotonic() >= next_drip:
            next_drip += args.interval
            for c in conns:
                if c["outcome"] is not None:
                    continue
                try:
                    k = c["sock"].send(drip[c["drip"]:c["drip"] + 1])
                    c["drip"] += k
                    c["bytes_sent"] += k
                except (BrokenPipeError, ConnectionResetError):
                    end(c, "reset" if c["status"] is None else "response")
                except BlockingIOError:
                    pass
    for c in conns:
        if c["outcome"] is None:
            c["outcome"] = "response" if c["status"] is not None else "open"
            c["after_s"] = round(time.monotonic() - t0, 3) if c["status"] is not None else None
            c["sock"].close()
        c.pop("sock", None)
        c.pop("received", None)
        c.pop("drip", None)
    sel.close()
    summary = {}
    for c in conns:
        k = str(c["status"]) if c["outcome"] == "response" else c["outcome"]
        summary[k] = summary.get(k, 0) + 1
    ended = [c["after_s"] for c in conns if c["after_s"] is not None]
    ok = all(c["outcome"] in ("response", "closed", "reset") for c in conns)
    result = {"command": "slowloris", "connections": args.connections, "interval": args.interval,
              "duration": duration, "summary": summary, "results": conns, "ok": ok,
              "first_end_s": min(ended) if ended else None, "last_end_s": max(ended) if ended else None}
    return result, 0 if ok else 1


def main():
    global DEADLINE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole command (default 30)")
        p.add_argument("--header", action="append", default=[], help="'name: value', repeatable")

    p = sub.add_parser("ws-echo")
    common(p)
    p.add_argument("--path", default="/ws")
    p.add_argument("--messages", type=int, default=10)
    p.add_argument("--size", type=int, default=16, help="bytes per message (default 16)")
    p = sub.add_parser("upload")
    common(p)
    p.add_argument("--path", default="/upload")
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--chunked", action="store_true")
    p.add_argument("--expect-continue", action="store_true", help="send Expect: 100-continue")
    p.add_argument("--continue-wait", type=float, default=2.0,
                   help="with --expect-continue: seconds to wait for the 100 before sending anyway (default 2)")
    p.add_argument("--method", default="POST")
    p = sub.add_parser("download")
    common(p)
    p.add_argument("--path", default="/bytes?n=1048576")
    p.add_argument("--method", default="GET")
    p = sub.add_parser("raw")
    common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--send-hex")
    g.add_argument("--send-file")
    p.add_argument("--half-close", action="store_true", help="shutdown(SHUT_WR) after sending")
    p.add_argument("--idle-ms", type=float, default=1000.0, help="stop reading after this long without data")
    p = sub.add_parser("slowloris")
    common(p)
    p.add_argument("--path", default="/")
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=None)
    args = ap.parse_args()
    args.header = [h.replace(":", ": ", 1) if ": " not in h and ":" in h else h for h in args.header]

    DEADLINE = time.monotonic() + args.timeout

    def on_alarm(*_):
        emit({"command": args.command, "ok": False, "error": "timeout after %.1f s" % args.timeout}, 2)

    # A hard backstop, should a blocking call escape the deadline.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout + 0.5)
    handler = {"ws-echo": cmd_ws_echo, "upload": cmd_upload, "download": cmd_download,
               "raw": cmd_raw, "slowloris": cmd_slowloris}[args.command]
    try:
        result, code = handler(args)
    except (Failure, OSError) as e:
        emit({"command": args.command, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}, 2)
    emit(result, code)


if __name__ == "__main__":
    main()
