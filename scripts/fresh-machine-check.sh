#!/usr/bin/env bash
# Prove the README's two commands on a new Debian 12 machine: debootstrap a clean bookworm root,
# put a fresh clone of this repository's committed work in it, and run there, as root, what a
# person would run: `apt-get install make` (the one thing the README asks for beforehand), then
# `make demo` (wait for its URL, curl it, find the request in the log sidecar's output, stop it
# with SIGINT as Ctrl-C would) and then `bash .ci/run` (the whole suite).
#
#   sudo scripts/fresh-machine-check.sh [ROOT]        (default ROOT: /var/tmp/fresh-root)
#
# Takes 20 to 30 minutes on a 2-core machine; it is not part of CI. Logs go to ROOT-logs/
# (demo.log, ci.log). Environment: CI_TIMEOUT (default 90m, CI's own limit) bounds the suite;
# FRESH_BASE=1 runs debootstrap again instead of unpacking the clean root it saved last time
# (ROOT-base.tar); SKIP_DEMO=1 or SKIP_CI=1 leave out one of the two steps.
#
# Every run starts from a clean root, so it can be repeated. The root shares this machine's
# network (apt and pip reach their registries through it, with this machine's apt sources, apt
# proxy, extra certificate authorities, pip configuration and PIP_* / *_proxy variables copied
# in) and kernel; its commands run in their own PID and mount namespaces, so nothing they start
# outlives them and the mounts that podman makes stay private. Services are kept from starting when packages are installed
# (policy-rc.d), as in any chroot: they would run against this machine's /dev and ports.
set -euo pipefail

root=${1:-/var/tmp/fresh-root}
root=${root%/}
repo=$(cd "$(dirname "$0")/.." && pwd)
logs=$root-logs
base_tar=$root-base.tar
ci_timeout=${CI_TIMEOUT:-90m}
suite=bookworm

say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "run this as root: it debootstraps a root filesystem and mounts into it"
case $root in
  / | /usr* | /etc* | /var | /var/tmp | /tmp | /work*) die "refusing to use $root as the fresh root" ;;
esac

