#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for a set time and prints, per target, the executions, the
# crashes, timeouts and out-of-memory inputs found (saved in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Environment:
#   FUZZ_TARGETS   the targets to run, space-separated (default: all, as `cargo fuzz list`)
#   FUZZ_MERGE=1   afterwards, merge what the run found into the committed corpus
#                  (fuzz/corpus/<target>/), minimised (libFuzzer's -merge=1, edges only)
#   FUZZ_ARGS      more libFuzzer flags, e.g. "-max_len=65536"
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Runs one
# target at a time, one job each, under `nice -n 19`. Every run starts from the committed
# corpus and writes new inputs to fuzz/work/<target>/ (ignored by git). The instrumented
# build goes to fuzz/target/. Built without a sanitizer (panics, aborts, timeouts and the
# RSS limit are what is looked for in safe Rust; a sanitizer halves the speed): set
# FUZZ_SANITIZER=address to add AddressSanitizer.
#
# Exit status: 0 when no target found anything, 1 otherwise, 2 if the build failed.
set -euo pipefail

cd "$(dirname "$0")/.."
secs=${1:-60}
sanitizer=${FUZZ_SANITIZER:-none}
build=(--sanitizer "$sanitizer" --codegen-units 16)
# Slow inputs (a few hundred bytes can decode to a 20-megapixel image) get less of the
# fuzzer's attention, so that a run's executions are not spent on a few of them.
libfuzzer=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -entropic_scale_per_exec_time=1)
# shellcheck disable=SC2206
extra=(${FUZZ_ARGS:-})

cd fuzz
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "building ${#targets[@]} targets (fuzz/target/) ..."
mkdir -p work
if ! nice -n 19 cargo +nightly fuzz build "${build[@]}" >work/build.log 2>&1; then
    tail -n 40 work/build.log
    exit 2
fi

scratch_base=/dev/shm
[[ -d $scratch_base && -w $scratch_base ]] || scratch_base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$scratch_base/ditail-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The binaries are copied aside and run directly (not through `cargo fuzz run`, which
# rebuilds first): a long run then fuzzes the code as it was at the start, whatever is
# edited or rebuilt meanwhile.
bins=$scratch/bin
mkdir -p "$bins"
for t in "${targets[@]}"; do
    cp "target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release/$t" "$bins/$t"
done

count() { find "$1" -maxdepth 1 -type f -name "$2-*" 2>/dev/null | wc -l; }

found=0
rows=()
for t in "${targets[@]}"; do
    work=work/$t
    artifacts=artifacts/$t
    log=work/$t.log
    mkdir -p "$work" "$artifacts" "corpus/$t"
    before=()
    for kind in crash timeout oom leak; do before+=("$(count "$artifacts" "$kind")"); done
    echo "fuzzing $t for ${secs}s (log: fuzz/$log) ..."
    start=$(date +%s)
    rc=0
    DITAIL_FUZZ_SCRATCH=$scratch nice -n 19 "$bins/$t" "$work" "corpus/$t" \
        "${libfuzzer[@]}" -max_total_time="$secs" -artifact_prefix="$artifacts/" "${extra[@]}" \
        >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - start))
    # Final stats when the run ends on its own; else the last status line.
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    if [[ -z $execs ]]; then
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
    fi
    execs=${execs:-0}
    new=()
    i=0
    for kind in crash timeout oom leak; do
        new+=($(($(count "$artifacts" "$kind") - before[i])))
        i=$((i + 1))
    done
    crashes=$((new[0] + new[3]))
    if ((rc != 0 && crashes + new[1] + new[2] == 0)); then
        # An exit libFuzzer did not attribute (killed, failed to start): count it as a crash.
        crashes=1
        echo "  $t exited with status $rc; see fuzz/$log"
    fi
    if ((crashes + new[1] + new[2] > 0)); then
        found=1
        echo "  $t: findings in fuzz/$artifacts/; last lines of the log:"
        tail -n 25 "$log" | sed 's/^/    /'
    fi
    rows+=("$(printf '%-18s %7ss %12s %9s %8s %9s %5s %7s' "$t" "$took" "$execs" \
        "$((execs / (took > 0 ? took : 1)))" "$crashes" "${new[1]}" "${new[2]}" \
        "$(find "$work" "corpus/$t" -type f | wc -l)")")
    if [[ ${FUZZ_MERGE:-0} == 1 ]]; then
        # Minimised (libFuzzer's merge, as `cargo fuzz cmin` runs it) to the inputs that cover
        # every edge, hit counts aside, so that the committed corpus stays small;
        # work/<target>/ keeps everything for the next run.
        merged=$scratch/merged-$t
        mkdir -p "$merged"
        if DITAIL_FUZZ_SCRATCH=$scratch nice -n 19 "$bins/$t" -merge=1 -use_counters=0 \
            -rss_limit_mb=2048 -timeout=60 -artifact_prefix="$artifacts/" \
            "$merged" "corpus/$t" "$work" >"work/$t.cmin.log" 2>&1; then
            find "corpus/$t" -type f -delete
            cp "$merged"/* "corpus/$t/"
        else
            echo "  merging the corpus of $t failed: see fuzz/work/$t.cmin.log"
        fi
    fi
done

echo
printf '%-18s %8s %12s %9s %8s %9s %5s %7s\n' target time executions exec/s crashes timeouts OOMs corpus
printf '%s\n' "${rows[@]}"
exit "$found"
