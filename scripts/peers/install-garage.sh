#!/usr/bin/env bash
# Installs Garage 2.5.0 (a real distributed S3-compatible store; test peer for the
# object-storage backend) into /opt/cove-peers/bin unless it is already there.
# ~13 minutes on 2 cores; the binary is the cache. Override the root with COVE_PEERS_ROOT.
set -euo pipefail
ROOT="${COVE_PEERS_ROOT:-/opt/cove-peers}"
if [ -x "$ROOT/bin/garage" ]; then
  echo "garage already installed at $ROOT/bin/garage"
  exit 0
fi
mkdir -p "$ROOT"
nice -n 19 cargo install garage --version 2.5.0 --locked --root "$ROOT"
echo "installed $ROOT/bin/garage"
