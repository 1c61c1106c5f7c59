#!/usr/bin/env bash
# Makes sure headless Chromium and chromedriver are here for the console's
# browser tests (ingest/tests/console): installs Debian's chromium and
# chromium-driver when they are missing and we are root; otherwise says what
# to install.
set -euo pipefail

have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [[ -x /usr/lib/chromium/chromium ]]; }
if command -v chromedriver >/dev/null 2>&1 && have_chromium; then
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] installing chromium and chromium-driver for the console's browser tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
else
  echo "[chromium] chromium or chromedriver missing: the console's browser tests will fail." >&2
  echo "[chromium] Install them (Debian/Ubuntu: apt-get install chromium chromium-driver) or set CHROMIUM and CHROMEDRIVER." >&2
fi
