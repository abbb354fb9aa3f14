#!/usr/bin/env bash
# ditail's attention kernel beside PyTorch's SDPA on the same machine, in one go; prints
# both and the time ratios ditail / torch per layer.
#
#   scripts/bench_attention.sh                       # wgpu f16 vs torch cuda fp16 (a GPU)
#   BACKEND=wgpu DTYPE=f32 TORCH_DEVICE=cpu TOKENS=1024,256 RUNS=1 scripts/bench_attention.sh
#
# On a machine without a GPU, wgpu runs on Mesa's lavapipe (a CPU rasteriser): those
# figures say the kernel works, not how fast it is on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${BACKEND:-wgpu}
DTYPE=${DTYPE:-f16}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
RUNS=${RUNS:-5}
TOKENS=${TOKENS:-4096,1024,256,64}
PROFILE=${PROFILE:-release}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench-out}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE
pydtype=$([ "$DTYPE" = f16 ] && echo fp16 || echo fp32)
echo "== ditail ($BACKEND, $DTYPE, profile $PROFILE)"
cargo run --quiet --profile "$PROFILE" --example bench_attention -- --backend "$BACKEND" \
  --dtype "$DTYPE" --runs "$RUNS" --tokens "$TOKENS" ${SKIP_BURN:+--skip-burn} --json "$OUT/attention-ditail.json"
echo "== torch ($TORCH_DEVICE, $pydtype)"
"$PY" scripts/bench_attention.py --device "$TORCH_DEVICE" --dtype "$pydtype" --runs "$RUNS" \
  --threads "$THREADS" --tokens "$TOKENS" --json "$OUT/attention-torch.json"
echo "== ditail / torch sdpa (time)"
"$PY" - "$OUT/attention-ditail.json" "$OUT/attention-torch.json" <<'PYEOF'
import json, sys
ours = json.load(open(sys.argv[1]))["rows"]
torch = {r["layer"]: r for r in json.load(open(sys.argv[2]))["rows"]}
for r in ours:
    t = torch.get(r["layer"])
    if t:
        print(f"{r['layer']:>26}  {r['method']:<18} {r['seconds'] / t['seconds']:>7.2f}x")
PYEOF
