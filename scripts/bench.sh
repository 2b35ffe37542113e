#!/usr/bin/env bash
# Benchmarks Cove against the CNCF distribution registry on this machine:
# installs docker-registry, nginx (the blob GET reference) and skopeo (the
# real client of the skopeo rows) when missing (Debian/Ubuntu, needs root or sudo),
# builds the release binaries, and runs the harness (bench/, cove-bench).
#
#   scripts/bench.sh --smoke          # about a minute: checks the harness, figures mean nothing
#   scripts/bench.sh --short          # under 5 minutes
#   scripts/bench.sh                  # full: more pairs, 1 GiB blobs in the GET mix
#   scripts/bench.sh --only push,blob-get --dir /srv/bench --keep
#
# Arguments go to cove-bench (see `cove-bench --help`). The table goes to
# stdout, progress to stderr; the exit code is 1 when any answer was wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

registry=/usr/bin/docker-registry
if [ ! -x "$registry" ]; then
  if command -v docker-registry >/dev/null 2>&1; then
    registry=$(command -v docker-registry)
  elif command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing docker-registry (CNCF distribution)" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq docker-registry >/dev/null
    # The package starts a system service on :5000; the harness does not need it.
    if command -v systemctl >/dev/null 2>&1; then
      "${sudo_cmd[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
  else
    echo "bench: docker-registry (CNCF distribution 2.x) is missing; install it and pass --registry PATH" >&2
    exit 2
  fi
fi

# nginx serving Cove's blob files is the physical reference for blob GETs;
# without it those rows are left out.
if [ ! -x /usr/sbin/nginx ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench: installing nginx (blob GET reference)" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nginx >/dev/null ||
    echo "bench: nginx could not be installed; the nginx reference rows are left out" >&2
  if command -v systemctl >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

# skopeo pushes and pulls a single-layer image as a real client; without it
# those rows are left out.
if [ ! -x /usr/bin/skopeo ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench: installing skopeo (real client)" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq skopeo >/dev/null ||
    echo "bench: skopeo could not be installed; the skopeo rows are left out" >&2
fi

# s3s-fs (a real S3 server, built once into /opt/cove-peers) is the object
# store of the scale-s3 rows; without it those rows are left out.
scripts/peers/install-s3s-fs.sh >&2 ||
  echo "bench: s3s-fs could not be installed; the object-storage scale rows are left out" >&2

echo "bench: building release binaries (cove, cove-bench)" >&2
# Two builds: `--bin cove` would otherwise keep cove-bench's binary from being built.
cargo build --release --locked -p cove-server --bin cove >&2
cargo build --release --locked -p cove-bench >&2

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "$target_dir/release/cove-bench" --cove "$target_dir/release/cove" --registry "$registry" "$@"
