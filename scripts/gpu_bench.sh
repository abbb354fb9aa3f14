#!/usr/bin/env bash
# The one-call GPU benchmark (issues 7 and 26): ditail against diffusers (fp16, CUDA) on an
# NVIDIA machine, SD1.5-size random weights, f16: U-Net forwards at 64x64 latents batch 1
# and 3, VAE decode at 512 px, a whole 512 px Ditail run of 50 + 50 steps, peak VRAM, and
# the first run's extra time (kernel compilation and autotuning into a fresh cache), on
# every compiler path the machine has: wgpu with WGSL (the default build), wgpu with SPIR-V
# on Vulkan (`--features vulkan`, never run before: lavapipe cannot compile it), CUDA
# (where the prepare machine could build it); plus kernel dispatch counts per U-Net step
# and VAE decode (`examples/gpu_counts.rs`) and the attention layers against torch's SDPA.
#
# The device machine has no network and no Rust toolchain, so the work is split:
#   here:   scripts/gpu_bench.sh prepare   builds the binaries (release) into .gpu/,
#           downloads the diffusers wheel and the Vulkan loader packages (see
#           the device tool's README), ~45 MB in all (binaries gzipped)
#   there:  device run with carry [".gpu"], command `scripts/gpu_bench.sh run`, timeout
#           480 s (about 7 minutes on an H100: 2 min of random weights, then the benches)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >>.git/info/exclude
  mkdir -p .gpu/whl .gpu/deb
  # burn 0.22.1's `cuda` feature builds cubecl-llvm, whose build script (tracel-llvm-bundler)
  # downloads an LLVM bundle from outside crates.io: this needs a machine with internet
  # access (it fails on a registries-only machine). Without it, wgpu alone is benchmarked.
  ex=(--example bench --example bench_attention --example gpu_counts)
  if ! cargo build --release --features cuda "${ex[@]}"; then
    echo "warning: the cuda build failed (see above); building wgpu only" >&2
    cargo build --release "${ex[@]}"
  fi
  # The SPIR-V path: the same benchmark built with the `vulkan` feature (its own target
  # folder, so the two builds do not undo each other).
  cargo build --release --features vulkan --target-dir target/spirv \
    --example bench --example gpu_counts
  # gzipped: the device tool carries at most 64 MiB (the binaries are ~55 MB stripped each,
  # ~15 MB gzipped).
  for e in bench bench_attention gpu_counts; do
    strip -o .gpu/$e target/release/examples/$e && gzip -9 -f .gpu/$e
  done
  for e in bench gpu_counts; do
    strip -o .gpu/$e-spirv target/spirv/release/examples/$e && gzip -9 -f .gpu/$e-spirv
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
  # The device tool brings back at most 8 files: everything goes to $R, then one archive
  # and the summaries to $OUT.
  R=/tmp/gpu-results
  mkdir -p $R
  trap 'tar czf "$OUT/results.tgz" -C $R . && cp $R/vram.txt $R/ratios-*.md $R/counts.log "$OUT"/ 2>/dev/null' EXIT
  for f in .gpu/deb/*.deb; do dpkg -x "$f" /; done
  bin=/tmp/ditail-bin
  mkdir -p $bin
  for e in bench bench_attention gpu_counts bench-spirv gpu_counts-spirv; do
    gunzip -c .gpu/$e.gz >$bin/$e && chmod +x $bin/$e
  done
  ldconfig
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$R/gpu.txt"
  W=/tmp/sd15-random
  python3 scripts/bench_reference.py --weights $W --make-weights --only none --device cpu \
    --threads 16 2>&1 | tail -1
  common=(--weights $W --runs 5 --ditail-size 512 --ditail-steps 50 --ditail-runs 3 --unet-sides 64)
  # Each ditail binary starts from an empty kernel-tuning cache: its log's "warm-up run"
  # lines minus the timed runs are the first run's compilation and autotuning.
  export DITAIL_GPU_CACHE=/tmp/ditail-gpu-cache
  # Peak VRAM of a whole process, sampled every 50 ms (burn has no allocator statistics
  # across backends; torch's own peak is in reference.json too).
  vram() {
    local name=$1
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"/tmp/vram-$name" &
    local sampler=$!
    "$@" 2>&1 | tee "$R/$name.log"
    kill $sampler
    echo "$name peak VRAM (process lifetime, nvidia-smi): $(sort -n "/tmp/vram-$name" | tail -1) MiB" | tee -a "$R/vram.txt"
  }
  set +e
  # (fails fast with "does not include the cuda backend" if prepare built wgpu only)
  ( $bin/gpu_counts --backend wgpu --dtype f16 --side 64 --batch 3 --json "$R/counts-wgsl.json"
    DITAIL_FUSION=off $bin/gpu_counts --backend wgpu --dtype f16 --side 64 --batch 3 \
      --json "$R/counts-wgsl-unfused.json"
    $bin/gpu_counts-spirv --backend wgpu --dtype f16 --side 64 --batch 3 --json "$R/counts-spirv.json"
  ) 2>&1 | tee "$R/counts.log"
  rm -rf "$DITAIL_GPU_CACHE"
  vram ditail-cuda $bin/bench --backend cuda --dtype f16 "${common[@]}" --json "$R/ditail-cuda.json"
  rm -rf "$DITAIL_GPU_CACHE"
  vram ditail-wgpu $bin/bench --backend wgpu --dtype f16 "${common[@]}" --json "$R/ditail-wgpu.json"
  rm -rf "$DITAIL_GPU_CACHE"
  vram ditail-spirv $bin/bench-spirv --backend wgpu --dtype f16 "${common[@]}" \
    --json "$R/ditail-spirv.json"
  vram reference python3 scripts/bench_reference.py --device cuda --dtype fp16 "${common[@]}" \
    --json "$R/reference.json"
  # The attention layers (Ditail's injection, SD1.5's sizes) against torch's SDPA.
  vram attention-wgpu $bin/bench_attention --backend wgpu --dtype f16 --runs 20 \
    --json "$R/attention-ditail.json"
  python3 scripts/bench_attention.py --device cuda --dtype fp16 --runs 20 \
    --json "$R/attention-torch.json" | tee "$R/attention-torch.log"
  for b in cuda wgpu spirv; do
    [ -f "$R/ditail-$b.json" ] && python3 scripts/bench_compare.py "$R/ditail-$b.json" "$R/reference.json" --markdown | tee "$R/ratios-$b.md"
  done
  ;;
*)
  echo "usage: scripts/gpu_bench.sh prepare|run" >&2
  exit 2
  ;;
esac
