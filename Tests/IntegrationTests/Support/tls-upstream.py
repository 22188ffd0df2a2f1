#!/usr/bin/env python3
"""An HTTPS origin for the upstream TLS tests: HTTP/1.1 with keep-alive over Python's ssl, on
127.0.0.1 (a free port). Prints "READY <port>" once listening. Every answer says which TLS
connection it came on (counted from 1, in accept order) and which request on it it was, so a
test sees whether gatewayd pooled its connections.

    tls-upstream.py CERT KEY
"""
import http.server
import json
import socketserver
import ssl
import sys
import threading

connections = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global connections
        super().setup()
        with lock:
            connections += 1
            self.number = connections
        self.served = 0

    def do_GET(self):
        self.served += 1
        body = json.dumps({"connection": self.number, "request": self.served,
                           "sni": getattr(self.connection, "client_sni", None)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    context.sni_callback = lambda sock, name, _: setattr(sock, "client_sni", name)
    server = Server(("127.0.0.1", 0), Handler)
    # A handshake that fails (gatewayd refused the certificate) raises in accept, an OSError
    # that socketserver drops: the server goes on.
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("READY", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
