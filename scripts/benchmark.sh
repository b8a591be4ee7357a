#!/usr/bin/env bash
# End-to-end benchmark with real processes on 127.0.0.1, in the shapes TigerBeetle is measured in:
# 10,000 accounts, full batches (8190 transfers), one client, uniform random accounts.
#
#   scripts/benchmark.sh [--runs N] [--transfers N] [--no-10m] [--logs DIR]
#
# Shapes: 1 replica with 1M transfers, 3 replicas with 1M transfers, 1 replica with 10M transfers
# (the journal wraps behind checkpoints there, so the checkpoint pause shows in p100).
# `--transfers N` replaces the 1M of the first two shapes; `--no-10m` skips the third; `--logs DIR`
# keeps our replicas' logs of every run in DIR/<replicas>r-<transfers>-<run>/ (view changes, and
# each replica's closing counters: resent prepares, dropped sends).
# Accounts keep balance history, as in TigerBeetle's benchmark defaults; NO_HISTORY=1 passes
# --no-history to both.
# If a `tigerbeetle` binary is on PATH (or TIGERBEETLE=/path/to/tigerbeetle), its own
# `tigerbeetle benchmark` runs in the same shapes with its own defaults, alternating with ours (for
# 3 replicas it formats and starts a temporary 3-replica TigerBeetle cluster), and the table shows
# its tx/s and p99 and the ratio of our throughput to its. Nothing is downloaded.
set -euo pipefail

runs=1
transfers=1000000
ten_million=1
logs=""
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --transfers) transfers=$2; shift 2 ;;
        --no-10m) ten_million=0; shift ;;
        --logs) logs=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "benchmark.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -n $logs ]] && logs=$(realpath -m "$logs")
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bin vsr
vsr=$PWD/target/release/vsr
tigerbeetle=${TIGERBEETLE:-$(command -v tigerbeetle || true)}
work=$(mktemp -d "${TMPDIR:-/tmp}/vsr-benchmark.XXXXXX")
tb_pids=()
cleanup() {
    ((${#tb_pids[@]})) && kill "${tb_pids[@]}" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The value after `key = ` on the line starting with `prefix`, e.g. field "$out" "batch latency" p99.
field() {
    sed -n "s/^$2.* $3 = \([0-9.]*\).*/\1/p" <<<"$1" | head -1
}

# Prints "tx/s p50 p99 p100 rss" for one run of ours (run number $3).
ours() {
    local replicas=$1 count=$2 out args=()
    ((${NO_HISTORY:-0})) && args+=(--no-history)
    [[ -n $logs ]] && args+=(--log-dir="$logs/${replicas}r-$count-$3")
    out=$("$vsr" benchmark "${args[@]}" --replica-count="$replicas" --account-count=10000 \
        --transfer-count="$count" --transfer-batch-size=8190 2>/dev/null)
    local tps rss
    tps=$(sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p' <<<"$out")
    rss=$(sed -n 's/^replica peak RSS = \([0-9]*\) MiB.*/\1/p' <<<"$out")
    echo "${tps:-?} $(field "$out" "batch latency" p50) $(field "$out" "batch latency" p99) $(field "$out" "batch latency" p100) ${rss:-?}"
}

# Prints "tx/s p99 rss_mib" of one run of TigerBeetle's own benchmark with its own defaults (its
# batch size of 8189), "?" for what it did not print.
theirs() {
    local replicas=$1 count=$2 out args=()
    if ((replicas > 1)); then
        local base=$((30000 + RANDOM % 20000)) addresses="" r
        for ((r = 0; r < replicas; r++)); do addresses+="${addresses:+,}$((base + r))"; done
        for ((r = 0; r < replicas; r++)); do
            "$tigerbeetle" format --cluster=0 --replica="$r" --replica-count="$replicas" \
                "$work/tb_$r.tigerbeetle" >/dev/null 2>&1
            "$tigerbeetle" start --addresses="$addresses" "$work/tb_$r.tigerbeetle" >/dev/null 2>&1 &
            tb_pids+=($!)
        done
        args=(--addresses="$addresses")
    fi
    ((${NO_HISTORY:-0})) && args+=(--no-history)
    out=$("$tigerbeetle" benchmark "${args[@]}" --account-count=10000 --transfer-count="$count" \
        2>&1 || true)
    if ((${#tb_pids[@]})); then
        kill "${tb_pids[@]}" 2>/dev/null || true
        wait "${tb_pids[@]}" 2>/dev/null || true
        tb_pids=()
        rm -f "$work"/tb_*.tigerbeetle
    fi
    local tps p99 rss
    tps=$(sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p' <<<"$out")
    p99=$(sed -n 's/^batch latency p99 *= \([0-9]*\) ms.*/\1/p' <<<"$out")
    rss=$(sed -n 's/^rss = \([0-9]*\) bytes.*/\1/p' <<<"$out")
    [[ -n $rss ]] && rss=$((rss / 1048576))
    echo "${tps:-?} ${p99:-?} ${rss:-?}"
}

shapes=("1 $transfers" "3 $transfers")
((ten_million)) && shapes+=("1 10000000")

printf '%-26s %10s %8s %8s %9s %9s %10s %9s %9s %8s\n' "shape" "tx/s" "p50 ms" "p99 ms" \
    "p100 ms" "RSS MiB" "TB tx/s" "TB p99" "TB RSS" "vs TB"
for shape in "${shapes[@]}"; do
    read -r replicas count <<<"$shape"
    for ((run = 1; run <= runs; run++)); do
        read -r tps p50 p99 p100 rss < <(ours "$replicas" "$count" "$run")
        ratio="-" ttps="-" tp99="-" trss="-"
        if [[ -n $tigerbeetle ]]; then
            read -r ttps tp99 trss < <(theirs "$replicas" "$count")
            [[ $ttps != "?" && $tps != "?" ]] && ratio=$(awk -v a="$tps" -v b="$ttps" 'BEGIN { printf "%.2fx", a / b }')
        fi
        printf '%-26s %10s %8s %8s %9s %9s %10s %9s %9s %8s\n' "$replicas replica(s), $count tx" \
            "$tps" "$p50" "$p99" "$p100" "$rss" "$ttps" "$tp99" "$trss" "$ratio"
    done
done
[[ -n $tigerbeetle ]] || echo "no tigerbeetle binary on PATH (set TIGERBEETLE=/path): our figures only"
