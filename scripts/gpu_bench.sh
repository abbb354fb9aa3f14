#!/usr/bin/env bash
# The one-call GPU benchmark (issue 7): ditail (CUDA and wgpu/Vulkan, f16) against
# diffusers (fp16, CUDA) on an NVIDIA machine, SD1.5-size random weights, 512x512, a whole
# Ditail run of 50 + 50 steps, plus the per-network figures and the attention kernel
# against torch's SDPA (issue 6); times, ratios and peak VRAM go to $OUT.
#
# The device machine has no network and no Rust toolchain, so the work is split:
#   here:   scripts/gpu_bench.sh prepare   builds `bench` (release, wgpu + cuda) into .gpu/,
#           downloads the diffusers wheel and the Vulkan loader packages (see
#           /work/.library/device/README.md), ~35 MB in all (binaries gzipped)
#   there:  device run with carry [".gpu"], command `scripts/gpu_bench.sh run`
#           (about 6 minutes on an H100/H200: 2 min of random weights, then the benches)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >>.git/info/exclude
  mkdir -p .gpu/whl .gpu/deb
  # burn 0.22.1's `cuda` feature builds cubecl-llvm, whose build script (tracel-llvm-bundler)
  # downloads an LLVM bundle from outside crates.io: this needs a machine with internet
  # access (it fails on a registries-only machine). Without it, wgpu alone is benchmarked.
  if ! cargo build --release --features cuda --example bench --example bench_attention; then
    echo "warning: the cuda build failed (see above); building wgpu only" >&2
    cargo build --release --example bench --example bench_attention
  fi
  # gzipped: the device tool carries at most 64 MiB (the two binaries are ~110 MB stripped,
  # ~29 MB gzipped).
  for e in bench bench_attention; do
    strip -o .gpu/$e target/release/examples/$e && gzip -9 -f .gpu/$e
  done
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d .gpu/whl diffusers==0.42.1
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd .gpu/deb && apt-get $o download libvulkan1)
  du -sh .gpu
  ;;
run)
  : "${OUT:?set by the device tool}"
  for f in .gpu/deb/*.deb; do dpkg -x "$f" /; done
  bin=/tmp/ditail-bin
  mkdir -p $bin
  for e in bench bench_attention; do gunzip -c .gpu/$e.gz >$bin/$e && chmod +x $bin/$e; done
  ldconfig
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  W=/tmp/sd15-random
  python3 scripts/bench_reference.py --weights $W --make-weights --only none --device cpu \
    --threads 16 2>&1 | tail -1
  common=(--weights $W --runs 5 --ditail-size 512 --ditail-steps 50 --ditail-runs 3)
  # Peak VRAM of a whole process, sampled every 50 ms (burn has no allocator statistics
  # across backends; torch's own peak is in reference.json too).
  vram() {
    local name=$1
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"/tmp/vram-$name" &
    local sampler=$!
    "$@" 2>&1 | tee "$OUT/$name.log"
    kill $sampler
    echo "$name peak VRAM (process lifetime, nvidia-smi): $(sort -n "/tmp/vram-$name" | tail -1) MiB" | tee -a "$OUT/vram.txt"
  }
  set +e
  # (fails fast with "does not include the cuda backend" if prepare built wgpu only)
  vram ditail-cuda $bin/bench --backend cuda --dtype f16 "${common[@]}" --json "$OUT/ditail-cuda.json"
  vram ditail-wgpu $bin/bench --backend wgpu --dtype f16 "${common[@]}" --json "$OUT/ditail-wgpu.json"
  vram reference python3 scripts/bench_reference.py --device cuda --dtype fp16 "${common[@]}" \
    --json "$OUT/reference.json"
  # The U-Net on wgpu without the fused attention kernel, to see what the kernel buys.
  DITAIL_ATTENTION=reference vram ditail-wgpu-no-kernel $bin/bench --backend wgpu --dtype f16 \
    --weights $W --runs 5 --only unet --unet-sides 64 --json "$OUT/ditail-wgpu-no-kernel.json"
  # The fused attention kernel (issue 6) at SD1.5's layer sizes against torch's SDPA.
  vram attention-wgpu $bin/bench_attention --backend wgpu --dtype f16 --runs 20 \
    --json "$OUT/attention-ditail.json"
  python3 scripts/bench_attention.py --device cuda --dtype fp16 --runs 20 \
    --json "$OUT/attention-torch.json" | tee "$OUT/attention-torch.log"
  for b in cuda wgpu; do
    [ -f "$OUT/ditail-$b.json" ] && python3 scripts/bench_compare.py "$OUT/ditail-$b.json" "$OUT/reference.json" --markdown | tee "$OUT/ratios-$b.md"
  done
  ;;
*)
  echo "usage: scripts/gpu_bench.sh prepare|run" >&2
  exit 2
  ;;
esac
