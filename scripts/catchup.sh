#!/usr/bin/env bash
# How fast a restarted backup catches up: a 3-replica cluster on 127.0.0.1, replica 2 killed
# (kill -9), the cluster loaded with --missed ops while it is down, then replica 2 restarted on an
# idle cluster; times until its data file holds the cluster's head (`vsr inspect`, read-only).
#
#   scripts/catchup.sh                                  # 2,000 ops missed, 64 KiB messages
#   scripts/catchup.sh --missed 500 --message-size-max 1048576 --transfer-batch-size 8190
#
# Prints: missed ops, seconds to catch up, ops/s. Exit status 0, or 1 if it did not catch up
# within --timeout seconds.
set -euo pipefail

missed=2000
message_size_max=65536
slots=4096
batch=100
timeout=60
usage() {
    cat <<'EOF'
usage: scripts/catchup.sh [--missed N] [--message-size-max BYTES] [--journal-slot-count N]
                          [--transfer-batch-size N] [--timeout S]

  --missed N               ops the cluster commits while replica 2 is down (default 2000)
  --message-size-max B     the cluster's message size (default 65536)
  --journal-slot-count N   journal slots (default 4096: the missed ops fit the journal, so the
                           backup repairs them; fewer makes it state sync)
  --transfer-batch-size N  transfers per request, i.e. per op (default 100)
  --timeout S              give up after S seconds of catching up (default 60)
EOF
}
while (($#)); do
    case $1 in
    --missed) missed=$2; shift 2 ;;
    --message-size-max) message_size_max=$2; shift 2 ;;
    --journal-slot-count) slots=$2; shift 2 ;;
    --transfer-batch-size) batch=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --bin vsr --manifest-path "$root/Cargo.toml"
vsr=$root/target/release/vsr
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
addresses="$port,$((port + 1)),$((port + 2))"
cluster=$((RANDOM + 1))
for r in 0 1 2; do
    "$vsr" format --cluster "$cluster" --replica "$r" --replica-count 3 \
        --message-size-max "$message_size_max" --journal-slot-count "$slots" "$dir/$r.vsr" >/dev/null
done
start() {
    "$vsr" start --addresses "$addresses" "$dir/$1.vsr" 2>>"$dir/$1.log" >/dev/null &
    pids[$1]=$!
}
op_head() {
    "$vsr" inspect "$dir/$1.vsr" 2>/dev/null | sed -n 's/.*ops present:.*\.\.=\([0-9]*\).*/\1/p'
}
load() {
    # One request per op: the client's register, the accounts (one batch), then transfers of
    # $batch each.
    "$vsr" benchmark --addresses "$addresses" --cluster "$cluster" --account-count 100 \
        --transfer-count "$1" --transfer-batch-size "$batch" --query-count 0 >"$dir/load.txt" 2>&1 ||
        { cat "$dir/load.txt" >&2; exit 1; }
}
for r in 0 1 2; do start "$r"; done
# Replica 2 has joined the cluster (it is a backup of a started view) before it is killed.
for _ in $(seq 1 1500); do
    grep -q "started as backup" "$dir/2.log" 2>/dev/null && break
    sleep 0.02
done
grep -q "started as backup" "$dir/2.log" || { echo "replica 2 never joined" >&2; exit 1; }
kill -9 "${pids[2]}"
wait "${pids[2]}" 2>/dev/null || true
load $(((missed - 2) * batch))
head=$(op_head 0)
before=$(op_head 2)
echo "cluster head op $head; replica 2 stopped at op $before; missed $((head - before)) ops"
t0=$(date +%s%N)
start 2
deadline=$((t0 + timeout * 1000000000))
while :; do
    now=$(date +%s%N)
    have=$(op_head 2)
    if ((have >= head)); then
        break
    fi
    if ((now > deadline)); then
        echo "FAILED: replica 2 at op $have of $head after $timeout s" >&2
        exit 1
    fi
    sleep 0.02
done
elapsed_ns=$((now - t0))
awk -v ops=$((head - before)) -v ns="$elapsed_ns" \
    'BEGIN { s = ns / 1e9; printf "caught up %d ops in %.2f s: %.0f ops/s\n", ops, s, ops / s }'
