#!/usr/bin/env bash
# Install the Debian packages the test suite runs for real: git, nginx, rsyslog, and for the
# container test podman, runc and debootstrap. Installs only what is missing; needs root
# (or sudo) when something is missing. syslog-ng is not installed here because Debian's
# syslog-ng-core and rsyslog conflict; bench/ unpacks syslog-ng privately instead.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have git || need+=(git)
have nginx || need+=(nginx)
have rsyslogd || need+=(rsyslog)
have podman || need+=(podman)
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
have ps || need+=(procps)
have curl || need+=(curl)
have fcgiwrap || need+=(fcgiwrap)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing Debian packages: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "error: the tests need ${need[*]}; run this as root or install them with apt-get" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
