#!/usr/bin/env bash
# End-to-end benchmark with real processes on 127.0.0.1, in the shapes TigerBeetle is measured in:
# 10,000 accounts, full batches (8190 transfers), one client, uniform random accounts.
#
#   scripts/benchmark.sh [--runs N] [--transfers N]
#
# Shapes: 1 replica and 3 replicas with 1M transfers. (10M transfers needs the journal to wrap,
# which arrives with checkpoints; until then that shape is skipped and says so.)
# If a `tigerbeetle` binary is on PATH (or TIGERBEETLE=/path/to/tigerbeetle), its own
# `tigerbeetle benchmark` runs in the same shapes, alternating with ours, and the table shows the
# ratio. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=1
transfers=1000000
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --transfers) transfers=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "benchmark.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

cargo build --release --bin vsr
vsr=$PWD/target/release/vsr
tigerbeetle=${TIGERBEETLE:-$(command -v tigerbeetle || true)}

# Prints "tx/s p50 p99" for one run of ours.
ours() {
    local replicas=$1 out
    out=$("$vsr" benchmark --replica-count="$replicas" --account-count=10000 \
        --transfer-count="$transfers" --transfer-batch-size=8190 2>/dev/null)
    local tps p50 p99
    tps=$(sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p' <<<"$out")
    p50=$(sed -n 's/^batch latency .*p50 = \([0-9.]*\) ms.*/\1/p' <<<"$out")
    p99=$(sed -n 's/^batch latency .*p99 = \([0-9.]*\) ms.*/\1/p' <<<"$out")
    echo "$tps $p50 $p99"
}

# Prints "tx/s p50 p99" for one run of TigerBeetle's own benchmark (its output format).
theirs() {
    local replicas=$1 out
    out=$("$tigerbeetle" benchmark --account-count=10000 --transfer-count="$transfers" \
        --transfer-batch-size=8190 ${replicas:+--addresses=} 2>&1 || true)
    local tps p50 p99
    tps=$(sed -n 's/^load accepted = \([0-9]*\) tx\/s.*/\1/p' <<<"$out")
    p50=$(sed -n 's/^batch latency p50 = \([0-9.]*\) ms.*/\1/p;s/.*p50 = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)
    p99=$(sed -n 's/.*p99 = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)
    echo "${tps:-?} ${p50:-?} ${p99:-?}"
}

printf '%-28s %12s %10s %10s %12s\n' "shape" "tx/s" "p50 ms" "p99 ms" "vs tigerbeetle"
for replicas in 1 3; do
    for ((run = 1; run <= runs; run++)); do
        read -r tps p50 p99 < <(ours "$replicas")
        ratio="-"
        if [[ -n $tigerbeetle && $replicas == 1 ]]; then
            read -r ttps _ _ < <(theirs "")
            [[ $ttps != "?" && -n $tps ]] && ratio=$(awk -v a="$tps" -v b="$ttps" 'BEGIN { printf "%.2fx", a / b }')
        fi
        printf '%-28s %12s %10s %10s %12s\n' "$replicas replica(s), $transfers tx" "$tps" "$p50" "$p99" "$ratio"
    done
done
echo "10M transfers: skipped (needs journal wrap, which arrives with checkpoints)"
[[ -n $tigerbeetle ]] || echo "no tigerbeetle binary on PATH (set TIGERBEETLE=/path): our figures only"
