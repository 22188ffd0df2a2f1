#!/usr/bin/env bash
# direct-throughput.sh: the direct-response twin of proxy-throughput.sh. nginx 1.22 `return 200`,
# gatewayd a direct_response (and HAProxy `http-request return` with --with-haproxy), each
# answering the same 13-byte body itself, side by side in one run; the same report and options.
exec "$(dirname "${BASH_SOURCE[0]}")/proxy-throughput.sh" --direct "$@"
