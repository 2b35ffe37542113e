#!/usr/bin/env bash
# Installs what the test suite needs, only when missing, so later runs are
# fast: the real clients and peers from Debian packages (skopeo, podman,
# buildah, docker-registry, containerd, docker.io (Docker Engine), nginx (the
# benchmark's blob GET reference), chromium + chromium-driver (the web
# interface's browser tests), caddy, apache2-utils, uidmap, fuse-overlayfs, openssl,
# tar) and the S3 test peers built from source and cached in /opt/cove-peers
# (scripts/peers/install-*.sh). Needs root (or sudo) for apt-get.
# Debian/Ubuntu only; elsewhere it reports what is missing and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package
declare -A PACKAGES=(
  [skopeo]=skopeo
  [podman]=podman
  [buildah]=buildah
  [docker-registry]=docker-registry
  [containerd]=containerd
  [ctr]=containerd
  [caddy]=caddy
  [dockerd]=docker.io
  [htpasswd]=apache2-utils
  [newuidmap]=uidmap
  [fuse-overlayfs]=fuse-overlayfs
  [openssl]=openssl
  [tar]=tar
  [nginx]=nginx
  [chromium]=chromium
  [chromedriver]=chromium-driver
)

missing=()
for bin in "${!PACKAGES[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/bin/$bin" ] && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${PACKAGES[$bin]}")
  fi
done
# podman needs a policy.json to pull and push.
if [ ! -f /etc/containers/policy.json ]; then
  missing+=(golang-github-containers-common)
fi

if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  echo "install-test-deps: installing ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
else
  echo "install-test-deps: Debian packages present"
fi

# S3 test peers (cached under /opt/cove-peers; the first run builds them).
for peer in scripts/peers/install-s3s-fs.sh scripts/peers/install-garage.sh; do
  if [ -f "$peer" ]; then
    echo "install-test-deps: $peer"
    bash "$peer"
  fi
done
