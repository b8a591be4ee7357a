#!/usr/bin/env bash
# Run the VOPR (the deterministic simulator, binary `vopr` in sim/) over many seeds.
#
#   scripts/vopr.sh --seeds 500            # 500 seeds (plus the regression seeds)
#   scripts/vopr.sh --time 300             # as many seeds as fit in 300 s
#   scripts/vopr.sh --seeds 200 --time 600 # at least 200 seeds AND at least 600 s (the larger)
#
# Run `scripts/vopr.sh --help` for every option. Exit status: 0 all seeds passed, 1 a seed
# failed (or a limit was hit), 2 usage error, 130 interrupted.
#
# Environment: VOPR_BIN=/path/to/vopr uses that binary and skips `cargo build`.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/vopr.sh (--seeds N | --time S | --seeds N --time S) [options]

Builds `cargo build --release -p vsr-sim` once, then runs `vopr <seed>` for many seeds in
parallel. The regression seeds are always run first. Stops launching seeds at the first
failure, saves that seed's output to vopr-<seed>.log and prints how to reproduce it.

  --seeds N          run N new seeds (0: only the regression seeds)
  --time S           run new seeds until S seconds have passed
                     (both given: run until at least N seeds are done AND S seconds passed)
  --max-time S       hard cap in seconds: seeds still running are killed and the run FAILS
                     (default: none)
  --base SEED|random first new seed; seed i is SEED+i (default: the first 15 hex digits of
                     `git rev-parse HEAD` as a decimal, so each commit gets its own
                     reproducible seeds; outside git: from the clock). Must be < 2^62.
  --regressions FILE seeds that always run first (default: .ci/vopr-regressions.txt)
  --determinism K    run the first K new seeds twice and require identical last lines
                     (same digest) (default: 5)
  --jobs J           seeds run in parallel (default: number of CPUs)
  --ticks-max N      passed through to vopr
  --seed-timeout S   a seed running longer than S seconds fails as a hang (default: none)
  -h, --help         this text

Environment: VOPR_BIN=/path/to/vopr skips the build and uses that binary.
Times are measured from when the first seed starts (after the build).
EOF
}

