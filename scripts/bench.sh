#!/usr/bin/env bash
# ditail against diffusers on the same machine, the same weights and the same number of
# threads, in one go; prints both and the ratios ditail / diffusers.
#
#   scripts/bench.sh                      # CPU, fixtures-full/model, all cores
#   WEIGHTS=dir THREADS=2 RUNS=3 scripts/bench.sh
#   BACKEND=cuda DTYPE=f16 scripts/bench.sh   # GPU (diffusers on cuda, fp16)
#   WEIGHTS=fixtures-full/sdxl/model ONLY=unet,clip UNET_SIDES=64 BATCHES=1 scripts/bench.sh   # SDXL
#   ROUNDS=3 THREADS=2 RUNS=3 scripts/bench.sh   # both sides alternately, 3 times each
#
# ROUNDS (default 1) runs the two sides alternately that many times (round r writes
# $OUT/r<r>/) and compares the runs pooled over the rounds (scripts/bench_compare.py): on
# a virtual machine whose host takes cycles in bursts, one side of a single round can meet
# a slow few minutes the other does not (the development VM's ratios moved by up to 0.4
# between rounds of one hour).
#
# UNET_SIDES / BATCHES (comma lists; defaults 32,64 and 1,3) choose the U-Net rows of both
# sides. SDXL folders are detected by both; the reference skips the "ditail" row for SDXL.
#
# Needs the fixture script's full-size weights (`.venv/bin/python scripts/make_fixtures.py
# --full-size fixtures-full`, or MAKE_WEIGHTS=1 to let the reference script write random
# SD1.5 weights) and the Python environment of scripts/README.md. PROFILE=dev reuses the
# test build (dependencies are optimised there too) instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
WEIGHTS=${WEIGHTS:-fixtures-full/model}
THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-3}
BACKEND=${BACKEND:-cpu}
DTYPE=${DTYPE:-$([ "$BACKEND" = cpu ] && echo f32 || echo f16)}
PROFILE=${PROFILE:-release}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench-out}
ONLY=${ONLY:-}
mkdir -p "$OUT"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE
device=$([ "$BACKEND" = cpu ] && echo cpu || echo cuda)
pydtype=$([ "$DTYPE" = f16 ] && echo fp16 || echo fp32)
only=()
[ -n "$ONLY" ] && only=(--only "$ONLY")
unet_rows=()
[ -n "${UNET_SIDES:-}" ] && unet_rows+=(--unet-sides "$UNET_SIDES")
[ -n "${BATCHES:-}" ] && unet_rows+=(--batches "$BATCHES")
if [ -n "${MAKE_WEIGHTS:-}" ]; then
  "$PY" scripts/bench_reference.py --weights "$WEIGHTS" --make-weights --only none --device cpu
fi
# The dev profile builds the networks crate with debug assertions (for the tests), which
# turn on the standard library's check of every pointer offset in the CPU kernels' unsafe
# loops (~20% of the 512-bit GEMM's time, measured with examples/bench_gemm in
# crates/ditail-models); a release build has none, so the benchmark's dev build has none
# either.
config=()
[ "$PROFILE" = dev ] && config=(--config 'profile.dev.package.ditail-models.debug-assertions=false')
ROUNDS=${ROUNDS:-1}
ours=() refs=()
for r in $(seq 1 "$ROUNDS"); do
  dir=$OUT tag=
  if [ "$ROUNDS" -gt 1 ]; then dir=$OUT/r$r tag=", round $r of $ROUNDS"; mkdir -p "$dir"; fi
  echo "== ditail ($BACKEND, $DTYPE, $THREADS threads, profile $PROFILE)$tag"
  cargo run --quiet --profile "$PROFILE" "${config[@]}" --example bench -- --weights "$WEIGHTS" --backend "$BACKEND" \
    --dtype "$DTYPE" --runs "$RUNS" "${only[@]}" "${unet_rows[@]}" --json "$dir/ditail.json"
  echo "== diffusers ($device, $pydtype, $THREADS threads)$tag"
  "$PY" scripts/bench_reference.py --weights "$WEIGHTS" --device "$device" --dtype "$pydtype" \
    --threads "$THREADS" --runs "$RUNS" "${only[@]}" "${unet_rows[@]}" --json "$dir/reference.json"
  ours+=("$dir/ditail.json") refs+=("$dir/reference.json")
done
echo "== ditail / diffusers"
"$PY" scripts/bench_compare.py "$(IFS=,; echo "${ours[*]}")" "$(IFS=,; echo "${refs[*]}")"
