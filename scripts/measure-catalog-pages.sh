#!/usr/bin/env bash
# Times _catalog?n=100 (first page, middle page) on a filesystem store of N
# repositories written directly in the layout. Usage: measure-catalog-pages.sh COVE_BIN N [PORT]
# (data kept in $COVE_SCALE_DIR, default /tmp/cove-scale, for reruns).
set -euo pipefail
mkdir -p "${COVE_SCALE_DIR:-/tmp/cove-scale}"
bin=$1; n=$2; port=${3:-5599}
data=${COVE_SCALE_DIR:-/tmp/cove-scale}/data-$n
if [ ! -d "$data/repositories" ]; then
  python3 - "$data" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "repositories", f"org{i % 100:02d}", f"repo{i:06d}", "_manifests", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:064x}"), "wb") as f:
        f.write(b"application/vnd.oci.image.manifest.v1+json\n{}")
PY
fi
"$bin" serve --listen 127.0.0.1:$port --data-dir "$data" >${COVE_SCALE_DIR:-/tmp/cove-scale}/serve-$n.log 2>&1 &
pid=$!
trap 'kill $pid' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/v2/ >/dev/null && break; sleep 0.1; done
mid=$(printf 'org%02d/repo%06d' 50 $((n / 2 / 100 * 100 + 50)))
t() { # best of 5, ms
  best=999999
  for _ in 1 2 3 4 5; do
    s=$(curl -s -o ${COVE_SCALE_DIR:-/tmp/cove-scale}/out.json -w '%{time_total}' "http://127.0.0.1:$port$1")
    ms=$(python3 -c "print(round($s*1000,1))")
    best=$(python3 -c "print(min($best,$ms))")
  done
  echo "$1 -> ${best} ms ($(python3 -c "import json;print(len(json.load(open('${COVE_SCALE_DIR:-/tmp/cove-scale}/out.json'))['repositories']))") repos)"
}
t "/v2/_catalog?n=100"
t "/v2/_catalog?n=100&last=$mid"
t "/v2/_catalog?n=1000&last=$mid"