die_usage() {
    echo "vopr.sh: $*" >&2
    echo "run 'scripts/vopr.sh --help' for usage" >&2
    exit 2
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Is decimal string a > b? Both the same length, up to 27 digits (u64 does not fit in bash).
digits_gt() {
    local n=$((${#1} - 9))
    if ((n <= 0)); then
        ((10#$1 > 10#$2))
        return
    fi
    local ah=$((10#${1:0:n})) bh=$((10#${2:0:n})) al=$((10#${1:n})) bl=$((10#${2:n}))
    ((ah > bh || (ah == bh && al > bl)))
}

# A decimal u64 without leading zeros, or fail. Echoes the normalised form.
normalise_u64() {
    local s=$1
    [[ $s =~ ^[0-9]+$ ]] || return 1
    s=${s#"${s%%[!0]*}"} # strip leading zeros
    [[ -n $s ]] || s=0
    ((${#s} <= 20)) || return 1
    if ((${#s} == 20)) && digits_gt "$s" 18446744073709551615; then return 1; fi
    echo "$s"
}

# ---------------------------------------------------------------------------------------------
# Arguments.

seeds_n=""
time_s=""
max_time_s=""
base=""
base_from=""
regressions_file=""
regressions_default=1
determinism_k=5
jobs=""
ticks_max=""
seed_timeout=""

need_value() { (($2 >= 2)) || die_usage "$1 needs a value"; }

while (($# > 0)); do
    opt=$1
    case $opt in
        --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    esac
    case $opt in
        -h | --help) usage; exit 0 ;;
        --seeds) need_value "$1" $#; seeds_n=$2; shift 2 ;;
        --time) need_value "$1" $#; time_s=$2; shift 2 ;;
        --max-time) need_value "$1" $#; max_time_s=$2; shift 2 ;;
        --base) need_value "$1" $#; base=$2; shift 2 ;;
        --regressions) need_value "$1" $#; regressions_file=$2; regressions_default=0; shift 2 ;;
        --determinism) need_value "$1" $#; determinism_k=$2; shift 2 ;;
        --jobs | -j) need_value "$1" $#; jobs=$2; shift 2 ;;
        --ticks-max) need_value "$1" $#; ticks_max=$2; shift 2 ;;
        --seed-timeout) need_value "$1" $#; seed_timeout=$2; shift 2 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

[[ -n $seeds_n || -n $time_s ]] || die_usage "give --seeds N and/or --time S"
for pair in "--seeds:$seeds_n" "--time:$time_s" "--max-time:$max_time_s" \
    "--determinism:$determinism_k" "--jobs:$jobs" "--ticks-max:$ticks_max" \
    "--seed-timeout:$seed_timeout"; do
    name=${pair%%:*} value=${pair#*:}
    [[ -z $value ]] || { is_uint "$value" && ((${#value} <= 12)); } ||
        die_usage "$name needs a non-negative integer, got '$value'"
done
[[ -z $jobs ]] || ((jobs >= 1)) || die_usage "--jobs must be at least 1"
if [[ -n $max_time_s && -n $time_s ]] && ((max_time_s < time_s)); then
    die_usage "--max-time ($max_time_s) is less than --time ($time_s)"
fi
[[ -z $seed_timeout ]] || ((seed_timeout > 0)) || seed_timeout=""
[[ -z $max_time_s ]] || ((max_time_s > 0)) || die_usage "--max-time must be positive"

# Resolve paths given relative to the caller before moving to the repository root.
if ((regressions_default == 0)); then
    [[ -f $regressions_file ]] || die_usage "no such regressions file: $regressions_file"
    regressions_file=$(cd "$(dirname "$regressions_file")" && pwd)/$(basename "$regressions_file")
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ((regressions_default == 1)); then
    regressions_file=.ci/vopr-regressions.txt
fi

if [[ -z $jobs ]]; then
    jobs=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
fi

# Base seed. Masked/limited to 62 bits so that base + i never overflows bash's signed 64 bits.
mask62=$(((1 << 62) - 1))
if [[ -z $base ]]; then
    if head=$(git rev-parse HEAD 2>/dev/null) && [[ $head =~ ^[0-9a-f]{15} ]]; then
        base=$((16#${head:0:15}))
        base_from="git HEAD ${head:0:12}"
    else
        base=$(($(date +%s%N 2>/dev/null || date +%s) & mask62))
        base_from="clock (not a git checkout)"
    fi
elif [[ $base == random ]]; then
    base=$((16#$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n') & mask62))
    base_from="random"
else
    b=$(normalise_u64 "$base") || die_usage "--base needs a decimal seed, got '$base'"
    if ((${#b} > 19)) || { ((${#b} == 19)) && digits_gt "$b" "$mask62"; }; then
        die_usage "--base must be below 2^62 ($((mask62 + 1))), got $b"
    fi
    base=$b
    base_from="--base"
fi

# Regression seeds: one per line, `#` starts a comment.
regressions=()
if [[ -f $regressions_file ]]; then
    lineno=0
    while IFS= read -r line || [[ -n $line ]]; do
        lineno=$((lineno + 1))
        line=${line%%#*}
        line=${line//[[:space:]]/}
        [[ -n $line ]] || continue
        s=$(normalise_u64 "$line") ||
            die_usage "$regressions_file:$lineno: not a u64 seed: '$line'"
        regressions+=("$s")
    done <"$regressions_file"
fi

# ---------------------------------------------------------------------------------------------
# Build.

if [[ -n ${VOPR_BIN:-} ]]; then
    vopr=$VOPR_BIN
    [[ -x $vopr ]] || { echo "vopr.sh: VOPR_BIN=$vopr is not executable" >&2; exit 2; }
    echo "vopr.sh: using VOPR_BIN=$vopr (no build)"
else
    echo "vopr.sh: cargo build --release -p vsr-sim"
    cargo build --release -p vsr-sim || { echo "vopr.sh: build failed" >&2; exit 1; }
    vopr=${CARGO_TARGET_DIR:-target}/release/vopr
    [[ $vopr == /* ]] || vopr=$root/$vopr
    [[ -x $vopr ]] || { echo "vopr.sh: $vopr not found after the build" >&2; exit 1; }
fi

vopr_args=()
[[ -z $ticks_max ]] || vopr_args+=(--ticks-max "$ticks_max")

# ---------------------------------------------------------------------------------------------
# Job pool. Each job runs `vopr <seed>` (twice for a determinism check) in a background
# subshell, writing <id>.{1,2}.{stdout,stderr} and <id>.rc, then its id to the `done` FIFO,
# which the main loop reads (with a timeout, to keep time limits and progress going).

work=$(mktemp -d "${TMPDIR:-/tmp}/vopr.XXXXXX")
mkfifo "$work/done"
exec {done_fd}<>"$work/done" # read-write: never blocks on open, never sees EOF
# Indexed by job id (ascending), so jobs are reaped and reported in launch order.
declare -a job_pid=() job_seed=() job_kind=() job_det=() job_start=()

now_us() { # sets $now (microseconds since the epoch) without forking
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        now=${EPOCHREALTIME/[.,]/}
    else
        now=$(($(date +%s%N) / 1000))
    fi
}

kill_jobs() {
    local id
    for id in "${!job_pid[@]}"; do kill -TERM "${job_pid[$id]}" 2>/dev/null || true; done
    for id in "${!job_pid[@]}"; do wait "${job_pid[$id]}" 2>/dev/null || true; done
}

# shellcheck disable=SC2329 # invoked by the traps below
cleanup() { rm -rf "$work"; }
# shellcheck disable=SC2329
on_signal() { # exit status
    trap - INT TERM
    echo >&2
    echo "vopr.sh: interrupted; stopping ${#job_pid[@]} running seed(s)" >&2
    kill_jobs
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

run_job() { # id seed det
    local id=$1 seed=$2 det=$3 child="" rc1 rc2=""
    set +e
    trap '[[ -n $child ]] && kill -TERM "$child" 2>/dev/null; exit 143' TERM
    local cmd=("$vopr" "$seed" "${vopr_args[@]}")
    if [[ -n $seed_timeout ]]; then
        cmd=(timeout --kill-after=10 "$seed_timeout" "${cmd[@]}")
    fi
    "${cmd[@]}" >"$work/$id.1.stdout" 2>"$work/$id.1.stderr" </dev/null &
    child=$!
    wait "$child"
    rc1=$?
    if ((det)) && ((rc1 == 0)); then
        "${cmd[@]}" >"$work/$id.2.stdout" 2>"$work/$id.2.stderr" </dev/null &
        child=$!
        wait "$child"
        rc2=$?
    fi
    echo "$rc1 $rc2" >"$work/$id.rc"
    echo "$id" >&"$done_fd"
}

next_id=0
launch() { # seed kind det
    local id=$next_id
    next_id=$((next_id + 1))
    run_job "$id" "$1" "$3" &
    job_pid[id]=$!
    job_seed[id]=$1
    job_kind[id]=$2
    job_det[id]=$3
    job_start[id]=$now
}

last_line() { # file
    local line=""
    [[ -s $1 ]] && line=$(tail -n 1 "$1")
    printf '%s' "${line%$'\r'}"
}

# Check one run against the contract. Sets $reason (empty when the run passed).
check_run() { # seed rc file
    local seed=$1 rc=$2 line
    line=$(last_line "$3")
    reason=""
    if [[ -n $seed_timeout ]] && ((rc == 124 || rc == 137)); then
        reason="hang: still running after --seed-timeout ${seed_timeout}s"
    elif ((rc == 2)); then
        reason="vopr exited 2: usage error (arguments: $seed${vopr_args[*]:+ ${vopr_args[*]}})"
    elif ((rc != 0)); then
        reason="vopr exited $rc"
    elif [[ ! $line =~ ^vopr\ seed=${seed}\ .*\ result=ok\ digest=[0-9a-fA-F]+$ ]]; then
        if [[ $line == *" result=FAIL"* ]]; then
            reason="result=FAIL but vopr exited 0"
        else
            reason="last line of stdout does not match 'vopr seed=$seed ... result=ok digest=<hex>'"
        fi
    fi
}

failures=0
failed_seeds=()
unfinished_seeds=()

report_failure() { # id reason
    local id=$1 why=$2 seed=${job_seed[$1]} log run label line
    failures=$((failures + 1))
    failed_seeds+=("$seed")
    log=vopr-$seed.log
    {
        for run in 1 2; do
            [[ -e $work/$id.$run.stdout ]] || continue
            echo "### run $run: $vopr $seed${vopr_args[*]:+ ${vopr_args[*]}}"
            echo "### stdout"
            cat "$work/$id.$run.stdout"
            echo "### stderr"
            cat "$work/$id.$run.stderr"
        done
    } >"$log"
    echo
    echo "FAIL seed=$seed (${job_kind[$id]}): $why"
    for run in 1 2; do
        [[ -e $work/$id.$run.stdout ]] || continue
        label="last line"
        [[ -e $work/$id.2.stdout ]] && label+=" (run $run)"
        line=$(last_line "$work/$id.$run.stdout")
        if [[ -z $line ]]; then
            echo "  $label: (no output on stdout)"
        elif [[ $line != "vopr seed="*" result="* ]]; then
            echo "  $label: (no result line; the run ended early) $line"
        else
            echo "  $label: $line"
        fi
    done
    if grep -q 'panicked at' "$work/$id.1.stderr" 2>/dev/null; then
        echo "  panic:"
        awk '/panicked at/ { p = 1 } /^stack backtrace:|^note: / { if (p) exit }
             p { print "    " $0; if (++n == 6) exit }' "$work/$id.1.stderr"
    elif [[ -s $work/$id.1.stderr ]]; then
        echo "  stderr (tail):"
        tail -n 10 "$work/$id.1.stderr" | sed 's/^/    /'
    fi
    echo "  full output: $log"
    echo "  reproduce:"
    echo "    cargo run --release -p vsr-sim --bin vopr -- $seed${vopr_args[*]:+ ${vopr_args[*]}}"
    echo "    cargo run --release -p vsr-sim --bin vopr -- $seed${vopr_args[*]:+ ${vopr_args[*]}} --log=debug"
    echo
}

done_total=0 done_new=0 passed=0 det_checked=0

reap() { # id
    local id=$1 seed=${job_seed[$1]} rc1 rc2 line1 line2
    wait "${job_pid[$id]}" 2>/dev/null || true
    read -r rc1 rc2 <"$work/$id.rc" || true
    check_run "$seed" "${rc1:-1}" "$work/$id.1.stdout"
    if [[ -z $reason && ${job_det[$id]} == 1 ]]; then
        check_run "$seed" "${rc2:-1}" "$work/$id.2.stdout"
        if [[ -n $reason ]]; then
            reason="determinism: the second run failed ($reason)"
        else
            line1=$(last_line "$work/$id.1.stdout")
            line2=$(last_line "$work/$id.2.stdout")
            [[ $line1 == "$line2" ]] || reason="determinism: two runs of the same seed differ"
            det_checked=$((det_checked + 1))
        fi
    fi
    done_total=$((done_total + 1))
    [[ ${job_kind[$id]} == regression ]] || done_new=$((done_new + 1))
    if [[ -z $reason ]]; then
        passed=$((passed + 1))
        grep -E '^[[:space:]]*(faults|stats|checkpoints|durability|corrupted|cluster_time|view_log|liveness):' "$work/$id.1.stdout" >>"$work/counters" || true
    else
        report_failure "$id" "$reason"
    fi
    rm -f "$work/$id".*
    unset "job_pid[$id]" "job_seed[$id]" "job_kind[$id]" "job_det[$id]" "job_start[$id]"
}

rate() { # seeds elapsed_us -> "12.3"
    local tenths=0
    (($2 > 0)) && tenths=$(($1 * 600000000 / $2))
    printf '%d.%d' $((tenths / 10)) $((tenths % 10))
}

progress() {
    local elapsed=$((now - start))
    printf '[%6ds] %d seeds done (%d passed, %d failed), %d running, %s seeds/min\n' \
        $((elapsed / 1000000)) "$done_total" "$passed" "$failures" "${#job_pid[@]}" \
        "$(rate "$done_total" "$elapsed")"
}

# ---------------------------------------------------------------------------------------------
# Main loop.

limits=()
[[ -z $seeds_n ]] || limits+=("at least $seeds_n new seeds")
[[ -z $time_s ]] || limits+=("at least ${time_s}s")
[[ -z $max_time_s ]] || limits+=("hard cap ${max_time_s}s")
[[ -z $seed_timeout ]] || limits+=("${seed_timeout}s per seed")
echo "vopr.sh: base seed $base (from $base_from); new seed i = $base + i"
echo "vopr.sh: ${#regressions[@]} regression seed(s) from $regressions_file;" \
    "determinism check on the first $determinism_k new seed(s); $jobs job(s)"
limits_text=$(IFS=,; echo "${limits[*]}")
echo "vopr.sh: limits: ${limits_text//,/, }"
repro="scripts/vopr.sh --base $base"
[[ -z $seeds_n ]] || repro+=" --seeds $seeds_n"
[[ -z $time_s ]] || repro+=" --time $time_s"
[[ -z $ticks_max ]] || repro+=" --ticks-max $ticks_max"
echo "vopr.sh: rerun these seeds with: $repro"

now_us
start=$now
last_progress_time=$now
last_progress_done=0
launched_new=0
next_regression=0
stop=""
hit_max_time=0

want_more_new() {
    [[ -z $stop ]] || return 1
    local elapsed=$((now - start)) more_seeds=1 more_time=1
    if [[ -n $seeds_n ]]; then ((launched_new < seeds_n)) || more_seeds=0; fi
    if [[ -n $time_s ]]; then ((elapsed < time_s * 1000000)) || more_time=0; fi
    if [[ -n $seeds_n && -n $time_s ]]; then
        ((more_seeds || more_time))
    elif [[ -n $seeds_n ]]; then
        ((more_seeds))
    else
        ((more_time))
    fi
}

while :; do
    now_us
    ((failures == 0)) || stop=failure

    if [[ -n $max_time_s ]] && ((now - start >= max_time_s * 1000000)); then
        # Seeds that finished just now are reaped, not counted as killed.
        while read -r -t 0.01 id <&"$done_fd"; do
            [[ -z ${job_pid[$id]:-} ]] || reap "$id"
        done
        if ((${#job_pid[@]} > 0)) ||
            { [[ -z $stop ]] && { ((next_regression < ${#regressions[@]})) || want_more_new; }; }; then
            hit_max_time=1
            stop=${stop:-max-time}
            if ((${#job_pid[@]} > 0)); then
                echo
                echo "vopr.sh: --max-time ${max_time_s}s reached; killing ${#job_pid[@]} running seed(s):"
                for id in "${!job_pid[@]}"; do
                    unfinished_seeds+=("${job_seed[$id]}")
                    echo "  seed ${job_seed[$id]}, running for $(((now - job_start[id]) / 1000000))s:" \
                        "cargo run --release -p vsr-sim --bin vopr -- ${job_seed[$id]}${vopr_args[*]:+ ${vopr_args[*]}}"
                done
                kill_jobs
                job_pid=() job_seed=() job_kind=() job_det=() job_start=()
            fi
        fi
        break
    fi

    while ((${#job_pid[@]} < jobs)) && [[ -z $stop ]]; do
        if ((next_regression < ${#regressions[@]})); then
            launch "${regressions[$next_regression]}" regression 0
            next_regression=$((next_regression + 1))
        elif want_more_new; then
            det=0
            ((launched_new < determinism_k)) && det=1
            launch "$((base + launched_new))" "new" "$det"
            launched_new=$((launched_new + 1))
        else
            break
        fi
    done

    ((${#job_pid[@]} > 0)) || break

    if ((done_total - last_progress_done >= 20 || now - last_progress_time >= 10000000)); then
        progress
        last_progress_time=$now
        last_progress_done=$done_total
    fi
    if read -r -t 1 id <&"$done_fd" && [[ -n ${job_pid[$id]:-} ]]; then
        now_us
        reap "$id"
    fi
done
now_us

# ---------------------------------------------------------------------------------------------
# Summary.

elapsed=$((now - start))
echo
echo "vopr.sh: summary"
printf '  seeds run:    %d (%d regression, %d new from base %s)\n' \
    "$done_total" "$((done_total - done_new))" "$done_new" "$base"
printf '  passed:       %d\n' "$passed"
printf '  failed:       %d%s\n' "$failures" "${failed_seeds[*]:+ (seeds: ${failed_seeds[*]})}"
((${#unfinished_seeds[@]} == 0)) ||
    printf '  killed:       %d at --max-time (seeds: %s)\n' "${#unfinished_seeds[@]}" "${unfinished_seeds[*]}"
printf '  determinism:  %d seed(s) run twice with identical results\n' "$det_checked"
printf '  elapsed:      %ds, %s seeds/min\n' $((elapsed / 1000000)) "$(rate "$done_total" "$elapsed")"
if [[ -s $work/counters ]]; then
    echo "  counters (summed over passed seeds; (max): the largest in one seed):"
    awk '
        {
            sub(/^[[:space:]]+/, "")
            prefix = $1
            sub(/:$/, "", prefix)
            for (i = 2; i <= NF; i++) {
                token = $i
                sub(/[,;]$/, "", token)
                if (token !~ /^[^=]+=-?[0-9]+$/) continue
                eq = index(token, "=")
                key = prefix "." substr(token, 1, eq - 1)
                value = substr(token, eq + 1) + 0
                is_max = (key ~ /_max|_ticks$/)
                if (!(key in sum)) {
                    order[++n] = key
                    if (length(key) > width) width = length(key)
                    sum[key] = value
                    maxed[key] = is_max
                } else if (is_max) {
                    if (value > sum[key]) sum[key] = value
                } else {
                    sum[key] += value
                }
            }
        }
        END {
            for (i = 1; i <= n; i++)
                printf "    %-" width + 6 "s %.0f\n", order[i] (maxed[order[i]] ? " (max)" : ""), sum[order[i]]
        }
    ' "$work/counters"
fi

status=0
if ((failures > 0)); then
    echo "vopr.sh: FAILED: $failures seed(s) failed; see the reproduction commands above"
    status=1
fi
if ((hit_max_time)); then
    if [[ -n $seeds_n ]] && ((done_new < seeds_n)); then
        echo "vopr.sh: FAILED: --max-time ${max_time_s}s reached after only $done_new of the" \
            "required $seeds_n new seeds (the simulator is too slow for this budget, or hangs)"
    else
        echo "vopr.sh: FAILED: --max-time ${max_time_s}s reached with seeds still running" \
            "(possible hang; see the seeds above)"
    fi
    status=1
fi
((status != 0)) || echo "vopr.sh: ok: all $done_total seeds passed"
exit "$status"
