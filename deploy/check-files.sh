#!/bin/sh
# The deployment files checked with their own tools (part of `make check-deploy`):
#   1. the Containerfile's build stage (deploy/build-wheel.sh): the wheel it builds holds the
#      generated gRPC code, the embedded board and a working CLI;
#   2. mediatord.service: `systemd-analyze verify` must print nothing (it exits 0 on unknown
#      keys), with ExecStart pointed at this venv's mediatord; `systemd-analyze security`;
#   3. kubernetes.yaml parses as Kubernetes objects (`kubectl kustomize`, offline).
# Tools that are not installed are skipped with a message.
#
#   deploy/check-files.sh VENV_BIN     (run from the repository root)
set -eu

bin=$(cd "$1" && pwd)
unit=deploy/mediatord.service
scratch=$(mktemp -d "${TMPDIR:-/tmp}/mediatord-files.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM

# 1. The wheel, loaded from its own files (not this tree: run from the scratch directory).
PYTHON="$bin/python" sh deploy/build-wheel.sh . "$scratch/wheels" >/dev/null
"$bin/python" -m pip install --quiet --no-deps --target "$scratch/site" "$scratch"/wheels/mediatord-*.whl
(
  cd "$scratch"
  PYTHONPATH="$scratch/site" "$bin/python" - "$scratch/site" <<'EOF'
import sys

import mediatord
import mediatord.api.mediator.v1.mediator_pb2_grpc  # noqa: F401 (generated at build time)
from mediatord.board import load_board
from mediatord.cli import build_parser

site = sys.argv[1]
assert mediatord.__file__.startswith(site), f"mediatord came from {mediatord.__file__}"
board = load_board(None)  # the board embedded as package data
assert board.name == "zcu102", board.name
assert build_parser().parse_args(["serve", "--log-format", "json"]).command == "serve"
print(f"wheel: mediatord {mediatord.__version__} with its generated gRPC code and board")
EOF
)

# 2. The systemd unit.
if command -v systemd-analyze >/dev/null 2>&1; then
  grep -q '^ExecStart=/usr/local/bin/mediatord serve ' "$unit" ||
    { echo "$unit: ExecStart must be /usr/local/bin/mediatord serve ..." >&2; exit 1; }
  sed "s#^ExecStart=/usr/local/bin/mediatord #ExecStart=$bin/mediatord #" "$unit" \
    >"$scratch/mediatord.service"
  rc=0
  out=$(systemd-analyze verify "$scratch/mediatord.service" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    echo "systemd-analyze verify $unit (exit $rc):" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "systemd-analyze verify $unit: clean"
  systemd-analyze security --offline=true --threshold=30 "$scratch/mediatord.service" 2>&1 |
    tail -n 1
else
  echo "systemd-analyze not found: skipping the check of $unit"
fi

# 3. The Kubernetes manifests.
if command -v kubectl >/dev/null 2>&1; then
  mkdir "$scratch/k8s"
  cp deploy/kubernetes.yaml "$scratch/k8s/"
  printf 'resources:\n  - kubernetes.yaml\n' >"$scratch/k8s/kustomization.yaml"
  kubectl kustomize "$scratch/k8s" >"$scratch/k8s/out.yaml"
  echo "kubectl kustomize deploy/kubernetes.yaml: $(grep -c '^kind:' "$scratch/k8s/out.yaml") objects"
else
  echo "kubectl not found: skipping the parse of deploy/kubernetes.yaml"
fi
