#!/usr/bin/env bash
# Build the sidekick image and the example apps' image from wheels made here first, so the image
# builds themselves need no package index (a registry is still needed for the base image unless
# BASE names a local one).
#
#   deploy/build-images.sh [--base IMAGE] [--python X.Y] [--tag VERSION] [--engine podman|docker]
#
# --python is the base image's Python version (default 3.12, matching python:3.12-slim): binary
# wheels are downloaded for that version and this machine's architecture, whatever Python runs
# this script. Images: localhost/sidekick:VERSION, localhost/sidekick-webapp:VERSION and
# localhost/sidekick-app-to-sidecar:VERSION.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
base=docker.io/library/python:3.12-slim
pyver=3.12
version=0.1.0
engine=podman
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    --python) pyver=$2; shift 2 ;;
    --tag) version=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    *) echo "build-images.sh: unknown argument $1; see the usage at the top of $0" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
arch=$(uname -m)
ctx=$(mktemp -d "${TMPDIR:-/tmp}/sidekick-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

# Wheels for the target Python: ours built from source, the dependencies as binary wheels only
# (manylinux covers every glibc base such as Debian and the official python images). pip does
# not widen an explicit --platform to older manylinux versions, so each one a dependency may
# publish is named, up to glibc 2.36 (Debian 12, python:3.12-slim).
platforms=()
for tag in manylinux_2_36 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
           manylinux_2_27 manylinux_2_24 manylinux2014 manylinux2010 manylinux1; do
  platforms+=(--platform "${tag}_$arch")
done
download() {
  "$python" -m pip download -q --only-binary=:all: --implementation cp --python-version "$pyver" \
    "${platforms[@]}" --platform any -d "$1" "${@:2}"
}
mkdir -p "$ctx/sidekick/wheels" "$ctx/app/wheels" "$ctx/app/apps"
"$python" -m pip wheel -q --no-deps "$repo" -w "$ctx/sidekick/wheels"
download "$ctx/sidekick/wheels" -r "$here/image-requirements.txt"
cp "$here/image-requirements.txt" "$ctx/sidekick/"
download "$ctx/app/wheels" flask
cp -r "$repo/examples/webapp/app" "$ctx/app/apps/webapp"
cp -r "$repo/examples/app-to-sidecar/app" "$ctx/app/apps/app-to-sidecar"
find "$ctx/app/apps" -name __pycache__ -prune -exec rm -rf {} +

"$engine" build -q -f "$here/Containerfile" --build-arg "BASE=$base" \
  -t "localhost/sidekick:$version" "$ctx/sidekick"
for app in webapp app-to-sidecar; do
  "$engine" build -q -f "$here/app.Containerfile" --build-arg "BASE=$base" --build-arg "APP=$app" \
    -t "localhost/sidekick-$app:$version" "$ctx/app"
done
for image in sidekick sidekick-webapp sidekick-app-to-sidecar; do
  echo "localhost/$image:$version $("$engine" image inspect --format '{{.Size}}' "localhost/$image:$version") bytes"
done
