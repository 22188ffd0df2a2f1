#!/usr/bin/env python3
"""A small OTLP/HTTP traces receiver for the tracing tests: POST /v1/traces with an
ExportTraceServiceRequest in protobuf (what swift-otel's OTLP/HTTP exporter sends), decoded with
PyPI's opentelemetry-proto; every span becomes one JSON line in --output:

  {"service": ..., "name": ..., "kind": "SERVER", "trace_id": hex, "span_id": hex,
   "parent_span_id": hex or "", "start_ns": int, "end_ns": int, "status": "ERROR" or "",
   "attributes": {key: value}}

Prints "READY <port>" once listening on 127.0.0.1 (--port 0: a free one). Exits when its stdin
closes (--exit-on-stdin-eof), so a test that dies leaves no receiver behind. Needs
opentelemetry-proto on PYTHONPATH (`make test-tracing` installs it in .build-tools).
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

LOCK = threading.Lock()


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [value_of(v) for v in value.values]
    if kind == "bytes_value":
        return value.hex()
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.values}
    return value


def span_lines(request):
    for resource_spans in request.resource_spans:
        resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "service": resource.get("service.name", ""),
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind).replace("SPAN_KIND_", ""),
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "status": "ERROR" if span.status.code == Status.STATUS_CODE_ERROR else "",
                    "attributes": {kv.key: value_of(kv.value) for kv in span.attributes},
                }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    output = None

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces" or "protobuf" not in self.headers.get("content-type", ""):
            self.send_error(404 if self.path != "/v1/traces" else 415)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with LOCK, open(self.output, "a", encoding="utf-8") as out:
            for line in span_lines(request):
                out.write(json.dumps(line) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--output", required=True, help="where span JSON lines are appended")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    Handler.output = args.output
    open(args.output, "a").close()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.exit_on_stdin_eof:
        def watch():
            sys.stdin.read()
            server.shutdown()
        threading.Thread(target=watch, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
