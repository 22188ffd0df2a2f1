#!/usr/bin/env python3
"""demo-upstream.py: a small HTTP/1.1 origin server for gatewayd's demo (`make run`) and tests.

Python 3 standard library only, one process, one asyncio event loop. Listens on 127.0.0.1 only.

    demo-upstream.py --port 9001 --name api-1      # --port 0: the kernel picks a free port

Once listening it prints exactly one line, `READY <port>`, to stdout and flushes it; tests wait
for that line. SIGTERM and SIGINT exit at once. `--exit-on-stdin-eof` also exits when stdin
reaches end of file (a test harness that dies takes its upstreams with it).

HTTP/1.1: keep-alive (HTTP/1.0 too, with `Connection: keep-alive`), pipelined requests answered
in order, Content-Length and chunked request bodies (read as a stream, never held whole),
`Expect: 100-continue` (the 100 is sent before the body is read), HEAD. Framing is strict, as a
back end behind a proxy should be: a request with both Content-Length and Transfer-Encoding,
a Transfer-Encoding other than `chunked`, differing Content-Lengths, obs-fold, a space before
a header's colon, bare CR or LF, a missing Host in HTTP/1.1, or a bad chunk size gets 400 (or
501, 505, 431) and the connection is closed after the answer.

Every response carries `x-upstream: NAME` and a `date`. Endpoints (prefix match on the path;
parameters in the query string):

  /echo...           any method: 200 JSON {name, method, path (the raw target, query included),
                     version, headers: [[name, value], ...] as received, in order,
                     body_length, body_sha256, trailers: [[name, value], ...]}
  /bytes?n=N         N bytes of the pattern byte i = i % 256 (bytes(range(256)) repeated),
                     written 64 KiB at a time, with Content-Length; &chunked=1: chunked
  /bytes-sha?n=N     text/plain: the sha256 hex of what /bytes?n=N sends, and "\\n"
  /upload            POST or PUT: reads the body as a stream, 200 JSON {length, sha256}
  /slow?ms=N         waits N ms, then 200 "slow\\n"
  /status?code=N     answers with status N (200-599) and the body "status N\\n"
  /hang              reads the request, never answers; closes when the client does
  /close             reads the request, closes (FIN) without a response
  /reset             reads the request, closes with RST (SO_LINGER 0)
  /drop?on=NAME      reads the request; on the upstream named NAME (every one if `on` is
                     absent) closes (FIN) without a response, elsewhere answers like any
                     other path (200 "ok NAME\n"); &partial=1: sends "HTTP/1.1 200" (part
                     of a status line) before closing; &reset=1: closes with RST
  /stall?after=N     a 200 head announcing 1 MiB (Content-Length), N body bytes (default 0),
                     then nothing more until the client closes
  /chunked           chunked response "chunk 0\\nchunk 1\\nchunk 2\\n" with the trailer
                     x-checksum: sha256 hex of that body (announced with `trailer: x-checksum`)
  /headers?n=K&size=S  K response headers x-h-0 ... x-h-(K-1), each value S bytes long
  /ws                WebSocket (RFC 6455): 101, then every text/binary frame echoed as is
                     (unmasked), ping answered with pong, close answered with close
  /stats             JSON {requests, connections_accepted, connections_open}; /stats itself
                     is not counted in `requests`
  anything else      200 "ok NAME\\n" (text/plain): the cheap path benchmarks hit

`requests` counts every request whose head was read, whatever the endpoint did with it (a
/close or /reset counts too), so a test can see how many attempts a gateway made.
"""

import argparse
import asyncio
import base64
import codecs
import functools
import hashlib
import http
import json
import os
import re
import signal
import socket
import struct
import sys
import time
from email.utils import formatdate
from urllib.parse import parse_qs

MAX_HEAD = 64 * 1024  # request line + headers; above: 431
MAX_HEADERS = 256  # header fields in one request; above: 431
MAX_LINE = 4096  # a chunk-size line
READ_HIGH = 1 << 20  # a busy connection stops reading when this much is buffered
WRITE_HIGH = 1 << 20  # transport write buffer high-water mark
LINGER_S = 2.0  # after a "Connection: close" answer, read and drop the client's bytes this long
WS_MAX_MESSAGE = 64 << 20  # above: close 1009
BLOCK = bytes(range(256)) * 256  # 64 KiB of the /bytes pattern (a whole number of periods)
EMPTY_SHA = hashlib.sha256().hexdigest()
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# name ":" OWS value OWS; the value has no control characters but HTAB (obs-text allowed).
HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[\x20-\x7e\t\x80-\xff]*)?")
DIGITS = re.compile(rb"[0-9]{1,18}")

REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def reason(status):
    return REASONS.get(status, b"Unknown")


class HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Closed(Exception):
    """The client closed (or reset) the connection while more was expected."""


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "length", "chunked",
                 "keep", "expect", "trailers")

    def header(self, name):
        """The value of the first field named `name` (lower-case bytes), or None."""
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def params(self):
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}


def parse_head(buf):
    """Takes one request head off the front of `buf` (a bytearray). None if incomplete."""
    # RFC 9112 2.2: ignore empty lines before a request line.
    while buf[:2] == b"\r\n":
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HTTPError(431, "request head too large")
        if buf.count(b"\n") != buf.count(b"\r\n"):
            raise HTTPError(400, "bare LF in the request head")
        return None
    if end > MAX_HEAD:
        raise HTTPError(431, "request head too large")
    head = bytes(buf[:end])
    del buf[:end + 4]
    lines = head.split(b"\r\n")
    m = REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise HTTPError(400, "bad request line")
    if m.group(3) != b"1":
        raise HTTPError(505, "only HTTP/1.x")
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(431, "too many header fields")
    req = Request()
    req.method = m.group(1).decode("ascii")
    target = m.group(2).decode("ascii")
    req.target = target
    req.version = 10 if m.group(4) == b"0" else 11
    headers = []
    lengths = []
    te = None
    conn_tokens = ()
    hosts = 0
    req.expect = False
    for line in lines[1:]:
        h = HEADER_LINE.fullmatch(line)
        if h is None:
            raise HTTPError(400, "bad header field")
        name, value = h.group(1), h.group(2)
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            for part in value.split(b","):
                part = part.strip()
                if DIGITS.fullmatch(part) is None:
                    raise HTTPError(400, "bad content-length")
                lengths.append(int(part))
        elif lname == b"transfer-encoding":
            te = (te + b"," + value) if te is not None else value
        elif lname == b"connection":
            conn_tokens = conn_tokens + tuple(t.strip().lower() for t in value.split(b","))
        elif lname == b"host":
            hosts += 1
        elif lname == b"expect":
            if value.lower() != b"100-continue":
                raise HTTPError(417, "unsupported expectation")
            req.expect = req.version == 11
    req.headers = headers
    if hosts > 1 or (hosts == 0 and req.version == 11):
        raise HTTPError(400, "exactly one host header is required")
    req.chunked = False
    req.length = 0
    if te is not None:
        if req.version == 10:
            raise HTTPError(400, "transfer-encoding in HTTP/1.0")
        if lengths:
            raise HTTPError(400, "both content-length and transfer-encoding")
        codings = [c.strip().lower() for c in te.split(b",")]
        if codings != [b"chunked"]:
            raise HTTPError(501 if codings[-1] == b"chunked" else 400, "unsupported transfer-encoding")
        req.chunked = True
    elif lengths:
        if len(set(lengths)) != 1:
            raise HTTPError(400, "differing content-lengths")
        req.length = lengths[0]
    if req.version == 11:
        req.keep = b"close" not in conn_tokens
    else:
        req.keep = b"keep-alive" in conn_tokens and b"close" not in conn_tokens
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        scheme_end = path.find("://")
        if scheme_end > 0:  # absolute-form
            slash = path.find("/", scheme_end + 3)
            path = path[slash:] if slash >= 0 else "/"
    req.path = path
    req.query = query
    req.trailers = []
    return req


