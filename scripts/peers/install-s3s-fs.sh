#!/usr/bin/env bash
# Installs the s3s-fs S3 server (test peer for the object-storage backend) into
# /opt/cove-peers/bin unless it is already there. ~3 minutes on 2 cores.
# Override the install root with COVE_PEERS_ROOT.
set -euo pipefail
ROOT="${COVE_PEERS_ROOT:-/opt/cove-peers}"
if [ -x "$ROOT/bin/s3s-fs" ]; then
  echo "s3s-fs already installed at $ROOT/bin/s3s-fs"
  exit 0
fi
mkdir -p "$ROOT"
nice -n 19 cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$ROOT"
echo "installed $ROOT/bin/s3s-fs"
