#!/usr/bin/env bash
# The image test (tests/test_image.py) and `make image` build the Dockerfile with Debian's buildah,
# make the base image with debootstrap and run the result with podman. Install them when missing;
# nothing is started (podman runs without a daemon).
set -euo pipefail

missing=()
for tool in buildah podman debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# fuse-overlayfs/slirp4netns are podman's usual helpers; uidmap gives newuidmap for rootless users.
if [ "${#missing[@]}" = 0 ]; then echo "ensure_services: buildah, podman, debootstrap present"; exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_services: ${missing[*]} missing and not root; install by hand (the image test needs them)" >&2
  exit 1
fi
# shellcheck source=tests/services/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install_no_start buildah podman debootstrap fuse-overlayfs slirp4netns uidmap crun runc
for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "ensure_services: $tool still missing after apt-get install" >&2; exit 1; }
done
echo "ensure_services: buildah, podman, debootstrap installed"
