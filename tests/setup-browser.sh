#!/bin/sh
# Install Debian's chromium for the HTML report test (tests/test_report.py), if missing.
# Runs apt-get update only when the first install attempt fails.
set -eu
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    echo "chromium present: $CHROMIUM"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup-browser: need root (or sudo) to install chromium" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; then
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
test -x "$CHROMIUM"
"$CHROMIUM" --version
