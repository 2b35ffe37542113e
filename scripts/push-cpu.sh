#!/usr/bin/env bash
# Server CPU per GiB pushed (issue 12): starts `cove serve` on a fresh data
# directory for every run, pushes one random blob with curl, and reads the
# server's utime+stime (/proc/PID/stat) and minor page faults before and
# after the push. Linux only.
#
#   scripts/push-cpu.sh                       # 1 GiB, monolithic and 16 MiB PATCHes, 3 runs each
#   scripts/push-cpu.sh -b target/profiling/cove -m chunked -c 8 -n 5
#   STRACE=1 scripts/push-cpu.sh -m mono      # also `strace -c -f` the server (slows it down)
#   PERF="-F 999 -g" scripts/push-cpu.sh      # also `perf record` the server
#
# Options: -b BINARY (default target/release/cove), -s SIZE_MIB (1024),
# -m mono|chunked|both (both), -c CHUNK_MIB (16), -n RUNS (3),
# -d DIR (a temp dir; blob, data, strace and perf files go there).
# The bench's own client pattern (hyper, 1 MiB frames) is
# `cove-bench --short --only push`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/cove size=1024 mode=both chunk=16 runs=3 dir=""
while getopts "b:s:m:c:n:d:" o; do
  case $o in
    b) bin=$OPTARG ;; s) size=$OPTARG ;; m) mode=$OPTARG ;; c) chunk=$OPTARG ;;
    n) runs=$OPTARG ;; d) dir=$OPTARG ;; *) sed -n 2,18p "$0" >&2; exit 2 ;;
  esac
done
bin=$(realpath "$bin")
dir=${dir:-$(mktemp -d "${TMPDIR:-/tmp}/cove-push-cpu.XXXXXX")}
mkdir -p "$dir"
ticks=$(getconf CLK_TCK)

blob=$dir/blob
if [ ! -f "$blob" ] || [ "$(stat -c %s "$blob")" -ne $((size << 20)) ]; then
  head -c $((size << 20)) /dev/urandom >"$blob"
  rm -f "$dir"/part_*
fi
digest=sha256:$(sha256sum "$blob" | cut -d' ' -f1)

# field 10: minflt, 14: utime, 15: stime (the command name has no spaces here)
stat_of() { awk '{print $14 + $15, $10}' "/proc/$1/stat"; }
location() { awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r'; }
absolute() { case $1 in http*) echo "$1" ;; *) echo "$base$1" ;; esac; }
with_digest() { case $1 in *\?*) echo "$1&digest=$digest" ;; *) echo "$1?digest=$digest" ;; esac; }

push_mono() {
  local loc
  loc=$(curl -s -D - -o /dev/null -X POST "$base/v2/bench/cpu/blobs/uploads/" | location)
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$blob" \
    "$(with_digest "$(absolute "$loc")")" -o /dev/null
}

push_chunked() {
  local loc pos=0 end part
  [ -f "$dir/part_000" ] || split -b "${chunk}M" -d -a 3 "$blob" "$dir/part_"
  loc=$(curl -s -D - -o /dev/null -X POST "$base/v2/bench/cpu/blobs/uploads/" | location)
  for part in "$dir"/part_*; do
    end=$((pos + $(stat -c %s "$part") - 1))
    loc=$(curl -sf -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
      -H "Content-Range: $pos-$end" -T "$part" "$(absolute "$loc")" | location)
    pos=$((end + 1))
  done
  curl -sf -X PUT -H 'Content-Length: 0' "$(with_digest "$(absolute "$loc")")" -o /dev/null
}

one_run() { # $1: mono|chunked, $2: run number
  local data=$dir/data-$1-$2 port pid st0 st1 t0 t1 tracer=""
  rm -rf "$data"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  base=http://127.0.0.1:$port
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "$base/v2/" >/dev/null && break; sleep 0.05; done
  if [ -n "${STRACE:-}" ]; then
    strace -c -f -p "$pid" -o "$dir/strace.$1.$2" 2>/dev/null & tracer=$!
  elif [ -n "${PERF:-}" ]; then
    # shellcheck disable=SC2086
    perf record $PERF -p "$pid" -o "$dir/perf.$1.$2.data" >/dev/null 2>&1 & tracer=$!
  fi
  [ -z "$tracer" ] || sleep 0.5
  read -r st0 <<<"$(stat_of "$pid" | tr ' ' ,)"
  t0=$(date +%s.%N)
  "push_$1"
  t1=$(date +%s.%N)
  read -r st1 <<<"$(stat_of "$pid" | tr ' ' ,)"
  if [ -n "$tracer" ]; then kill -INT "$tracer"; wait "$tracer" || true; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  python3 - "$1" "$2" "$st0" "$st1" "$t0" "$t1" "$ticks" "$size" <<'EOF'
import sys
mode, run, a, b, t0, t1, ticks, size = sys.argv[1:]
(c0, f0), (c1, f1) = [tuple(float(x) for x in s.split(",")) for s in (a, b)]
gib = int(size) / 1024
cpu = (c1 - c0) / float(ticks) / gib
print(f"{mode} run {run}: server CPU {cpu:.2f} s/GiB, {gib / (float(t1) - float(t0)) * 1024:.0f} MiB/s, "
      f"{(f1 - f0) / gib:.0f} minor faults/GiB")
EOF
}

modes=$mode
[ "$mode" = both ] && modes="mono chunked"
echo "cove: $bin; blob $size MiB; chunks $chunk MiB; $runs runs; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for m in $modes; do
  for r in $(seq "$runs"); do one_run "$m" "$r"; done | tee "$dir/result.$m"
  python3 - "$dir/result.$m" "$m" <<'EOF'
import re, statistics, sys
v = [float(m.group(1)) for m in re.finditer(r"CPU ([0-9.]+) s/GiB", open(sys.argv[1]).read())]
print(f"{sys.argv[2]}: median {statistics.median(v):.2f} s/GiB over {len(v)} runs (min {min(v):.2f}, max {max(v):.2f})")
EOF
done
