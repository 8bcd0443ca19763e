#!/usr/bin/env bash
# Makes headless Chromium available for the report test (tests/tests/report.rs): installs the
# Debian package `chromium` with apt-get if no `chromium` is on PATH. Prints the binary's path.
# Idempotent; needs root (or sudo) only when it has to install.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    echo "scripts/chromium.sh: installing the Debian package chromium" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq chromium >&2
fi
command -v chromium
