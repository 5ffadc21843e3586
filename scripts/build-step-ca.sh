#!/usr/bin/env bash
# Build the step-ca binary (smallstep/certificates 0.19) from Debian's packages into OUT.
#
#   bash scripts/build-step-ca.sh .venv/bin/step-ca
#
# Debian has no step-ca binary package, but golang-github-smallstep-certificates-dev ships the
# library sources under /usr/share/gocode; tools/step-ca/main.go is our small main around them.
# Nothing is fetched from the network except Debian packages through apt-get, and only when
# they are missing. Idempotent: does nothing when OUT is newer than main.go and this script.
# Measured on 2 cores: packages ~30-60 s (about 160 MB download, 1 GB installed), a cold Go build
# ~75 s, a rebuild with a warm Go cache ~20 s.
set -euo pipefail

die() { echo "build-step-ca: ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT (path of the step-ca binary to write)"
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAIN_DIR="$HERE/tools/step-ca"
MAIN="$MAIN_DIR/main.go"
[ -f "$MAIN" ] || die "$MAIN is missing"

if [ -x "$OUT" ] && [ "$OUT" -nt "$MAIN" ] && [ "$OUT" -nt "${BASH_SOURCE[0]}" ]; then
    echo "build-step-ca: $OUT is up to date"
    exit 0
fi

GOCODE=/usr/share/gocode
LIB="$GOCODE/src/github.com/smallstep/certificates/commands"
PACKAGES="golang-go golang-github-smallstep-certificates-dev"

if ! command -v go >/dev/null 2>&1 || [ ! -d "$LIB" ]; then
    command -v apt-get >/dev/null 2>&1 \
        || die "Go and the step-ca sources are missing and apt-get is not available; install $PACKAGES (Debian/Ubuntu) and retry"
    if [ "$(id -u)" != 0 ]; then
        SUDO=""
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
        [ -n "$SUDO" ] || die "installing $PACKAGES needs root: run 'sudo apt-get install -y $PACKAGES' and retry"
    else
        SUDO=""
    fi
    echo "build-step-ca: installing $PACKAGES (about 1 GB, ~30 s) ..."
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed (no network or no Debian mirror?)"
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $PACKAGES >/dev/null || die "apt-get install $PACKAGES failed"
fi

command -v go >/dev/null 2>&1 || die "'go' is still not on PATH after installing golang-go"
[ -d "$LIB" ] || die "$LIB is missing: golang-github-smallstep-certificates-dev did not install the library sources"

TMP_GOPATH=$(mktemp -d)
trap 'rm -rf "$TMP_GOPATH"' EXIT
mkdir -p "$(dirname "$OUT")"
OUT_ABS="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"

echo "build-step-ca: building $OUT with $(go version | awk '{print $3}') (GOPATH mode; ~75 s cold, ~20 s with a warm Go cache) ..."
start=$(date +%s)
# GOPATH mode: the Debian library tree is a GOPATH, no module downloads. CGO off: no C
# compiler needed (badger then uses its pure-Go zstd path).
(
    cd "$MAIN_DIR"
    GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOPATH="$TMP_GOPATH:$GOCODE" \
        go build -trimpath -o "$OUT_ABS.tmp" .
) || die "go build failed (see the compiler output above)"
mv -f "$OUT_ABS.tmp" "$OUT_ABS"
"$OUT_ABS" --version >/dev/null || die "the built $OUT does not run"
echo "build-step-ca: built $OUT ($("$OUT_ABS" --version)) in $(( $(date +%s) - start )) s"
