#!/bin/sh
# Build mediatord's wheel, with its protobuf/gRPC code generated at build time.
#
#   deploy/build-wheel.sh SRC OUTDIR
#
# SRC is a source tree (pyproject.toml, README.md, proto/, mediatord/, clients/); it is
# copied to a scratch directory first, so SRC is never changed. The generated code
# (mediatord/api/, never committed) is made there by protoc from grpcio-tools, the same
# protoc invocation as the Makefile's, and the wheel (`pip wheel --no-deps`) is written to
# OUTDIR. The Containerfile's build stage runs this; `make check-deploy` runs it too and
# checks what the wheel holds.
#
# Needs: $PYTHON (default python3) with pip and grpcio-tools (>=1.85.1,<1.86: the runtime's
# grpcio must be at least the version that generated the code).
set -eu

src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
python=${PYTHON:-python3}
case $python in */*) python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mediatord-wheel.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM

cp "$src/pyproject.toml" "$src/README.md" "$scratch/"
cp -R "$src/proto" "$src/mediatord" "$src/clients" "$scratch/"
# Whatever the source tree had generated or cached is not what we ship.
rm -rf "$scratch/mediatord/api"
find "$scratch" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$scratch" -name '*.egg-info' -prune -exec rm -rf {} +

cd "$scratch"
mkdir -p mediatord/api
"$python" -m grpc_tools.protoc -Imediatord/api=proto \
  --python_out=. --grpc_python_out=. --pyi_out=. \
  mediatord/api/mediator/v1/mediator.proto
touch mediatord/api/__init__.py mediatord/api/mediator/__init__.py \
  mediatord/api/mediator/v1/__init__.py
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" .
ls "$out"/mediatord-*.whl
