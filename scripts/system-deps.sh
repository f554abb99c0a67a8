#!/usr/bin/env bash
# Install the Debian packages that sidekick's commands and tests run for real, checked program by
# program so that a machine with some of them (podman without catatonit, python3 without its
# venv module) gets exactly the missing ones. Needs root, or sudo, only when something is missing.
#
#   scripts/system-deps.sh [python|demo|test]...     (default: test)
#
#   python  what `make install` needs: python3 (3.11 on Debian 12) with venv and ensurepip, make,
#           ca-certificates (the CA bundle for pip's HTTPS when PIP_CERT points at it)
#   demo    python, plus nginx (the webapp Pod's reverse proxy) and curl (to try the URL)
#   test    demo, plus what the test suite runs: git, rsyslog, openssl (a test certificate),
#           util-linux's unshare and mount (read-only mounts in `sidekick up`), and for the
#           container test podman, runc, conmon, catatonit, CNI plugins and iptables, and
#           debootstrap for the base image
#
# Podman is installed without its recommended packages, so the ones the container test needs
# are named here: catatonit (the pause process of every Pod's infra container; without it
# `podman kube play` fails with `finding pause binary`) and the CNI plugins with iptables (the
# bridge network and hostPort mappings). The others are left out because the test runs podman as
# root: slirp4netns, uidmap, fuse-overlayfs and dbus-user-session serve rootless podman, buildah
# is built into podman, and crun is not used (tests/e2e/podman/containers.conf selects runc).
# syslog-ng is not installed: Debian's syslog-ng-core conflicts with rsyslog, and bench/ unpacks
# syslog-ng privately instead.
set -euo pipefail

# One line per requirement: how to tell it is there, then the package that provides it. A
# plain name is a program looked up on PATH and in the sbin directories; a name starting with
# / is a file; "python:MODULES" is the modules python3 must import.
python_deps=(
  "python3 python3"
  "python:venv,ensurepip python3-venv"
  "make make"
  "/etc/ssl/certs/ca-certificates.crt ca-certificates"
)
demo_deps=(
  "nginx nginx"
  "curl curl"
)
test_deps=(
  "git git"
  "rsyslogd rsyslog"
  "openssl openssl"
  "unshare util-linux"
  "nsenter util-linux"
  "setpriv util-linux"
  "logger bsdutils"
  "ps procps"
  "watch procps"
  "mount mount"
  "podman podman"
  "runc runc"
  "conmon conmon"
  "catatonit catatonit"
  "/usr/lib/cni/bridge containernetworking-plugins"
  "iptables iptables"
  "debootstrap debootstrap"
)

have() {
  case $1 in
    /*) [ -e "$1" ] ;;
    python:*)
      command -v python3 >/dev/null 2>&1 &&
        python3 -c "import ${1#python:}" >/dev/null 2>&1
      ;;
    *)
      # catatonit and conmon live in /usr/libexec/podman on some releases.
      PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/libexec/podman" \
        command -v "$1" >/dev/null 2>&1
      ;;
  esac
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(test)
wanted=()
for group in "${groups[@]}"; do
  case $group in
    python) wanted+=("${python_deps[@]}") ;;
    demo) wanted+=("${python_deps[@]}" "${demo_deps[@]}") ;;
    test) wanted+=("${python_deps[@]}" "${demo_deps[@]}" "${test_deps[@]}") ;;
    *)
      echo "system-deps.sh: unknown group '$group'; use python, demo or test" >&2
      exit 2
      ;;
  esac
done

need=()
for entry in "${wanted[@]}"; do
  read -r what package <<<"$entry"
  if ! have "$what" && [[ " ${need[*]} " != *" $package "* ]]; then
    need+=("$package")
  fi
done

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: missing Debian packages ${need[*]}; run this script as root, or install" \
      "them with apt-get" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing packages ${need[*]} (Debian names), and this machine has no apt-get;" \
    "install their equivalents by hand" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