@functools.lru_cache(maxsize=64)
def pattern_sha256(n):
    h = hashlib.sha256()
    full, rest = divmod(n, len(BLOCK))
    big = BLOCK * 16  # 1 MiB updates: fewer calls
    for _ in range(full // 16):
        h.update(big)
    for _ in range(full % 16):
        h.update(BLOCK)
    h.update(BLOCK[:rest])
    return h.hexdigest()


def int_param(params, name, default, lo, hi):
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise HTTPError(400, "missing parameter %s" % name)
        return default
    try:
        v = int(raw)
    except ValueError:
        raise HTTPError(400, "parameter %s is not an integer" % name) from None
    if not lo <= v <= hi:
        raise HTTPError(400, "parameter %s must be in %d..%d" % (name, lo, hi))
    return v


def header_value(size):
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    s = (alphabet * (size // len(alphabet) + 1))[:size]
    return s.encode()


class Server:
    def __init__(self, name):
        self.name = name
        self.name_b = name.encode()
        self.requests = 0
        self.connections_accepted = 0
        self.connections_open = 0
        self._date_t = -1
        self._date = b""
        self.ok_body = ("ok %s\n" % name).encode()
        self._ok_cache = {}  # (version, keep, head) -> response bytes, for the current second

    def date(self):
        t = int(time.time())
        if t != self._date_t:
            self._date_t = t
            self._date = formatdate(t, usegmt=True).encode()
            self._ok_cache.clear()
        return self._date

    def head(self, req, status, headers, length=None, chunked=False, keep=True):
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
        for k, v in headers:
            parts.append(k + b": " + v + b"\r\n")
        if chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        elif length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        parts.append(b"x-upstream: " + self.name_b + b"\r\ndate: " + self.date() + b"\r\n")
        if not keep:
            parts.append(b"connection: close\r\n")
        elif req is not None and req.version == 10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def ok_response(self, req, keep):
        self.date()  # clears the cache when the second changes
        key = (req.version, keep, req.method == "HEAD")
        r = self._ok_cache.get(key)
        if r is None:
            h = self.head(req, 200, [(b"content-type", b"text/plain")], len(self.ok_body), keep=keep)
            r = h if key[2] else h + self.ok_body
            self._ok_cache[key] = r
        return r

    # ---- endpoints answered from the request head alone (body, if any, read before)
    def sync_handler(self, path):
        if path.startswith("/echo"):
            return self.echo
        if path.startswith("/status"):
            return self.status
        if path.startswith("/stats"):
            return self.stats
        if path.startswith("/headers"):
            return self.many_headers
        if path.startswith(("/bytes", "/upload", "/slow", "/hang", "/close", "/reset", "/chunked", "/ws", "/drop",
                            "/stall")):
            return None
        return self.ok

    def ok(self, req, length, sha):
        """The default endpoint: a marker, answered from a cache by Connection.process."""
        raise AssertionError("answered by Connection")

    def echo(self, req, length, sha):
        body = json.dumps({
            "name": self.name, "method": req.method, "path": req.target,
            "version": "1.0" if req.version == 10 else "1.1",
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
            "body_length": length, "body_sha256": sha,
            "trailers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.trailers],
        }).encode()
        return 200, [(b"content-type", b"application/json")], body

    def status(self, req, length, sha):
        code = int_param(req.params(), "code", None, 200, 599)
        body = b"" if code in (204, 304) else b"status %d\n" % code
        return code, [(b"content-type", b"text/plain")], body

    def stats(self, req, length, sha):
        body = json.dumps({"requests": self.requests, "connections_accepted": self.connections_accepted,
                           "connections_open": self.connections_open}).encode()
        return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], body

    def many_headers(self, req, length, sha):
        p = req.params()
        n = int_param(p, "n", 10, 0, 100000)
        size = int_param(p, "size", 16, 0, 1 << 20)
        value = header_value(size)
        headers = [(b"x-h-%d" % i, value) for i in range(n)]
        headers.append((b"content-type", b"text/plain"))
        return 200, headers, b"headers %d\n" % n


class Connection(asyncio.Protocol):
    def __init__(self, server):
        self.srv = server
        self.buf = bytearray()
        self.t = None
        self.busy = False  # a coroutine owns the connection (slow path)
        self.closing = False
        self.eof = False
        self.lost = False
        self.discard = False  # lingering close, or /hang: drop what arrives
        self.read_paused = False
        self.paused_by_write = False
        self.write_paused = False
        self.waiter = None  # future: more data, EOF or loss
        self.drain_waiter = None
        self.closed_waiter = None
        self.linger = None

    # ---- asyncio.Protocol
    def connection_made(self, transport):
        self.t = transport
        self.srv.connections_accepted += 1
        self.srv.connections_open += 1
        transport.set_write_buffer_limits(high=WRITE_HIGH)

    def connection_lost(self, exc):
        self.lost = True
        self.closing = True
        self.srv.connections_open -= 1
        if self.linger is not None:
            self.linger.cancel()
        for f in (self.waiter, self.drain_waiter, self.closed_waiter):
            if f is not None and not f.done():
                f.set_result(None)

    def data_received(self, data):
        if self.discard:
            return
        self.buf += data
        if self.busy:
            w = self.waiter
            if w is not None and not w.done():
                w.set_result(None)
            if len(self.buf) > READ_HIGH and not self.read_paused:
                self.read_paused = True
                self.t.pause_reading()
            return
        self.process()

    def eof_received(self):
        self.eof = True
        if self.discard:  # lingering close or /hang: the client is done
            if self.closed_waiter is not None and not self.closed_waiter.done():
                self.closed_waiter.set_result(None)
            self.t.close()
            return True
        if self.busy:
            w = self.waiter
            if w is not None and not w.done():
                w.set_result(None)
            return True
        self.process()  # complete requests were answered already; this closes
        return True

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self.paused_by_write:
            self.paused_by_write = False
            if not self.busy:
                self.read_paused = False
                self.t.resume_reading()
                self.process()

    # ---- request loop
    def process(self):
        """Answers every complete request in the buffer that can be answered at once; hands
        the first one that cannot to a coroutine, which calls back here when done."""
        srv = self.srv
        buf = self.buf
        while not self.busy and not self.closing:
            if self.t.is_closing():  # a write failed (the peer reset): connection_lost follows
                self.closing = True
                return
            if self.write_paused:  # a client that pipelines and does not read: stop reading
                self.paused_by_write = True
                if not self.read_paused:
                    self.read_paused = True
                    self.t.pause_reading()
                return
            if self.read_paused and not self.paused_by_write:
                self.read_paused = False
                self.t.resume_reading()
            try:
                req = parse_head(buf)
            except HTTPError as e:
                self.fail(None, e)
                return
            if req is None:
                if self.eof:
                    if buf.strip():
                        self.fail(None, HTTPError(400, "end of input inside a request head"))
                    else:
                        self.closing = True
                        self.t.close()
                return
            if not req.path.startswith("/stats"):
                srv.requests += 1
            handler = srv.sync_handler(req.path) if req.method != "CONNECT" else None
            if handler is None or req.chunked or req.length:
                self.busy = True
                asyncio.get_running_loop().create_task(self.slow(req, handler))
                return
            keep = req.keep
            if handler == srv.ok:
                self.t.write(srv.ok_response(req, keep))
            else:
                try:
                    status, headers, body = handler(req, 0, EMPTY_SHA)
                except HTTPError as e:
                    self.fail(req, e)
                    return
                self.respond(req, status, headers, body, keep)
            if not keep:
                self.linger_close()
                return

    async def slow(self, req, handler):
        try:
            keep = await self.handle(req, handler)
        except Closed:
            self.closing = True
            self.t.abort()
            return
        except HTTPError as e:
            self.fail(req, e)
            return
        except Exception as e:  # a bug here: say so, drop the connection, keep serving others
            print("demo-upstream: %s %s: %r" % (req.method, req.target, e), file=sys.stderr, flush=True)
            self.closing = True
            self.t.abort()
            return
        if self.closing:
            return
        if not keep:
            self.linger_close()
            return
        self.busy = False
        self.process()

    async def handle(self, req, handler):
        srv = self.srv
        path = req.path
        if req.method == "CONNECT":
            await self.discard_body(req)
            raise HTTPError(405, "CONNECT is not supported")
        if handler is not None:
            length, sha = await self.hash_body(req)
            if handler == srv.ok:
                self.t.write(srv.ok_response(req, req.keep))
                return req.keep
            status, headers, body = handler(req, length, sha)
            return self.respond(req, status, headers, body, req.keep)
        if path.startswith("/bytes-sha"):
            await self.discard_body(req)
            n = int_param(req.params(), "n", None, 0, 1 << 40)
            digest = await asyncio.get_running_loop().run_in_executor(None, pattern_sha256, n)
            return self.respond(req, 200, [(b"content-type", b"text/plain")], digest.encode() + b"\n", req.keep)
        if path.startswith("/bytes"):
            return await self.send_bytes(req)
        if path.startswith("/upload"):
            length, sha = await self.hash_body(req)
            if req.method not in ("POST", "PUT"):
                return self.respond(req, 405, [(b"allow", b"POST, PUT"), (b"content-type", b"text/plain")],
                                    b"POST or PUT\n", req.keep)
            body = json.dumps({"length": length, "sha256": sha}).encode()
            return self.respond(req, 200, [(b"content-type", b"application/json")], body, req.keep)
        if path.startswith("/slow"):
            ms = int_param(req.params(), "ms", 1000, 0, 3600 * 1000)
            await self.discard_body(req)
            await asyncio.sleep(ms / 1000.0)
            return self.respond(req, 200, [(b"content-type", b"text/plain")], b"slow\n", req.keep)
        if path.startswith("/hang"):
            await self.discard_body(req)
            await self.until_closed()
            return False
        if path.startswith("/close"):
            await self.discard_body(req)
            self.linger_close()
            return False
        if path.startswith("/reset"):
            await self.discard_body(req)
            self.reset()
            return False
        if path.startswith("/drop"):
            await self.discard_body(req)
            p = req.params()
            if p.get("on", self.srv.name) != self.srv.name:
                self.t.write(self.srv.ok_response(req, req.keep))
                return req.keep
            if p.get("partial") in ("1", "true", "yes"):
                self.t.write(b"HTTP/1.1 200")
            if p.get("reset") in ("1", "true", "yes"):
                self.reset()
            else:
                self.linger_close()
            return False
        if path.startswith("/stall"):
            await self.discard_body(req)
            after = int_param(req.params(), "after", 0, 0, 1 << 20)
            self.t.write(self.srv.head(req, 200, [(b"content-type", b"application/octet-stream")], 1 << 20))
            if req.method != "HEAD":
                self.t.write(BLOCK[:after] if after <= len(BLOCK) else (BLOCK * 16)[:after])
            await self.until_closed()
            return False
        if path.startswith("/chunked"):
            await self.discard_body(req)
            return self.send_chunked(req)
        if path.startswith("/ws"):
            await self.discard_body(req)
            return await self.websocket(req)
        raise AssertionError("no handler for " + path)

    # ---- writing
    def respond(self, req, status, headers, body, keep):
        if self.t.is_closing():
            return False
        no_body = (req is not None and req.method == "HEAD") or status in (204, 304)
        head = self.srv.head(req, status, headers, None if status in (204, 304) else len(body), keep=keep)
        self.t.write(head if no_body else head + body)
        return keep

    def fail(self, req, e):
        """An error answer, then close: the framing of what follows is not to be trusted."""
        if not self.closing:
            body = ("%d %s\n" % (e.status, e.message)).encode()
            self.respond(req, e.status, [(b"content-type", b"text/plain")], body, False)
            self.linger_close()

    def linger_close(self):
        """Half-close, then read and drop what the client still sends for a while, so that
        the kernel does not answer unread bytes with an RST that could destroy the response."""
        if self.closing:
            return
        self.closing = True
        self.discard = True
        self.buf.clear()
        if self.read_paused:
            self.read_paused = False
            self.t.resume_reading()
        if self.eof or not self.t.can_write_eof():
            self.t.close()
            return
        self.t.write_eof()
        self.linger = asyncio.get_running_loop().call_later(LINGER_S, self.t.close)

    def reset(self):
        self.closing = True
        sock = self.t.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.t.abort()

    async def drain(self):
        if self.lost:
            raise Closed()
        if self.write_paused:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None
            if self.lost:
                raise Closed()

    async def send_bytes(self, req):
        await self.discard_body(req)
        p = req.params()
        n = int_param(p, "n", None, 0, 1 << 40)
        chunked = p.get("chunked") in ("1", "true", "yes")
        keep = req.keep
        headers = [(b"content-type", b"application/octet-stream")]
        if chunked and req.version == 10:
            # HTTP/1.0 has no chunked coding: the end of the body is the end of the connection.
            chunked = keep = False
            self.t.write(self.srv.head(req, 200, headers, keep=False))
        else:
            self.t.write(self.srv.head(req, 200, headers, None if chunked else n, chunked=chunked, keep=keep))
        if req.method == "HEAD":
            return keep
        block = BLOCK
        size = len(block)
        remaining = n
        write = self.t.write
        while remaining > 0:
            piece = block if remaining >= size else block[:remaining]
            remaining -= len(piece)
            if chunked:
                write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                write(piece)
            if self.write_paused:
                await self.drain()
            elif self.lost:
                raise Closed()
        if chunked:
            write(b"0\r\n\r\n")
        return keep

    def send_chunked(self, req):
        pieces = [b"chunk %d\n" % i for i in range(3)]
        body = b"".join(pieces)
        checksum = hashlib.sha256(body).hexdigest().encode()
        headers = [(b"content-type", b"text/plain")]
        if req.version == 10:
            return self.respond(req, 200, headers + [(b"x-checksum", checksum)], body, req.keep)
        out = [self.srv.head(req, 200, headers + [(b"trailer", b"x-checksum")], chunked=True, keep=req.keep)]
        if req.method != "HEAD":
            for p in pieces:
                out.append(b"%x\r\n%s\r\n" % (len(p), p))
            out.append(b"0\r\nx-checksum: " + checksum + b"\r\n\r\n")
        self.t.write(b"".join(out))
        return req.keep

    # ---- reading
    async def more(self):
        """Waits until more bytes are buffered. Raises Closed at end of input."""
        if self.eof or self.lost:
            raise Closed()
        if self.read_paused and not self.paused_by_write:
            self.read_paused = False
            self.t.resume_reading()
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.lost:
            raise Closed()

    def take(self, n):
        buf = self.buf
        if n >= len(buf):
            chunk = bytes(buf)
            buf.clear()
        else:
            chunk = bytes(buf[:n])
            del buf[:n]
        return chunk

    async def readline(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > MAX_LINE:
                raise HTTPError(400, "line too long")
            if self.eof:
                raise Closed()
            await self.more()

    async def body(self, req):
        """Yields the request body in pieces as they arrive (sends 100 Continue first if asked)."""
        if req.expect and (req.chunked or req.length):
            self.t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            req.expect = False
        if req.chunked:
            trailer_bytes = 0
            while True:
                line = await self.readline()
                m = CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise HTTPError(400, "bad chunk size line")
                size = int(m.group(1), 16)
                if size == 0:
                    break
                while size:
                    if not self.buf:
                        await self.more()
                    chunk = self.take(size)
                    size -= len(chunk)
                    yield chunk
                while len(self.buf) < 2:
                    await self.more()
                if self.buf[:2] != b"\r\n":
                    raise HTTPError(400, "chunk data not followed by CRLF")
                del self.buf[:2]
            while True:
                line = await self.readline()
                if not line:
                    break
                trailer_bytes += len(line)
                h = HEADER_LINE.fullmatch(line)
                if h is None:
                    raise HTTPError(400, "bad trailer field")
                if trailer_bytes > MAX_HEAD:
                    raise HTTPError(431, "trailers too large")
                req.trailers.append((h.group(1), h.group(2)))
        else:
            remaining = req.length
            while remaining:
                if not self.buf:
                    await self.more()
                chunk = self.take(remaining)
                remaining -= len(chunk)
                yield chunk
        req.chunked = False
        req.length = 0

    async def hash_body(self, req):
        if not (req.chunked or req.length):
            return 0, EMPTY_SHA
        h = hashlib.sha256()
        n = 0
        async for chunk in self.body(req):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()

    async def discard_body(self, req):
        if req.chunked or req.length:
            async for _ in self.body(req):
                pass

    async def until_closed(self):
        """/hang: drop whatever arrives until the client closes."""
        self.discard = True
        self.buf.clear()
        if self.read_paused:
            self.read_paused = False
            self.t.resume_reading()
        if self.eof:
            self.t.close()
            return
        self.closed_waiter = asyncio.get_running_loop().create_future()
        await self.closed_waiter
        self.closing = True
        self.t.close()

    # ---- WebSocket (RFC 6455), server side
    async def websocket(self, req):
        upgrade = (req.header(b"upgrade") or b"").lower()
        conn = [t.strip().lower() for t in (req.header(b"connection") or b"").split(b",")]
        key = req.header(b"sec-websocket-key")
        if req.method != "GET" or req.version != 11 or b"websocket" not in upgrade or b"upgrade" not in conn:
            raise HTTPError(400, "not a websocket handshake")
        if req.header(b"sec-websocket-version") != b"13":
            self.respond(req, 426, [(b"sec-websocket-version", b"13"), (b"content-type", b"text/plain")],
                         b"websocket version 13 only\n", req.keep)
            return req.keep
        try:
            if key is None or len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError
        except ValueError:
            raise HTTPError(400, "bad sec-websocket-key") from None
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", accept)]
        proto = req.header(b"sec-websocket-protocol")
        if proto:
            headers.append((b"sec-websocket-protocol", proto.split(b",")[0].strip()))
        parts = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        parts += [k + b": " + v + b"\r\n" for k, v in headers]
        parts.append(b"x-upstream: " + self.srv.name_b + b"\r\n\r\n")
        self.t.write(b"".join(parts))
        try:
            await self.ws_loop()
        except Closed:
            pass
        self.closing = True
        self.t.close()
        return False

    async def ws_read(self, n):
        while len(self.buf) < n:
            await self.more()
        return self.take(n)

    def ws_send(self, opcode, payload, fin=True):
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", b0, n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 126, n)
        else:
            head = struct.pack("!BBQ", b0, 127, n)
        self.t.write(head + payload)

    def ws_close(self, code, why=b""):
        self.ws_send(0x8, struct.pack("!H", code) + why)

    async def ws_loop(self):
        fragmented = None  # opcode of the message being continued, or None
        decoder = None
        message_size = 0
        while True:
            b0, b1 = await self.ws_read(2)
            fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
            masked, n = b1 & 0x80, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.ws_read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.ws_read(8))
                if n >> 63:
                    return self.ws_close(1002)
            if rsv or not masked or opcode not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
                return self.ws_close(1002)
            if opcode >= 0x8 and (not fin or n > 125):
                return self.ws_close(1002)
            if opcode < 0x8:
                message_size = (message_size if opcode == 0 else 0) + n
                if message_size > WS_MAX_MESSAGE:
                    return self.ws_close(1009)
            mask = await self.ws_read(4)
            data = await self.ws_read(n) if n else b""
            if n:
                m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
                data = (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")
            if opcode == 0x8:
                if n == 1:
                    return self.ws_close(1002)
                if n >= 2:
                    (code,) = struct.unpack("!H", data[:2])
                    valid = code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999
                    try:
                        data[2:].decode("utf-8")
                    except UnicodeDecodeError:
                        valid = False
                    return self.ws_close(code) if valid else self.ws_close(1002)
                return self.ws_send(0x8, b"")
            if opcode == 0x9:
                self.ws_send(0xA, data)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x0:
                if fragmented is None:
                    return self.ws_close(1002)
                kind = fragmented
            else:
                if fragmented is not None:
                    return self.ws_close(1002)
                kind = opcode
                decoder = codecs.getincrementaldecoder("utf-8")() if opcode == 0x1 else None
            if kind == 0x1:
                try:
                    decoder.decode(data, final=bool(fin))
                except UnicodeDecodeError:
                    return self.ws_close(1007)
            fragmented = None if fin else kind
            self.ws_send(opcode, data, fin=bool(fin))
            if self.write_paused:
                await self.drain()


def main():
    ap = argparse.ArgumentParser(description="HTTP/1.1 demo and test upstream for gatewayd (127.0.0.1 only)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one (default)")
    ap.add_argument("--name", default="upstream", help="returned in x-upstream and in /echo (default: upstream)")
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin is closed")
    args = ap.parse_args()
    if not 0 <= args.port <= 65535:
        ap.error("--port must be 0..65535")

    def stop(*_):
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    async def serve():
        loop = asyncio.get_running_loop()
        srv = Server(args.name)
        server = await loop.create_server(lambda: Connection(srv), "127.0.0.1", args.port,
                                          reuse_address=True, backlog=1024)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        if args.exit_on_stdin_eof:
            def stdin_readable():
                try:
                    if not os.read(0, 4096):
                        stop()
                except OSError:
                    stop()
            loop.add_reader(0, stdin_readable)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write("READY %d\n" % port)
        sys.stdout.flush()
        await server.serve_forever()

    try:
        asyncio.run(serve())
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        print("demo-upstream: cannot listen on 127.0.0.1:%d: %s" % (args.port, why), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
