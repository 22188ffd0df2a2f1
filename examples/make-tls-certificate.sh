#!/usr/bin/env bash
# make-tls-certificate.sh: a throwaway self-signed certificate for trying TLS listeners (and for
# the tests, which make theirs at run time with it): an ECDSA P-256 key and a certificate whose
# subjectAltName holds every NAME given (an IP address as one: 127.0.0.1, ::1), the first also
# as its CN.
#
#   examples/make-tls-certificate.sh DIR NAME [NAME...]
#
# Writes DIR/NAME.pem (the certificate) and DIR/NAME.key (its key, mode 0600), NAME being the
# first name given ('*' written as '_'). DAYS (default 30) is how long it is valid. Clients
# trust it with `curl --cacert DIR/NAME.pem`, `openssl s_client -CAfile DIR/NAME.pem`.
# Never use it for anything real: it is its own CA, and anyone with the key can be you.
set -euo pipefail

die() { printf 'make-tls-certificate: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: $0 DIR NAME [NAME...]"
command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
dir=$1
shift
first=${1//\*/_}
san=""
for name in "$@"; do
    # An IPv4 or IPv6 literal is an iPAddress name, which clients check an IP against.
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="${san:+,}IP:$name"; else san+="${san:+,}DNS:$name"; fi
done
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days "${DAYS:-30}" -subj "/CN=$1" -addext "subjectAltName=$san" \
    -keyout "$dir/$first.key" -out "$dir/$first.pem" 2>/dev/null ||
    die "openssl could not make the certificate"
chmod 0644 "$dir/$first.pem"
printf '%s\n' "$dir/$first.pem"
