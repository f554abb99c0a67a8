#!/usr/bin/env bash
# Build the base image the container test uses instead of python:3.12-slim (no image registry
# is reachable from CI; Debian's mirror is). Debian bookworm minbase with python3, venv, nginx,
# and git, imported into podman as the tag given as $1. The test keys the tag by a hash of
# this file, so changing the recipe rebuilds the image and an unchanged recipe reuses it.
set -euo pipefail
tag=$1
work=$(mktemp -d /var/tmp/sidekick-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -50 "$work/debootstrap.log" >&2; exit 1; }
# Package scripts must not try to start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3 python3-venv nginx git ca-certificates >"$work/apt.log" 2>&1 \
  || { tail -50 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root/usr/sbin/policy-rc.d"
tar -C "$root" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
