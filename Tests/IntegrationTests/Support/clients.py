#!/usr/bin/env python3
"""clients.py: HTTP/1.1 and WebSocket test clients the integration tests spawn.

Python 3 standard library only. Every command connects to 127.0.0.1:PORT, prints exactly one
JSON object on one line to stdout, and exits:

    0  the exchange went as expected (see each command)
    1  it completed, but not as expected (wrong status, checksum mismatch, ...)
    2  it could not complete: connection refused, timeout, protocol error (see "error")

Every command is bounded by --timeout seconds (default 30) in total. `--header 'name: value'`
(repeatable) adds a request header; `Host` defaults to 127.0.0.1:PORT unless given that way.
`--server-name N` makes any command speak TLS (Python's ssl, SNI N, the certificate checked
against N and the `--cafile` files, `--alpn` offered).

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
      minus 1 s), when each connection was made ("connected_s") and how long it lived
      ("lifetime_s"). Exit 0 if the server ended every connection.
  fuzz --port P --seed S [--random N] [--mutations M] [--case-timeout T] [--parallel K]
       [--direct-path /direct] [--proxy-path /echo] [--only NAME]
      Malformed and smuggling-shaped requests (a fixed corpus of named cases), N random byte
      blobs and M random mutations of valid requests (both from --seed), K connections at a
      time. Each case: connect, send, perhaps half-close, read until the server closes or
      --case-timeout passes ("open": a hang). Per case: name, kind, the statuses received and
      who sent each ("gateway", or "upstream" when it carries x-upstream), how the connection
      ended, the time, and "ok"/"why" against the case's expectation (a regular expression over
      the status classes, e.g. "24?" is a 2xx then perhaps a 4xx); never a 5xx, never open.
      Exit 0 if every case is ok.
  steady --port P --path /a [--path /b] --stop-file F [--interval-ms MS]
      Good requests, each on a new connection, the paths in turn, until F exists (or the
      timeout); each must be a 200. Reports the count, failures and latencies (max, p50, p99).
      Exit 0 if every request succeeded.
  tls --port P --server-name N --cafile F [--cafile F] [--alpn P] [--path /]
      [--then-file F --then request|wait]
      TLS as any command with --server-name, then GET PATH. Prints "cert_sha256" (the certificate served),
      "alpn", "version", "status", "connection" (the header) and "body". With --then-file, that
      is printed as a first line; then, once F exists, "request" sends a second request on the
      same connection ("second_status", "second_connection", "second_cert_sha256"), "wait" sends
      nothing; either way it reads until the server closes and reports how in "closed":
      "close_notify" (TLS close_notify, then the end), "eof" (the end without close_notify),
      "reset". Exit 0 if every response was a 200.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time

BLOCK = bytes(range(256)) * 256  # 64 KiB of the pattern
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = None  # time.monotonic() by which the command must be done
TLS = None  # (ssl.SSLContext, server name) with --server-name: every connection speaks TLS


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


def connect(port, ragged_eofs_raise=False):
    """A connection to 127.0.0.1:PORT, over TLS with --server-name. `ragged_eofs_raise`: an end
    of stream without close_notify raises ssl.SSLEOFError instead of reading as an end."""
    s = socket.create_connection(("127.0.0.1", port), timeout=remaining())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if TLS is not None:
        context, name = TLS
        s = context.wrap_socket(s, server_hostname=name, suppress_ragged_eofs=not ragged_eofs_raise)
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
                if TLS is not None:
                    # Readable may be TLS's own records (TLS 1.3 session tickets): an answer
                    # only if they carry bytes.
                    try:
                        data = s.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    r.buf += data
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
def parse_responses(data, head_below=0):
    """Responses in `data`, in order, framed by their headers; the rest is `tail`. A response to
    HEAD has a Content-Length but no body: a status below `head_below` followed by nothing or
    by the next status line is taken for one."""
    out = []
    r = Reader(None, data)
    r.fill = lambda: False  # parse only what was received
    while r.buf:
        start = len(data) - len(r.buf)
        try:
            status, reason, headers, interim = r.head()
            head = status < head_below and (not r.buf or bytes(r.buf[:7]) == b"HTTP/1.")
            body = r.read_body(headers, status, "HEAD" if head else "GET")
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
        c = {"index": i, "outcome": None, "bytes_sent": 0, "after_s": None, "status": None,
             "connected_s": None, "lifetime_s": None}
        try:
            s = socket.create_connection(("127.0.0.1", args.port), timeout=remaining())
            c["connected_s"] = round(time.monotonic() - t0, 3)
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
        if c["after_s"] is not None and c["connected_s"] is not None:
            c["lifetime_s"] = round(c["after_s"] - c["connected_s"], 3)
        c.pop("sock", None)
        c.pop("received", None)
        c.pop("drip", None)
    sel.close()
    summary = {}
    for c in conns:
        k = str(c["status"]) if c["outcome"] == "response" else c["outcome"]
        summary[k] = summary.get(k, 0) + 1
    ended = [c["after_s"] for c in conns if c["after_s"] is not None]
    lifetimes = [c["lifetime_s"] for c in conns if c["lifetime_s"] is not None]
    connected = [c["connected_s"] for c in conns if c["connected_s"] is not None]
    ok = all(c["outcome"] in ("response", "closed", "reset") for c in conns)
    result = {"command": "slowloris", "connections": args.connections, "interval": args.interval,
              "duration": duration, "summary": summary, "results": conns, "ok": ok,
              "first_end_s": min(ended) if ended else None, "last_end_s": max(ended) if ended else None,
              "last_connected_s": max(connected) if connected else None,
              "min_lifetime_s": min(lifetimes) if lifetimes else None,
              "max_lifetime_s": max(lifetimes) if lifetimes else None}
    return result, 0 if ok else 1


# ------------------------------------------------------------------------------ fuzz
REJECT = "4?"  # at most one response, a 4xx, and nothing else
ANY_BUT_5XX = "[1234]*"


def fuzz_corpus(direct, proxy):
    """(name, bytes, expectation, half_close) for each malformed or smuggling-shaped request.

    The expectation is a regular expression over the classes of the statuses received, in order:
    "4?" is at most one 4xx, "24?" a 2xx then perhaps a 4xx, "[24]" either (for input RFC 9110/9112
    lets a server accept or refuse). A case is half-closed only when the gateway may rightly wait
    for more: a whole head whose body is short (nothing bounds the wait for a body, see
    docs/gateway.md, "Limits and timeouts") or a request it may serve with keep-alive. The others
    stay open, so that only the gateway's own decision (or header_timeout) can end them."""
    host = b"Host: fuzz.test\r\n"
    d, p = direct.encode(), proxy.encode()

    def post(headers, body=b"", target=p, method=b"POST", version=b"HTTP/1.1"):
        return method + b" " + target + b" " + version + b"\r\n" + host + headers + b"\r\n" + body

    def get(target=d, headers=b"", version=b"HTTP/1.1", method=b"GET"):
        return method + b" " + target + b" " + version + b"\r\n" + host + headers + b"\r\n"

    def line(target=d, version=b"HTTP/1.1", method=b"GET"):
        return method + b" " + target + b" " + version + b"\r\n"

    chunked = b"Transfer-Encoding: chunked\r\n"
    good = get()
    cases = [
        # Framing: Content-Length and Transfer-Encoding.
        ("cl-and-te", post(b"Content-Length: 5\r\n" + chunked, b"0\r\n\r\n"), REJECT, False),
        ("te-and-cl", post(chunked + b"Content-Length: 5\r\n", b"0\r\n\r\n"), REJECT, False),
        ("cl-and-te-http10", post(b"Content-Length: 5\r\n" + chunked, b"0\r\n\r\n", version=b"HTTP/1.0"),
         REJECT, False),
        ("double-cl-different", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), REJECT, False),
        ("double-cl-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), "[24]", True),
        ("cl-list-different", post(b"Content-Length: 5, 6\r\n", b"hello!"), REJECT, False),
        ("cl-list-same", post(b"Content-Length: 5, 5\r\n", b"hello"), "[24]", True),
        ("cl-negative", post(b"Content-Length: -1\r\n"), REJECT, False),
        ("cl-plus-sign", post(b"Content-Length: +5\r\n", b"hello"), REJECT, False),
        ("cl-hex", post(b"Content-Length: 0x5\r\n", b"hello"), REJECT, False),
        ("cl-inner-space", post(b"Content-Length: 5 5\r\n", b"hello"), REJECT, False),
        ("cl-empty", post(b"Content-Length: \r\n"), REJECT, False),
        ("cl-letters", post(b"Content-Length: five\r\n", b"hello"), REJECT, False),
        ("cl-decimal-point", post(b"Content-Length: 5.0\r\n", b"hello"), REJECT, False),
        ("cl-int64-max", post(b"Content-Length: 9223372036854775807\r\n", b"hello"), REJECT, True),
        ("cl-uint64-max", post(b"Content-Length: 18446744073709551615\r\n", b"hello"), REJECT, True),
        ("cl-overflow-uint64", post(b"Content-Length: 18446744073709551616\r\n", b"hello"), REJECT, False),
        ("cl-huge", post(b"Content-Length: " + b"9" * 400 + b"\r\n", b"hello"), REJECT, False),
        ("cl-short-body", post(b"Content-Length: 10\r\n", b"hello"), REJECT, True),
        ("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
         REJECT, False),
        ("te-identity", post(b"Transfer-Encoding: identity\r\n", b"hello"), REJECT, False),
        ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("te-chunkedx", post(b"Transfer-Encoding: chunkedx\r\n", b"5\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b"hello"), REJECT, False),
        ("te-chunked-twice", post(chunked + chunked, b"5\r\nhello\r\n0\r\n\r\n"), "[24]", True),
        ("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), REJECT, False),
        ("te-vertical-tab", post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"), REJECT, False),
        ("te-obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), REJECT, False),
        ("te-nul", post(b"Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"), REJECT, False),
        ("te-upper-case", post(b"TRANSFER-ENCODING: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"), "2", True),
        # Chunk sizes and chunk framing.
        ("chunk-size-not-hex", post(chunked, b"zz\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-size-negative", post(chunked, b"-5\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-size-0x", post(chunked, b"0x5\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-size-overflow", post(chunked, b"F" * 17 + b"\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-size-overflow-long", post(chunked, b"1" * 300 + b"\r\nhello\r\n"), REJECT, False),
        ("chunk-size-int64-max", post(chunked, b"7FFFFFFFFFFFFFFF\r\nhello"), REJECT, True),
        ("chunk-size-empty", post(chunked, b"\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-size-trailing-space", post(chunked, b"5 \r\nhello\r\n0\r\n\r\n"), "[24]", True),
        ("chunk-data-too-long", post(chunked, b"3\r\nhello\r\n0\r\n\r\n"), REJECT, False),
        ("chunk-data-no-crlf", post(chunked, b"5\r\nhelloXX0\r\n\r\n"), REJECT, False),
        ("chunk-bare-lf", post(chunked, b"5\nhello\n0\n\n"), REJECT, False),
        ("chunk-no-last-chunk", post(chunked, b"5\r\nhello\r\n"), REJECT, True),
        ("chunk-extension-huge", post(chunked, b"5;" + b"a" * 100000 + b"\r\nhello\r\n0\r\n\r\n"), "[24]", True),
        ("chunk-trailer-obs-fold", post(chunked, b"0\r\nx-t: a\r\n b\r\n\r\n"), REJECT, False),
        ("chunk-trailer-nul", post(chunked, b"0\r\nx-t: a\x00b\r\n\r\n"), REJECT, False),
        # Line endings, whitespace and bytes in header fields.
        ("obs-fold", get(headers=b"X-A: a\r\n b\r\n"), REJECT, False),
        ("obs-fold-tab", get(headers=b"X-A: a\r\n\tb\r\n"), REJECT, False),
        ("first-header-folded", line() + b" Host: fuzz.test\r\n\r\n", REJECT, False),
        ("bare-lf-everywhere", good.replace(b"\r\n", b"\n"), "[24]", True),
        ("bare-lf-in-header", get(headers=b"X-A: a\nX-B: b\r\n"), "[24]", True),
        ("bare-cr-in-header", get(headers=b"X-A: a\rX-B: b\r\n"), REJECT, False),
        ("bare-cr-request-line", b"GET " + d + b" HTTP/1.1\r" + host + b"\r\n", REJECT, False),
        ("space-before-colon", get(headers=b"X-A : b\r\n"), REJECT, False),
        ("tab-before-colon", get(headers=b"X-A\t: b\r\n"), REJECT, False),
        ("host-space-before-colon", line() + b"Host : fuzz.test\r\n\r\n", REJECT, False),
        ("nul-in-name", get(headers=b"X-\x00A: b\r\n"), REJECT, False),
        ("nul-in-value", get(headers=b"X-A: a\x00b\r\n"), REJECT, False),
        ("ctl-in-name", get(headers=b"X-\x01A: b\r\n"), REJECT, False),
        ("ctl-in-value", get(headers=b"X-A: a\x01b\r\n"), REJECT, False),
        ("del-in-value", get(headers=b"X-A: a\x7fb\r\n"), REJECT, False),
        ("utf8-in-name", get(headers="X-Ä: b\r\n".encode()), REJECT, False),
        ("obs-text-in-value", get(headers=b"X-A: caf\xe9\r\n"), "[24]", True),
        ("no-colon", get(headers=b"NoColonHere\r\n"), REJECT, False),
        ("empty-name", get(headers=b": value\r\n"), REJECT, False),
        ("only-crlfs", b"\r\n" * 3, REJECT, False),
        ("leading-crlf", b"\r\n" + good, "[24]", True),
        # Host.
        ("missing-host", line() + b"\r\n", REJECT, False),
        ("missing-host-proxy", line(p) + b"X-A: b\r\n\r\n", REJECT, False),
        ("duplicate-host", get(headers=b"Host: other.test\r\n"), REJECT, False),
        ("duplicate-host-same", get(headers=host), REJECT, False),
        ("empty-host", line() + b"Host:\r\n\r\n", "[24]", True),
        ("host-with-space", line() + b"Host: a b\r\n\r\n", "[24]", True),
        ("http10-no-host", line(version=b"HTTP/1.0") + b"\r\n", "[24]", True),
        # Request targets.
        ("absolute-form", get(b"http://other.test" + p), "[24]", True),
        ("absolute-form-userinfo", get(b"http://user:pw@other.test" + p), "[24]", True),
        ("absolute-form-no-path", get(b"http://other.test"), "[24]", True),
        ("absolute-form-bad-port", get(b"http://other.test:99999" + p), "[24]", True),
        ("absolute-form-https", get(b"https://other.test" + p), "[24]", True),
        ("absolute-form-broken-ipv6", get(b"http://[::1" + p), REJECT, False),
        ("absolute-form-no-authority", get(b"http://" + p), "[24]", True),
        ("absolute-form-double-host", get(b"http://a.test" + p, headers=b"Host: b.test\r\n"), REJECT, False),
        ("asterisk-options", get(b"*", method=b"OPTIONS"), "[24]", True),
        ("asterisk-get", get(b"*"), "[24]", True),
        ("authority-form-get", get(b"fuzz.test:80"), "[24]", True),
        ("empty-target", b"GET  HTTP/1.1\r\n" + host + b"\r\n", REJECT, False),
        ("space-in-target", get(b"/a b"), REJECT, False),
        ("ctl-in-target", get(b"/a\x01b"), REJECT, False),
        ("nul-in-target", get(b"/a\x00b"), REJECT, False),
        ("fragment-in-target", get(d + b"#frag"), "[24]", True),
        ("dot-segments-above-root", get(b"/../../etc/passwd"), REJECT, False),
        ("encoded-slash", get(b"/a%2Fb"), REJECT, False),
        ("encoded-nul", get(b"/a%00b"), REJECT, False),
        ("broken-escape", get(b"/a%zz"), REJECT, False),
        ("double-spaces", b"GET  " + d + b"  HTTP/1.1\r\n" + host + b"\r\n", "[24]", True),
        # Sizes past the limits.
        ("overlong-request-line", get(b"/" + b"a" * 100000), REJECT, False),
        ("overlong-header-value", get(headers=b"X-A: " + b"a" * 70000 + b"\r\n"), REJECT, False),
        ("overlong-header-name", get(headers=b"X-" + b"a" * 70000 + b": b\r\n"), REJECT, False),
        ("many-headers", get(headers=b"".join(b"X-%d: v\r\n" % i for i in range(8000))), REJECT, False),
        ("overlong-method", line(method=b"A" * 70000), REJECT, False),
        # Methods, versions and other protocols.
        ("invalid-method-chars", line(method=b"G@T") + host + b"\r\n", REJECT, False),
        ("lower-case-method", line(method=b"get") + host + b"\r\n", REJECT, False),
        ("unknown-method", line(method=b"FROB") + host + b"\r\n", REJECT, False),
        ("http09", b"GET " + d + b"\r\n", REJECT, False),
        ("http09-half-closed", b"GET " + d + b"\r\n", REJECT, True),
        ("version-1.2", get(version=b"HTTP/1.2"), "[24]", True),
        ("version-2.0", get(version=b"HTTP/2.0"), REJECT, False),
        ("version-3.0", get(version=b"HTTP/3.0"), REJECT, False),
        ("version-lower-case", get(version=b"http/1.1"), REJECT, False),
        ("version-garbage", get(version=b"HTTP/1.1x"), REJECT, False),
        ("version-missing-minor", get(version=b"HTTP/1"), REJECT, False),
        ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", REJECT, False),
        ("http2-preface-and-frame", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
         REJECT, False),
        ("h2c-upgrade", get(headers=b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                            b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"), "[24]", True),
        ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)), REJECT, False),
        ("connect", b"CONNECT fuzz.test:443 HTTP/1.1\r\n" + host + b"\r\n", REJECT, False),
        ("connect-with-tunnel-bytes", b"CONNECT fuzz.test:443 HTTP/1.1\r\n" + host + b"\r\n" + good, REJECT, False),
        ("upgrade-websocket-on-direct", get(headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"), "[24]", True),
        # Pipelined smuggling.
        ("pipelined-good-then-garbage", good + b"\x00\x01garbage\r\n\r\n", "24?", False),
        ("pipelined-head-then-garbage", get(method=b"HEAD") + b"\x00\x01garbage\r\n\r\n", "24?", False),
        ("pipelined-proxied-then-garbage", get(p) + b"\x00\x01garbage\r\n\r\n", "24?", False),
        ("pipelined-proxied-then-bad-version", get(p) + get(version=b"HTTP/1.0X"), "24?", False),
        ("pipelined-then-half-closed", get(p) + good + get(p), "222", True),
        ("pipelined-good-then-cl-te", good + post(b"Content-Length: 4\r\n" + chunked, b"0\r\n\r\n"), "24?", False),
        ("pipelined-good-then-double-cl", good + post(b"Content-Length: 1\r\nContent-Length: 2\r\n", b"ab"),
         "24?", False),
        ("body-longer-than-cl-then-request", post(b"Content-Length: 5\r\n", b"hello" + good), "22", True),
        ("body-longer-than-cl-then-garbage", post(b"Content-Length: 5\r\n", b"hello" + b"XPOST / HTTP/1.1\r\n\r\n"),
         "24?", False),
        ("cl-zero-then-request", post(b"Content-Length: 0\r\n", good), "22", True),
        ("chunked-then-smuggled-te", post(chunked, b"0\r\n\r\n" + post(chunked + b"Content-Length: 3\r\n", b"0\r\n\r\n")),
         "24?", False),
        ("chunked-body-holding-a-request", post(chunked, b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good)), "2", True),
        ("get-with-cl-body-then-request", get(headers=b"Content-Length: 5\r\n") + b"hello" + good, "22", True),
        # RFC 9112 §6.1: faulty framing in HTTP/1.0, refused and closed (nginx does the same).
        ("te-http10-then-request", post(chunked, b"0\r\n\r\n", version=b"HTTP/1.0") + good, REJECT, True),
        # Nothing, or too little, within header_timeout.
        ("nothing", b"", "", False),
        ("nothing-half-closed", b"", "", True),
        ("partial-request-line", b"GET /dir", REJECT, False),
        ("partial-head", line() + host, REJECT, False),
        ("partial-head-half-closed", line() + host, REJECT, True),
    ]
    return cases


def fuzz_valid_requests(direct, proxy):
    host = b"Host: fuzz.test\r\n"
    d, p = direct.encode(), proxy.encode()
    return [
        ("get-direct", b"GET " + d + b" HTTP/1.1\r\n" + host + b"User-Agent: fuzz\r\nAccept: */*\r\n\r\n"),
        ("get-proxy", b"GET " + p + b"?a=1&b=2 HTTP/1.1\r\n" + host + b"Accept: */*\r\nX-Request-Id: abc\r\n\r\n"),
        ("head-direct", b"HEAD " + d + b" HTTP/1.1\r\n" + host + b"\r\n"),
        ("get-http10", b"GET " + p + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        ("post-cl", b"POST " + p + b" HTTP/1.1\r\n" + host + b"Content-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
         b"hello world"),
        ("post-chunked", b"POST " + p + b" HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ("post-expect", b"PUT " + d + b" HTTP/1.1\r\n" + host + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"),
        ("pipelined", b"GET " + d + b" HTTP/1.1\r\n" + host + b"\r\nGET " + p + b" HTTP/1.1\r\n" + host + b"\r\n"),
    ]


INTERESTING_LINES = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding: xchunked",
    b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999999999999999",
    b"Content-Length: 18446744073709551615", b"Host: other.test", b"Connection: close", b"Connection: upgrade",
    b"Upgrade: websocket", b"Expect: 100-continue", b"X-A: \x00", b" folded", b"X-A : b", b"", b"GET / HTTP/1.1",
    b"\x00", b"Connection: keep-alive, Upgrade",
]
INTERESTING_BYTES = b"\x00\r\n \t:;,\x7f\xff\x01\x0b%/?#"
INTERESTING_NUMBERS = [b"0", b"-1", b"1", b"65536", b"4294967296", b"9223372036854775808",
                       b"18446744073709551616", b"99999999999999999999999", b"0x10", b"00000000001", b"FFFFFFFF"]


def mutate(data, rng):
    """One to three mutations of `data`; returns (bytes, names of the mutations)."""
    names = []
    for _ in range(rng.randint(1, 3)):
        data = bytearray(data)
        op = rng.choice(["flip", "insert", "delete", "line-delete", "line-duplicate", "line-swap", "crlf",
                         "header", "number", "truncate", "repeat"])
        lines = bytes(data).split(b"\r\n")
        if op == "flip" and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == "insert":
            data.insert(rng.randint(0, len(data)), rng.choice(INTERESTING_BYTES))
        elif op == "delete" and data:
            del data[rng.randrange(len(data))]
        elif op == "line-delete" and len(lines) > 1:
            del lines[rng.randrange(len(lines))]
            data = b"\r\n".join(lines)
        elif op == "line-duplicate":
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        elif op == "line-swap" and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\r\n".join(lines)
        elif op == "crlf" and b"\r\n" in data:
            starts = [m.start() for m in re.finditer(b"\r\n", bytes(data))]
            i = rng.choice(starts)
            data[i:i + 2] = rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n\r\n", b""])
        elif op == "header":
            lines.insert(rng.randint(1, max(1, len(lines) - 1)), rng.choice(INTERESTING_LINES))
            data = b"\r\n".join(lines)
        elif op == "number":
            runs = [m.span() for m in re.finditer(rb"[0-9]+", bytes(data))]
            if runs:
                a, b = rng.choice(runs)
                data[a:b] = rng.choice(INTERESTING_NUMBERS)
        elif op == "truncate" and data:
            data = data[:rng.randrange(len(data))]
        elif op == "repeat" and data:
            a = rng.randrange(len(data))
            b = min(len(data), a + rng.randint(1, 64))
            data[b:b] = data[a:b] * rng.randint(1, 50)
        names.append(op)
        data = bytes(data)
    return bytes(data), names


def random_blob(rng):
    """A random input: raw bytes, printable text with line breaks, or HTTP words in random order."""
    kind = rng.choice(["bytes", "text", "words"])
    size = int(2 ** rng.uniform(0, 12))
    if kind == "bytes":
        return kind, bytes(rng.randrange(256) for _ in range(size))
    if kind == "text":
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :/-.\t\r\n"
        return kind, bytes(rng.choice(alphabet) for _ in range(size))
    words = [b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"PRI", b" ", b"/", b"/echo", b"*", b"HTTP/1.1",
             b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\n", b"\r\n\r\n", b"Host:", b"Content-Length:",
             b"Transfer-Encoding:", b"chunked", b"identity", b"0", b"5", b"ffffffffffffffff", b":", b";",
             b",", b"hello", b"\x00", b"\t", b"Connection:", b"close", b"upgrade", b"Upgrade:", b"Expect:",
             b"100-continue"]
    return kind, b"".join(rng.choice(words) for _ in range(rng.randint(1, 60)))


def status_class(status):
    return str(status // 100)


def fuzz_exchange(port, data, half_close, case_timeout):
    """Sends `data` on a new connection and reads until the server closes or `case_timeout`."""
    t0 = time.monotonic()
    deadline = min(t0 + case_timeout, DEADLINE - 0.5)
    out = {"peer": "open", "send_error": None}
    received = bytearray()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, deadline - time.monotonic()))
    except OSError as e:
        out.update(peer="connect_error", error=type(e).__name__, ms=0, received=b"")
        return out
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            out["send_error"] = type(e).__name__
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                out["peer"] = "reset"
                break
            if not chunk:
                out["peer"] = "closed"
                break
            received += chunk
    finally:
        s.close()
    out["ms"] = round((time.monotonic() - t0) * 1000, 1)
    out["received"] = bytes(received)
    return out


def fuzz_case(args, name, kind, data, expect, half_close):
    ex = fuzz_exchange(args.port, data, half_close, args.case_timeout)
    # Enough to frame the responses: whether each request (by its line's first word) was a HEAD.
    # Which request a response answers is known in the corpus: there, only a success can be
    # to a HEAD (an error answers what follows it, which the gateway could not read, and has its
    # body). A mutated HEAD can be refused itself: then its error has no body either.
    head_below = 0 if b"HEAD" not in data else 400 if kind == "malformed" else 600
    responses, tail = parse_responses(ex["received"], head_below)
    statuses = [r["status"] for r in responses]
    sources = ["upstream" if header_of(r.get("headers", []), "x-upstream") is not None else "gateway"
               for r in responses]
    classes = "".join(status_class(x) for x in statuses)
    why = None
    if ex["peer"] == "connect_error":
        why = "could not connect: %s" % ex.get("error")
    elif any(x >= 500 for x in statuses):
        why = "a 5xx"
    elif ex["peer"] == "open":
        why = "still open after %.1f s (a hang)" % args.case_timeout
    elif tail:
        why = "bytes that are not a response"
    elif re.fullmatch(expect, classes) is None:
        why = "statuses %s do not match %r" % (statuses, expect)
    case = {"name": name, "kind": kind, "statuses": statuses, "from": sources, "peer": ex["peer"],
            "ms": ex["ms"], "expect": expect, "half_close": half_close, "ok": why is None}
    if ex["send_error"]:
        case["send_error"] = ex["send_error"]
    if why is not None:
        case["why"] = why
        case["sent_length"] = len(data)
        case["sent"] = data[:300].decode("latin-1")
        case["response_bodies"] = [r.get("body", "")[:200] for r in responses]
        case["unparsed"] = tail[:200].decode("latin-1")
    return case


def fuzz_cases(args):
    """(name, kind, bytes, expectation, half_close) of every case of a seeded run."""
    rng = random.Random(args.seed)
    cases = [(name, "malformed", data, expect, half)
             for name, data, expect, half in fuzz_corpus(args.direct_path, args.proxy_path)]
    for i in range(args.random):
        kind, blob = random_blob(rng)
        # Words can make a request the gateway serves with keep-alive: half-close those.
        half = kind == "words" or rng.random() < 0.5
        cases.append(("random-%d-%s" % (i, kind), "random", blob, REJECT if kind != "words" else ANY_BUT_5XX, half))
    valid = fuzz_valid_requests(args.direct_path, args.proxy_path)
    for i in range(args.mutations):
        base, data = rng.choice(valid)
        mutated, ops = mutate(data, rng)
        # A mutated length can leave the gateway waiting for a body: the end of input ends it.
        cases.append(("mutated-%d-%s-%s" % (i, base, "+".join(ops)), "mutated", mutated, ANY_BUT_5XX, True))
    return cases


def cmd_corpus(args):
    """The fuzz run's inputs, without a server: the parser differential test feeds them to
    gatewayd's parser and to llhttp. Valid requests are included as they are."""
    cases = fuzz_cases(args)
    cases += [(name, "valid", data, None, False) for name, data in fuzz_valid_requests(args.direct_path, args.proxy_path)]
    return {"command": "corpus", "ok": True,
            "cases": [{"name": name, "kind": kind, "data": base64.b64encode(data).decode()}
                      for name, kind, data, _, _ in cases]}, 0


def cmd_fuzz(args):
    cases = fuzz_cases(args)
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
    results = [None] * len(cases)
    lock = threading.Lock()
    todo = iter(range(len(cases)))

    def worker():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            name, kind, data, expect, half = cases[i]
            results[i] = fuzz_case(args, name, kind, data, expect, half)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, DEADLINE - 0.3 - time.monotonic()))
    results = [r if r is not None else {"name": cases[i][0], "kind": cases[i][1], "ok": False,
                                        "why": "not run before the command's timeout"}
               for i, r in enumerate(results)]
    summary = {}
    for r in results:
        outcome = " ".join(str(x) for x in r.get("statuses", [])) or "none"
        outcome += " " + r.get("peer", "?")
        per_kind = summary.setdefault(r["kind"], {})
        per_kind[outcome] = per_kind.get(outcome, 0) + 1
    failures = [r for r in results if not r["ok"]]
    result = {"command": "fuzz", "seed": args.seed, "cases": results, "count": len(results),
              "failures": len(failures), "summary": summary, "ok": not failures,
              "seconds": round(time.monotonic() - t0, 2),
              "slowest_ms": max((r.get("ms", 0) for r in results), default=0)}
    return result, 0 if not failures else 1


# ------------------------------------------------------------------------------ steady
def cmd_steady(args):
    """Good requests on new connections, until the stop file appears."""
    paths = args.path or ["/"]
    latencies = []
    failures = []
    stopped_by = "timeout"
    i = 0
    t0 = time.monotonic()
    while time.monotonic() < DEADLINE - args.request_timeout - 0.5:
        if os.path.exists(args.stop_file):
            stopped_by = "stop-file"
            break
        path = paths[i % len(paths)]
        i += 1
        started = time.monotonic()
        head = request_head(args, "GET", path, ["Connection: close"])
        ex = fuzz_exchange(args.port, head, False, args.request_timeout)
        elapsed = (time.monotonic() - started) * 1000
        responses, _ = parse_responses(ex["received"])
        if ex["peer"] == "closed" and len(responses) == 1 and responses[0]["status"] == 200:
            latencies.append(elapsed)
        else:
            failures.append({"path": path, "at_s": round(started - t0, 3), "peer": ex["peer"],
                             "statuses": [r["status"] for r in responses], "ms": round(elapsed, 1)})
        time.sleep(args.interval_ms / 1000.0)
    latencies.sort()

    def pct(q):
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

    ok = not failures and stopped_by == "stop-file" and bool(latencies)
    result = {"command": "steady", "requests": len(latencies) + len(failures), "succeeded": len(latencies),
              "failures": failures[:20], "failed": len(failures), "stopped_by": stopped_by,
              "max_ms": round(latencies[-1], 1) if latencies else None, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
              "seconds": round(time.monotonic() - t0, 2), "ok": ok}
    return result, 0 if ok else 1


def tls_request(reader, args, path):
    reader.sock.sendall(request_head(args, "GET", path, []))
    status, _, headers, _ = reader.head()
    return status, header_of(headers, "connection"), reader.read_body(headers, status).decode("latin-1")


def tls_close_kind(reader):
    """Reads until the server ends the connection; how it did."""
    try:
        while reader.fill():
            reader.take(len(reader.buf))
    except ssl.SSLEOFError:
        return "eof"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    return "close_notify"


def cmd_tls(args):
    if TLS is None:
        raise Failure("tls needs --server-name")
    args.header.append("Host: %s" % args.server_name)
    # Ragged EOFs raise: a close without close_notify must be told from one with it.
    sock = connect(args.port, ragged_eofs_raise=True)
    reader = Reader(sock)
    certificate = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
    status, connection, body = tls_request(reader, args, args.path)
    result = {"command": "tls", "cert_sha256": certificate, "alpn": sock.selected_alpn_protocol(),
              "version": sock.version(), "status": status, "connection": connection, "body": body}
    if not args.then_file:
        return result, 0 if status == 200 else 1
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    while not os.path.exists(args.then_file):
        remaining()
        time.sleep(0.01)
    ok = status == 200
    if args.then == "request":
        second, connection, _ = tls_request(reader, args, args.path)
        result.update(second_status=second, second_connection=connection,
                      second_cert_sha256=hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest())
        ok = ok and second == 200
    result["closed"] = tls_close_kind(reader)
    return result, 0 if ok else 1


# --- HTTP/2, by hand: frames and HPACK literals (no Huffman), enough to misbehave on purpose.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_WINDOW = 0, 1, 3, 4, 6, 7, 8


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(n, prefix):
    top = (1 << prefix) - 1
    if n < top:
        return bytes([n])
    out = [top]
    n -= top
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack_block(fields):
    """Literal fields without indexing, new names, raw strings."""
    out = b""
    for name, value in fields:
        out += b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value
    return out


def h2_get(path, extra=()):
    return hpack_block([(b":method", b"GET"), (b":scheme", b"http"), (b":path", path),
                        (b":authority", b"localhost")] + list(extra))


class H2Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def frame(self):
        """The next frame (kind, flags, stream, payload), or None at the end of the connection."""
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    head, self.buf = self.buf[:9 + length], self.buf[9 + length:]
                    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7fffffff, head[9:]
            self.sock.settimeout(remaining())
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not data:
                return None
            self.buf += data


def cmd_h2(args):
    sock = connect(args.port)
    reader = H2Reader(sock)
    sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
    result = {"command": "h2", "scenario": args.scenario, "goaways": [], "resets": {}, "bodies": {}}

    def read_all(until_stream_end=None, answer_pings=True):
        """Frames until the connection ends (or the given stream ends): GOAWAYs, resets, bodies."""
        while True:
            frame = reader.frame()
            if frame is None:
                result["closed"] = True
                return
            kind, flags, stream, payload = frame
            if kind == H2_GOAWAY:
                result["goaways"].append([int.from_bytes(payload[:4], "big") & 0x7fffffff,
                                          int.from_bytes(payload[4:8], "big")])
            elif kind == H2_RST:
                result["resets"][str(stream)] = int.from_bytes(payload[:4], "big")
            elif kind == H2_PING and not flags & 1 and answer_pings:
                sock.sendall(h2_frame(H2_PING, 1, 0, payload))
            elif kind == H2_SETTINGS and not flags & 1:
                sock.sendall(h2_frame(H2_SETTINGS, 1, 0))
            elif kind == H2_DATA:
                key = str(stream)
                result["bodies"][key] = result["bodies"].get(key, "") + payload.decode("latin-1")
            if kind in (H2_DATA, H2_HEADERS) and flags & 1 and stream == until_stream_end:
                return

    if args.scenario == "rapid-reset":
        # CVE-2023-44487: open streams and cancel them at once, as fast as the socket takes it.
        block = h2_get(args.path.encode())
        batch = b""
        for i in range(args.streams):
            stream = 2 * i + 1
            batch += h2_frame(H2_HEADERS, 0x5, stream, block) + h2_frame(H2_RST, 0, stream, struct.pack(">I", 8))
            if len(batch) > 16384:
                try:
                    sock.sendall(batch)
                except (ConnectionResetError, BrokenPipeError):
                    break
                batch = b""
        try:
            sock.sendall(batch)
        except (ConnectionResetError, BrokenPipeError):
            pass
        result["closed"] = False
        read_all()
        codes = [code for _, code in result["goaways"]]
        return result, 0 if 11 in codes and result["closed"] else 1
    if args.scenario == "malformed":
        # An uppercase name, a connection-specific field, a CR LF in a value, an absolute-form
        # :path, then a good request on the same connection.
        sock.sendall(h2_frame(H2_HEADERS, 0x5, 1, h2_get(args.path.encode(), [(b"X-Upper", b"1")]))
                     + h2_frame(H2_HEADERS, 0x5, 3, h2_get(args.path.encode(), [(b"transfer-encoding", b"chunked")]))
                     + h2_frame(H2_HEADERS, 0x5, 5, h2_get(args.path.encode(), [(b"x-bad", b"a\r\nb: c")]))
                     + h2_frame(H2_HEADERS, 0x5, 7, h2_get(b"http://elsewhere" + args.path.encode()))
                     + h2_frame(H2_HEADERS, 0x5, 9, h2_get(args.path.encode())))
        result["closed"] = False
        read_all(until_stream_end=9)
        ok = all(result["resets"].get(s) == 1 for s in ("1", "3", "5", "7")) and "9" in result["bodies"]
        return result, 0 if ok else 1
    if args.scenario == "goaway":
        # One request, then wait for the drain: a GOAWAY pair, then the close.
        sock.sendall(h2_frame(H2_HEADERS, 0x5, 1, h2_get(args.path.encode())))
        result["closed"] = False
        read_all(until_stream_end=1)
        sys.stdout.write(json.dumps({"command": "h2", "first": True, "bodies": result["bodies"]}) + "\n")
        sys.stdout.flush()
        read_all()
        ids = [last for last, _ in result["goaways"]]
        ok = result["closed"] and ids == [0x7fffffff, 1] and all(code == 0 for _, code in result["goaways"])
        return result, 0 if ok else 1
    raise Failure("unknown scenario %s" % args.scenario)


def main():
    global DEADLINE, TLS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole command (default 30)")
        p.add_argument("--header", action="append", default=[], help="'name: value', repeatable")
        p.add_argument("--server-name", help="speak TLS, with this SNI name")
        p.add_argument("--cafile", action="append", default=[], help="with --server-name: a trusted certificate")
        p.add_argument("--alpn", action="append", default=[], help="with --server-name: a protocol to offer")

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
    p = sub.add_parser("fuzz")
    common(p)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--random", type=int, default=300, help="random byte blobs (default 300)")
    p.add_argument("--mutations", type=int, default=300, help="mutated valid requests (default 300)")
    p.add_argument("--case-timeout", type=float, default=4.0, help="seconds one case may take (default 4)")
    p.add_argument("--parallel", type=int, default=16, help="cases at a time (default 16)")
    p.add_argument("--direct-path", default="/direct")
    p.add_argument("--proxy-path", default="/echo")
    p.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    p = sub.add_parser("corpus", help="print the fuzz run's inputs (base64) for the parser differential test")
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--random", type=int, default=300)
    p.add_argument("--mutations", type=int, default=300)
    p.add_argument("--direct-path", default="/direct")
    p.add_argument("--proxy-path", default="/echo")
    p = sub.add_parser("steady")
    common(p)
    p.add_argument("--path", action="append", default=[])
    p.add_argument("--stop-file", required=True)
    p.add_argument("--interval-ms", type=float, default=10.0, help="pause between requests (default 10)")
    p.add_argument("--request-timeout", type=float, default=5.0, help="seconds one request may take (default 5)")
    p = sub.add_parser("h2", help="HTTP/2 written by hand: rapid reset, malformed requests, the GOAWAY drain")
    common(p)
    p.add_argument("--scenario", choices=["rapid-reset", "malformed", "goaway"], required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--streams", type=int, default=2000, help="rapid-reset: streams opened and reset")
    p = sub.add_parser("tls")
    common(p)
    p.add_argument("--path", default="/")
    p.add_argument("--then-file")
    p.add_argument("--then", choices=["request", "wait"], default="wait")
    args = ap.parse_args()
    args.header = [h.replace(":", ": ", 1) if ": " not in h and ":" in h else h for h in args.header]

    DEADLINE = time.monotonic() + args.timeout
    if getattr(args, "server_name", None):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for path in args.cafile:
            context.load_verify_locations(cafile=path)
        if args.alpn:
            context.set_alpn_protocols(args.alpn)
        TLS = (context, args.server_name)
    # slowloris and fuzz hold a socket per connection: allow as many as the hard limit does.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def on_alarm(*_):
        emit({"command": args.command, "ok": False, "error": "timeout after %.1f s" % args.timeout}, 2)

    # A hard backstop, should a blocking call escape the deadline.
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout + 0.5)
    handler = {"ws-echo": cmd_ws_echo, "upload": cmd_upload, "download": cmd_download,
               "raw": cmd_raw, "slowloris": cmd_slowloris, "fuzz": cmd_fuzz, "steady": cmd_steady,
               "corpus": cmd_corpus, "tls": cmd_tls, "h2": cmd_h2}[args.command]
    try:
        result, code = handler(args)
    except (Failure, OSError) as e:
        emit({"command": args.command, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}, 2)
    emit(result, code)


if __name__ == "__main__":
    main()
