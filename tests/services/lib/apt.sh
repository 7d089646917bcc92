# Sourced by the service scripts: apt-get install that never starts the packaged service (there may
# be no init system, and the tests start their own processes). A policy-rc.d answering 101 stops the
# package's maintainer scripts from starting anything; ours is removed again, a site's own is kept.
apt_install_no_start() {
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || status=$?
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  return "$status"
}