mounted_under() {
  # Mount points at or below $root, deepest first.
  awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

cleanup() {
  local pid
  # Anything still running with its root in the fresh root (only when a run was cut short: the
  # PID namespaces end their processes).
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  local target
  for target in $(mounted_under); do
    umount "$target" 2>/dev/null || umount -l "$target" || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Debian mirror this machine's apt uses for bookworm, from deb822 .sources or .list files.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      /^[Uu][Rr][Ii][Ss]:/ { uri = $2 }
      /^[Ss]uites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      /^$/ { if (ok && uri) { print uri; exit } ok = 0; uri = "" }
      END { if (ok && uri) print uri }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v suite="$suite" '$1 == "deb" { sub(/\[[^]]*\] */, ""); if ($3 == suite) print $2 }'
}
mirror=$(find_mirror | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

# An apt proxy of this machine is used by debootstrap (through http_proxy) and copied in.
apt_proxy=$(apt-config dump | awk -F'"' '/^Acquire::http::Proxy /{ print $2 }' | head -n1 || true)
if [ -n "$apt_proxy" ] && [ -z "${http_proxy:-}" ]; then
  export http_proxy=$apt_proxy
fi

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  say "installing debootstrap on this machine"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# 1. A clean root, unpacked from the one saved after the last debootstrap, or made anew.
cleanup
[ -z "$(mounted_under)" ] || die "could not unmount everything under $root"
rm -rf --one-file-system "$root" "$logs"
mkdir -p "$logs"
started=$SECONDS
if [ -f "$base_tar" ] && [ -z "${FRESH_BASE:-}" ]; then
  say "unpacking the clean $suite root saved in $base_tar"
  mkdir -p "$root"
  tar -C "$root" -xpf "$base_tar"
else
  say "debootstrap $suite $root $mirror"
  PATH=$PATH:/usr/sbin:/sbin debootstrap "$suite" "$root" "$mirror" >"$logs/debootstrap.log" 2>&1 ||
    {
      tail -30 "$logs/debootstrap.log" >&2
      die "debootstrap failed; see $logs/debootstrap.log"
    }
  tar -C "$root" -cpf "$base_tar.part" . && mv "$base_tar.part" "$base_tar"
fi
say "clean root ready in $((SECONDS - started))s"

# 2. This machine's apt sources, apt proxy, name resolution and pip configuration.
rm -f "$root"/etc/apt/sources.list "$root"/etc/apt/sources.list.d/*
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  if [ -f "$f" ]; then cp "$f" "$root$f"; fi
done
for f in /etc/apt/apt.conf.d/*; do
  if [ -f "$f" ] && grep -qi 'proxy' "$f"; then cp "$f" "$root$f"; fi
done
if [ -n "$apt_proxy" ]; then
  printf 'Acquire::http::Proxy "%s";\n' "$apt_proxy" >"$root/etc/apt/apt.conf.d/01proxy"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
# Certificate authorities this machine trusts beyond Debian's set (a TLS-inspecting proxy's, for
# one); the root's ca-certificates, once installed, adds them to its bundle, which pip uses.
mkdir -p "$root/usr/local/share/ca-certificates"
for f in /usr/local/share/ca-certificates/*.crt /etc/ssl/certs/*.pem; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then
    name=${f##*/}
    cp "$f" "$root/usr/local/share/ca-certificates/${name%.*}.crt"
  fi
done
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
if [ -d /etc/xdg/pip ]; then mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/"; fi
if [ -d "$HOME/.config/pip" ]; then
  mkdir -p "$root/root/.config" && cp -r "$HOME/.config/pip" "$root/root/.config/"
fi
if [ -d "$HOME/.pip" ]; then cp -r "$HOME/.pip" "$root/root/.pip"; fi
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"

# 3. The committed work, cloned as a person would have it.
git clone -q "$repo" "$root/root/sidekick"
say "cloned $(git -C "$root/root/sidekick" log -1 --format='%h %s')"

# 4. The root is made a mount point of its own, as / is on any machine: without that, making
# / private in a new mount namespace fails with EINVAL, which breaks podman's image import
# ("remount /, flags: 0x44000: invalid argument") and `sidekick up`'s read-only mounts. Then the
# kernel's file systems: /proc comes with each command's PID namespace; /sys (with the cgroup
# hierarchies podman needs) and /dev (with /dev/pts and /dev/shm) are this machine's, as slaves
# so that nothing unmounted in the root reaches back; /run is a new tmpfs.
mount --bind "$root" "$root" && mount --make-private "$root"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"

# The environment a root login has, plus the proxy and pip settings of this one.
chroot_env=(HOME=/root LANG=C.UTF-8 TERM=dumb
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
while IFS= read -r var; do
  chroot_env+=("$var")
done < <(env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)=' || true)

# Run a shell command in the root, as root, in new PID and mount namespaces. The shell stays
# PID 1 there (the command is not its last one, so it is not exec'ed): a PID 1 ignores signals
# it has no handler for, and make, run as PID 1, would not stop on SIGINT.
in_root() {
  unshare --pid --fork --kill-child --mount-proc="$root/proc" \
    chroot "$root" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "$1"'; exit $?'
}

passed=0
say "prerequisite: apt-get install make"
in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null' ||
  die "could not install make in the root"

# 5. make demo: its URL, Hello, World! on curl, the request in the log sidecar, then Ctrl-C.
if [ -z "${SKIP_DEMO:-}" ]; then
  say "make demo (log: $logs/demo.log)"
  started=$SECONDS
  # SIGINT is ignored in background jobs of a script; a terminal's make gets it, so must this.
  setsid bash -c "$(declare -p root chroot_env); $(declare -f in_root);"' in_root "cd /root/sidekick && env --default-signal=INT make demo"' \
    >"$logs/demo.log" 2>&1 </dev/null &
  demo=$!
  url=""
  while [ -z "$url" ] && kill -0 "$demo" 2>/dev/null && [ $((SECONDS - started)) -lt 1200 ]; do
    sleep 2
    url=$(grep -oE 'ready\. Try: +curl http://[^ ]+' "$logs/demo.log" | grep -oE 'http://[^ ]+' || true)
  done
  if [ -z "$url" ]; then
    tail -40 "$logs/demo.log" >&2
    kill -INT -- "-$demo" 2>/dev/null || true
    die "make demo printed no URL within $((SECONDS - started))s"
  fi
  say "make demo printed $url after $((SECONDS - started))s"
  marker=fresh-machine-$RANDOM$RANDOM
  answer=$(in_root "curl -sS '$url?visit=$marker'") || true
  say "curl $url?visit=$marker answered: $answer"
  shipped=""
  for _ in $(seq 50); do
    shipped=$(grep -m1 "log-shipper.*$marker" "$logs/demo.log" || true)
    [ -n "$shipped" ] && break
    sleep 0.2
  done
  say "log sidecar: ${shipped:-nothing with $marker}"
  kill -INT -- "-$demo"
  demo_rc=0
  wait "$demo" || demo_rc=$?
  say "make demo exited $demo_rc after SIGINT; its last lines:"
  tail -8 "$logs/demo.log" >&2
  [ "$answer" = "Hello, World!" ] || die "the demo answered '$answer', not 'Hello, World!'"
  [ -n "$shipped" ] || die "the request did not show up in the log sidecar's output"
  # make itself dies of the SIGINT (130), as it does on a terminal; it reports a demo that did
  # not end cleanly with a "make: ***" line.
  if [ "$demo_rc" -ne 0 ] && [ "$demo_rc" -ne 130 ] || grep -q '^make: \*\*\*' "$logs/demo.log"; then
    die "the demo did not stop cleanly on SIGINT (make exited $demo_rc)"
  fi
  passed=$((passed + 1))
fi

# 6. bash .ci/run: what CI runs on a new machine.
if [ -z "${SKIP_CI:-}" ]; then
  say "bash .ci/run under nice, timeout $ci_timeout (log: $logs/ci.log)"
  started=$SECONDS
  ci_rc=0
  timeout --kill-after=30s "$ci_timeout" nice -n 10 \
    bash -c "$(declare -p root chroot_env); $(declare -f in_root);"' in_root "cd /root/sidekick && CI=true bash .ci/run </dev/null"' \
    >"$logs/ci.log" 2>&1 || ci_rc=$?
  say "bash .ci/run exited $ci_rc after $((SECONDS - started))s; its last lines:"
  tail -40 "$logs/ci.log" >&2
  [ "$ci_rc" -eq 0 ] || die "bash .ci/run failed; see $logs/ci.log"
  passed=$((passed + 1))
fi
say "done: $passed of the README's commands passed on a fresh $suite root"
