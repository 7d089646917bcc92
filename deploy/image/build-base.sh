#!/usr/bin/env bash
# Build the image's base from Debian packages: a debootstrap of bookworm with python3.11, imported into
# buildah's store as $BASE_IMAGE. The Dockerfile's default base (the public python:3.11-slim-bookworm)
# is what users build on; this one is for machines that reach Debian's archive but no image registry.
#
# debootstrap takes a few minutes, so an image already in the store is reused (the cache); set
# DF_REBUILD_BASE=1 to make it again.
#   usage: deploy/image/build-base.sh            (prints the image name on its last line)
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/df-base:bookworm-python3.11}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm

if [ "${DF_REBUILD_BASE:-0}" != 1 ] && buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "build-base: $BASE_IMAGE already built (DF_REBUILD_BASE=1 to rebuild)" >&2
  echo "$BASE_IMAGE"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "build-base: debootstrap needs root" >&2; exit 1; fi

work="$(mktemp -d /var/tmp/df-base.XXXXXX)"
ctr=""
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# minbase: essential packages and apt only. python3.11-venv brings ensurepip's wheels, which the
# Dockerfile's build stage needs for its virtualenv (its dependency python3.11-distutils is a virtual
# package, which debootstrap does not resolve: python3-distutils provides it); ca-certificates for https.
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
  "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2
       cp "$work/rootfs/debootstrap/debootstrap.log" /var/tmp/df-base-debootstrap.log 2>/dev/null \
         && echo "build-base: debootstrap's own log kept in /var/tmp/df-base-debootstrap.log" >&2
       exit 1; }

# Nothing a container needs: package caches, lists, docs and man pages (tens of MB).
chroot "$work/rootfs" apt-get clean
rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* \
  "$work/rootfs"/usr/share/locale/* "$work/rootfs"/var/cache/debconf/*-old "$work/rootfs"/var/log/*.log
# The build runs `python3.11 -m venv`; python3 too, as on the public image.
[ -e "$work/rootfs/usr/bin/python3" ] || ln -s python3.11 "$work/rootfs/usr/bin/python3"

tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
ctr="$(buildah from scratch)"
buildah add "$ctr" "$work/rootfs.tar" / >/dev/null  # a local tar archive is unpacked
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd python3.11 --label org.opencontainers.image.description="Debian $SUITE minbase with python3.11" "$ctr"
buildah commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
ctr=""
echo "build-base: built $BASE_IMAGE" >&2
echo "$BASE_IMAGE"
