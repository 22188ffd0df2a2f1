#!/bin/sh
# Prints gatewayd's version (see VERSION in the Makefile): `git describe` of the newest v* tag,
# else BASE+git.<commit>, with a dirty mark for uncommitted changes; BASE outside a checkout.
#   packaging/version.sh BASE
set -eu
base=${1:?usage: version.sh BASE_VERSION}
cd "$(dirname "$0")/.."
if ! commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    echo "$base"
    exit 0
fi
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=dirty
if described=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    echo "${described#v}${dirty:+-$dirty}"
else
    echo "$base+git.$commit${dirty:+.$dirty}"
fi
