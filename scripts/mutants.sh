#!/usr/bin/env bash
# Mutation score: plant each hand-written bug of sim/mutants/ alone and see whether the VOPR
# catches it.
#
#   scripts/mutants.sh                       # every mutant, seeds 1..300 each
#   scripts/mutants.sh --quick               # the 10 cheapest (sim/mutants/quick.txt)
#   scripts/mutants.sh --only 11-faulty-slot-is-nack --seeds 50
#
# Run `scripts/mutants.sh --help` for every option. Exit status: 0 every mutant run was caught
# (or is argued equivalent), 1 some mutant survived, did not apply or did not build, 2 usage.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/mutants.sh [--quick | --only NAME ...] [options]

For each mutant (a patch sim/mutants/NN-name.patch), in a scratch git worktree detached at
HEAD: apply the patch alone (`git apply`), `cargo build --release -p vsr-sim`, run the VOPR
(scripts/vopr.sh) on seeds 1..N until the first failure, then revert the patch. Prints a
markdown table: mutant, caught?, first failing seed, the checker that fired, seconds.

  --only NAME        run only this mutant (file name with or without .patch; repeatable)
  --quick            run the mutants listed in sim/mutants/quick.txt (the 10 cheapest)
  --seeds N          seeds 1..N per mutant (default 300)
  --jobs J           seeds run in parallel (default 2)
  --seed-timeout S   a seed running longer than S seconds is a hang, i.e. caught (default 120)
  --target-dir DIR   CARGO_TARGET_DIR shared by all mutant builds (default target/mutants)
  --logs DIR         keep each mutant's build and VOPR output here (default DIR/logs under
                     the target dir)
  --output FILE      also write the table to FILE
  --check-apply      only check that each selected patch applies to the working tree (no
                     build, no VOPR; CI runs it so a mutant never drifts from the code it
                     patches); exit 1 naming those that do not
  -h, --help         this text

Caught: a seed failed (a checker, a replica assertion, a liveness stall, or a hang past
--seed-timeout). A patch carrying a line `# equivalent: <argument>` is not run and is reported
as equivalent. A patch that no longer applies is reported as `does not apply`; one that does
not compile as `does not build`.
EOF
}

die_usage() {
    echo "mutants.sh: $*" >&2
    echo "run 'scripts/mutants.sh --help' for usage" >&2
    exit 2
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------------------------------------
# Arguments.

only=()
quick=0
check_apply=0
seeds=300
jobs=2
seed_timeout=120
target_dir=""
logs_dir=""
output=""

need_value() { (($2 >= 2)) || die_usage "$1 needs a value"; }

while (($# > 0)); do
    case $1 in
        --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    esac
    case $1 in
        -h | --help) usage; exit 0 ;;
        --only) need_value "$1" $#; only+=("${2%.patch}"); shift 2 ;;
        --quick) quick=1; shift ;;
        --check-apply) check_apply=1; shift ;;
        --seeds) need_value "$1" $#; seeds=$2; shift 2 ;;
        --jobs | -j) need_value "$1" $#; jobs=$2; shift 2 ;;
        --seed-timeout) need_value "$1" $#; seed_timeout=$2; shift 2 ;;
        --target-dir) need_value "$1" $#; target_dir=$2; shift 2 ;;
        --logs) need_value "$1" $#; logs_dir=$2; shift 2 ;;
        --output) need_value "$1" $#; output=$2; shift 2 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

