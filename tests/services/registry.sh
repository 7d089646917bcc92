#!/usr/bin/env bash
# The preheat tests run their own `docker-registry serve` processes (distribution 2.8, Debian's
# `docker-registry`). Install the binary when missing; never start the packaged system service.
set -euo pipefail

command -v docker-registry >/dev/null && { echo "ensure_services: docker-registry present"; exit 0; }
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: docker-registry missing and not root; the registry preheat tests will be skipped" >&2
  exit 0
fi
# A policy-rc.d answering 101 stops the package's maintainer scripts from starting the service.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
# An install failure is loud but not fatal: the registry tests then skip, saying why (pytest -ra).
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker-registry >/dev/null && command -v docker-registry >/dev/null; then
  echo "ensure_services: docker-registry installed"
else
  echo "ensure_services: WARNING: docker-registry could not be installed; the registry preheat tests will skip" >&2
fi
