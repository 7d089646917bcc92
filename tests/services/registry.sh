#!/usr/bin/env bash
# The preheat tests run their own `docker-registry serve` processes (distribution 2.8, Debian's
# `docker-registry`). Install the binary when missing; never start the packaged system service.
set -euo pipefail

command -v docker-registry >/dev/null && { echo "ensure_services: docker-registry present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: docker-registry missing and not root; the registry preheat tests will be skipped" >&2
  exit 0
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
# An install failure is loud but not fatal: the registry tests then skip, saying why (pytest -ra).
if apt_install_no_start docker-registry && command -v docker-registry >/dev/null; then
  echo "ensure_services: docker-registry installed"
else
  echo "ensure_services: WARNING: docker-registry could not be installed; the registry preheat tests will skip" >&2
fi
