#!/usr/bin/env bash
# Regenerate every example's classic and podman variants from its native manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
for example in nginx-logs webapp static-site app-to-sidecar; do
  "$python" deploy/make_classic.py "examples/$example/$example.yaml" >"examples/$example/$example-classic.yaml"
  "$python" deploy/make_classic.py --podman "examples/$example/$example.yaml" >"examples/$example/$example-podman.yaml"
done
