#!/usr/bin/env bash
# The VOPR's verdict lines (with digests) for a fixed set of seeds: a refactor that claims "no
# behaviour change" must leave them identical.
#
#   scripts/digests.sh > before.txt      # on the old commit
#   scripts/digests.sh > after.txt       # on the new one
#   diff before.txt after.txt            # empty: same runs, seed for seed
#
# The set: seeds 1..N (default 400), every regression seed, and a few large seeds. Lines are
# sorted by seed. Environment: VOPR_BIN=/path/to/vopr skips the build; JOBS (default: CPUs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

count=${1:-400}
[[ $count =~ ^[0-9]+$ ]] || { echo "usage: scripts/digests.sh [N]" >&2; exit 2; }
if [[ -z ${VOPR_BIN:-} ]]; then
    cargo build --release -q -p vsr-sim --bin vopr
    VOPR_BIN=target/release/vopr
fi
jobs=${JOBS:-$(nproc)}
{
    seq 1 "$count"
    grep -oE '^[0-9]+' .ci/vopr-regressions.txt
    printf '%s\n' 347401026149631895 594482466348682061 1152921504606846975 4611686018427387903
} | sort -un | xargs -P "$jobs" -I{} sh -c "'$VOPR_BIN' {} 2>/dev/null | tail -n 1" |
    sort -t= -k2,2n
