#!/usr/bin/env bash
# Installs the tools the end-to-end tests and benchmarks use, only where missing:
# curl, nghttp (nghttp2-client), nginx (nginx-light), haproxy, wrk, ss (iproute2), prlimit (util-linux),
# kill (procps), openssl (the TLS tests' s_client and certificate checks), chromium (the stats page,
# loaded headless), the DejaVu font (plots), the Python modules h2, httpx and websockets,
# Node.js with the npm ws package (bench/ws-node), cargo-fuzz and httpwg-cli (the HTTP/2 conformance suite). Idempotent; runs as root (uses sudo
# otherwise).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# command -> Debian package
declare -A PKG=(
    [curl]=curl
    [nghttp]=nghttp2-client
    [nginx]=nginx-light
    [haproxy]=haproxy
    [wrk]=wrk
    [ss]=iproute2
    [prlimit]=util-linux
    [kill]=procps
    [openssl]=openssl
    [chromium]=chromium
)
TOOLS=(curl nghttp nginx haproxy wrk ss prlimit kill openssl chromium)
# h2load ships in nghttp2-client too.
if ! type -P h2load >/dev/null 2>&1; then
    PKG[h2load]=nghttp2-client
    TOOLS+=(h2load)
fi

missing=()
for tool in "${TOOLS[@]}"; do
    # `command -v kill` finds the shell builtin: the tests run the program.
    if ! type -P "$tool" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$tool" ]; then
        missing+=("${PKG[$tool]}")
    fi
done

# The font coreplex-bench --plot draws its labels with.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    missing+=(fonts-dejavu-core)
fi

if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! python3 -c "import h2, hpack, hyperframe, httpx, websockets" >/dev/null 2>&1 \
    || ! command -v kosoku >/dev/null 2>&1; then
    # kosoku runs the Autobahn|Testsuite cases (tests/e2e/websocket.rs).
    # Debian's system Python refuses plain pip installs (PEP 668) unless told otherwise.
    # The HTTP/2 tests' raw client needs hpack and hyperframe (they come with h2).
    python3 -m pip install --quiet h2 httpx websockets kosoku 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages h2 httpx websockets kosoku
fi

# Node.js and the npm `ws` package: the WebSocket backend of tests/e2e/ws_proxy.rs and the peer of
# bench/compare_ws.py (versions pinned by bench/ws-node/package-lock.json).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "installing: nodejs npm"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -f "$(dirname "$0")/../bench/ws-node/node_modules/ws/package.json" ]; then
    echo "installing: npm ws (bench/ws-node)"
    (cd "$(dirname "$0")/../bench/ws-node" && npm ci --silent --no-audit --no-fund)
fi

# cargo-fuzz, for the fuzz smoke (fuzz/smoke.sh) the test command runs.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing: cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi

# httpwg-cli (the `httpwg` command): the h2spec-style HTTP/2 conformance suite the tests run.
if ! type -P httpwg >/dev/null 2>&1; then
    echo "installing: httpwg-cli"
    cargo install --quiet --locked httpwg-cli@0.2.5
fi

version() {
    local tool=$1
    shift
    local path
    path=$(type -P "$tool" 2>/dev/null || true)
    if [ -z "$path" ] && [ -x "/usr/sbin/$tool" ]; then
        path="/usr/sbin/$tool"
    fi
    if [ -z "$path" ]; then
        printf '%-10s MISSING\n' "$tool"
        return
    fi
    printf '%-10s %s\n' "$tool" "$("$path" "$@" 2>&1 | head -n 1)"
}

version curl --version
version nghttp --version
version h2load --version
version nginx -v
version haproxy -v
version wrk --version
version ss --version
version prlimit --version
version kill -V
version chromium --version
printf '%-10s %s\n' python3 "$(python3 -c 'import sys, h2, httpx, websockets; print(sys.version.split()[0], "h2", h2.__version__, "httpx", httpx.__version__, "websockets", websockets.__version__)')"
printf '%-10s %s\n' cargo-fuzz "$(cargo fuzz --version 2>&1 | head -n 1)"
printf '%-10s %s\n' httpwg "$(type -P httpwg || echo MISSING)"
