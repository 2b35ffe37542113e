#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a dev box:
#   1. installs missing test peers (scripts/install-test-deps.sh),
#   2. checks formatting (cargo fmt --check) and lints (clippy -D warnings),
#   3. builds a release `cove` (the end-to-end tests run against it: a 2 GiB
#      push/pull with unoptimised SHA-256 would take minutes),
#   4. runs every test of the workspace (`cargo test --workspace
#      --no-fail-fast`: every test binary runs, all failures are listed), with
#      COVE_BIN pointing at that release binary.
# Every step runs even if an earlier check failed (except when the build
# fails); the script exits non-zero if anything failed and says what.
#
# Environment: COVE_BIN (test another binary), COVE_TEST_BIG_BLOB_MIB (size
# of the big-blob memory test, default 2048), CARGO_TARGET_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

failed=()
step() {
  local name="$1"
  shift
  echo
  echo "==> $name: $*"
  local start=$SECONDS
  if "$@"; then
    echo "==> $name: ok ($((SECONDS - start)) s)"
  else
    echo "==> $name: FAILED ($((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

step deps scripts/install-test-deps.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${COVE_BIN:-}" ]; then
  step build cargo build --release -p cove-server --bin cove
  if [[ " ${failed[*]} " == *" build "* ]] || [ ! -x "$target_dir/release/cove" ]; then
    echo "==> FAILED: ${failed[*]} (the release build failed; no tests were run)"
    exit 1
  fi
  export COVE_BIN="$target_dir/release/cove"
fi
echo "==> tests run against COVE_BIN=$COVE_BIN"
rm -f "$target_dir/cove-e2e-report.txt"
step test cargo test --workspace --no-fail-fast

if [ -f "$target_dir/cove-e2e-report.txt" ]; then
  echo
  echo "==> measurements (from $target_dir/cove-e2e-report.txt)"
  cat "$target_dir/cove-e2e-report.txt"
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "==> FAILED: ${failed[*]}"
  exit 1
fi
echo "==> all checks passed"
