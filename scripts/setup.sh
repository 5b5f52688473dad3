#!/usr/bin/env bash
# Sets up a development/test environment on Debian or Raspberry Pi OS: the Mosquitto broker that
# the tests and the demo start on loopback, and a virtual environment with anpr-edge installed.
# Idempotent: running it again only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Fonts for the synthetic plate renderer (tests render plates and videos; same fonts everywhere)
for pkg in fonts-dejavu fonts-liberation fonts-roboto fonts-open-sans fonts-urw-base35; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
fi
# A broker started by the package would hold port 1883; the tests and demo start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    echo "note: a system mosquitto service is running; anpr-edge's tests and demo use their own brokers." >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "environment ready: .venv (anpr-edge $(.venv/bin/python -c 'import edge; print(edge.__version__)'))"
