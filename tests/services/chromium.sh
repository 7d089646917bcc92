#!/usr/bin/env bash
# The dashboard's browser tests (tests/test_dashboard_browser.py) drive Debian's chromium through
# Playwright for Python; Playwright's own browser download cannot work here. Install it when missing.
set -euo pipefail

command -v chromium >/dev/null && { echo "ensure_services: chromium present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: chromium missing and not root; the dashboard browser tests will be skipped" >&2
  exit 0
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
# fonts-liberation: text with real glyph metrics in the screenshots (no tofu boxes).
if apt_install_no_start chromium fonts-liberation && command -v chromium >/dev/null; then
  echo "ensure_services: chromium installed"
else
  echo "ensure_services: WARNING: chromium could not be installed; the dashboard browser tests will skip" >&2
fi
