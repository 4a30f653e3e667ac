#!/bin/sh
# Install the system Chromium used by the end-to-end tests (tests/e2e). Playwright drives it through
# executable_path, so `playwright install` (which downloads its own browser) is never needed.
set -eu
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
chromium --version