for pair in "--seeds:$seeds" "--jobs:$jobs" "--seed-timeout:$seed_timeout"; do
    name=${pair%%:*} value=${pair#*:}
    { is_uint "$value" && ((value >= 1)); } || die_usage "$name needs a positive integer, got '$value'"
done
((quick == 0 || ${#only[@]} == 0)) || die_usage "--quick and --only exclude each other"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mutants_dir=$root/sim/mutants
absolute() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
target_dir=$(absolute "${target_dir:-$root/target/mutants}")
logs_dir=$(absolute "${logs_dir:-$target_dir/logs}")
[[ -z $output ]] || output=$(absolute "$output")

# ---------------------------------------------------------------------------------------------
# Which mutants.

names=()
if ((quick)); then
    [[ -f $mutants_dir/quick.txt ]] || die_usage "no $mutants_dir/quick.txt"
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        line=${line//[[:space:]]/}
        [[ -z $line ]] || names+=("${line%.patch}")
    done <"$mutants_dir/quick.txt"
elif ((${#only[@]} > 0)); then
    names=("${only[@]}")
else
    for patch in "$mutants_dir"/*.patch; do
        [[ -e $patch ]] || continue
        name=$(basename "$patch")
        names+=("${name%.patch}")
    done
fi
((${#names[@]} > 0)) || die_usage "no mutants selected"
for name in "${names[@]}"; do
    [[ -f $mutants_dir/$name.patch ]] || die_usage "no such mutant: $mutants_dir/$name.patch"
done

if ((check_apply)); then
    stale=0
    for name in "${names[@]}"; do
        if ! git -C "$root" apply --check "$mutants_dir/$name.patch" 2>/dev/null; then
            echo "mutants.sh: $name.patch does not apply to the working tree: refresh it" >&2
            stale=$((stale + 1))
        fi
    done
    echo "mutants.sh: ${#names[@]} mutant(s) checked, $stale do not apply"
    exit $((stale > 0))
fi

# ---------------------------------------------------------------------------------------------
# The scratch worktree, removed on exit.

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mutants.XXXXXX")
tree=$scratch/tree
cleanup() {
    git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$scratch"
    git -C "$root" worktree prune >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'echo "mutants.sh: interrupted" >&2; exit 130' INT TERM

commit=$(git -C "$root" rev-parse --short=12 HEAD)
git -C "$root" worktree add --quiet --detach "$tree" HEAD
: >"$scratch/no-regressions"
mkdir -p "$logs_dir"

# ---------------------------------------------------------------------------------------------
# Classifying a failure: the `result=FAIL: <message>` of the last line, or the panic location.

checker_of() { # message panic_location
    local m=$1 at=$2
    case $m in
        durability:*) echo "durability checker" ;;
        "cluster time:"*) echo "cluster-time checker" ;;
        "view log:"*) echo "view-log checker" ;;
        liveness:*) echo "liveness" ;;
        hang:*) echo "hang (seed timeout)" ;;
        panic:*)
            if [[ -n $at ]]; then echo "replica assertion ($at)"; else echo "panic"; fi ;;
        *"state digest differs"* | *"committed a different prepare"* | *"has no header for it"* | \
            *"header at op"* | *regressed* | *"does not chain"* | *"executed twice"*)
            echo "canonical history" ;;
        *"accepted a reply"* | *"different replies"* | *"reply body"*) echo "replies checker" ;;
        *"journal hash chain"* | *"journal holds"*) echo "journal checker" ;;
        *"lost acknowledged"* | *"acknowledged op"*) echo "acknowledged-ops checker" ;;
        *"checkpoint at op"*) echo "checkpoint checker" ;;
        ledger:*) echo "ledger checker" ;;
        *"failed to open"*) echo "open failure" ;;
        *) echo "other: ${m:0:40}" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Main loop.

rows=()
caught_50=0 caught_all=0 survived=0 equivalent=0 broken=0
echo "mutants.sh: ${#names[@]} mutant(s), seeds 1..$seeds, $jobs job(s), seed timeout ${seed_timeout}s"
echo "mutants.sh: commit $commit, scratch tree $tree, CARGO_TARGET_DIR=$target_dir, logs in $logs_dir"

for name in "${names[@]}"; do
    patch=$mutants_dir/$name.patch
    log=$logs_dir/$name.log
    start=$SECONDS
    caught="" seed="-" checker="-"
    if grep -q '^# equivalent:' "$patch"; then
        caught=equivalent
        checker="argued: $(grep -m1 '^# equivalent:' "$patch" | sed 's/^# equivalent: *//')"
        equivalent=$((equivalent + 1))
    elif ! git -C "$tree" apply "$patch" >"$log" 2>&1; then
        caught="does not apply"
        broken=$((broken + 1))
    elif ! (cd "$tree" && CARGO_TARGET_DIR=$target_dir cargo build --release -p vsr-sim) >>"$log" 2>&1; then
        caught="does not build"
        broken=$((broken + 1))
    else
        set +e
        (cd "$tree" && VOPR_BIN=$target_dir/release/vopr scripts/vopr.sh --seeds "$seeds" --base 1 \
            --regressions "$scratch/no-regressions" --determinism 0 --jobs "$jobs" \
            --seed-timeout "$seed_timeout") >>"$log" 2>&1
        status=$?
        set -e
        fail=$(grep -m1 '^FAIL seed=' "$log" || true)
        if ((status == 0)); then
            caught=no
            survived=$((survived + 1))
        elif [[ -z $fail ]]; then
            caught="error (vopr.sh exited $status)"
            broken=$((broken + 1))
        else
            caught=yes
            seed=${fail#FAIL seed=}
            seed=${seed%% *}
            message=$(grep -m1 -o 'result=FAIL: .*' "$log" || true)
            message=${message#result=FAIL: }
            message=${message% digest=*}
            [[ $fail != *"hang: "* ]] || message="hang: ${fail#*: }"
            at=$(grep -m1 -o 'panicked at [^ :]*:[0-9]*' "$log" || true)
            at=${at#panicked at }
            checker=$(checker_of "$message" "$at")
            caught_all=$((caught_all + 1))
            ((seed > 50)) || caught_50=$((caught_50 + 1))
        fi
    fi
    git -C "$tree" reset --quiet --hard HEAD
    git -C "$tree" clean --quiet -fd
    seconds=$((SECONDS - start))
    row="| $name | $caught | $seed | $checker | $seconds |"
    rows+=("$row")
    echo "mutants.sh: $row"
done

# ---------------------------------------------------------------------------------------------
# The table.

table() {
    echo "| mutant | caught? | first failing seed | checker | seconds |"
    echo "| --- | --- | ---: | --- | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Totals (${#names[@]} mutants, seeds 1..$seeds, commit $commit): caught within 50 seeds:" \
        "$caught_50; caught within $seeds: $caught_all; survived: $survived; equivalent: $equivalent;" \
        "did not apply, build or run: $broken."
}
echo
table
[[ -z $output ]] || table >"$output"

((survived == 0 && broken == 0))
