#!/usr/bin/env bash
# The GPU benchmark (issues 7 and 26): ditail against diffusers (fp16, CUDA) on an NVIDIA
# machine, SD1.5-size random weights, f16: U-Net forwards at 64x64 latents batch 1 and 3,
# VAE decode at 512 px, a whole 512 px Ditail run of 50 + 50 steps, peak VRAM, and the
# first run's extra time (kernel compilation and autotuning into a fresh cache), on every
# compiler path: wgpu with WGSL (the default build), wgpu with SPIR-V on Vulkan
# (`--features vulkan`, never on a GPU yet: tested on lavapipe through a shim), CUDA (where the
# prepare machine could build it); plus kernel dispatch counts and each kernel's device
# time per U-Net step and VAE decode (`examples/gpu_counts.rs --profile`: where the time
# goes, and how long the GPU waits between kernels) and the attention layers against
# torch's SDPA.
#
# The device machine has no network and no Rust toolchain, and a call carries the
# repository's tracked files (43 MB) plus at most 64 MiB in all. So:
#   here:   scripts/gpu_bench.sh prepare   builds `examples/gpu_tools.rs` (bench,
#           bench_attention and gpu_counts in one binary, ~100 MB stripped, ~18 MB with xz)
#           twice, the default build into .gpu/ and the SPIR-V build into .gpu-spirv/, with
#           diffusers (xz, 1.8 MB) and the Vulkan loader (see the device tool's README);
#           it checks that each call's tree fits.
#   there:  two calls on one warm machine (the SPIR-V call's ratios use the first call's
#           reference on the same card):
#           1. carry [".gpu"],       `scripts/gpu_bench.sh run`        timeout 480 s
#              (about 7 minutes on an H100: 2 min of random weights, then the benches;
#              the step's profiles with other settings last, as far as the time allows)
#           2. carry [".gpu-spirv"], `scripts/gpu_bench.sh run-spirv`  timeout 300 s
#           then here: python3 scripts/bench_compare.py ditail-spirv.json reference.json
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((64 << 20))

# What a call carries: the tracked files and the bundle.
tree_bytes() {
  local tracked
  tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  echo $((tracked + $(du -cb "$1" | tail -1 | cut -f1)))
}

bundle() { # bundle DIR BINARY
  mkdir -p "$1/deb"
  strip -o "$1/gpu_tools" "$2"
  xz -9e -T0 -f "$1/gpu_tools"
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd "$1/deb" && apt-get $o download libvulkan1)
}

# Unpacks a bundle on the device: the Vulkan loader, the tools as their three names.
unpack() {
  for f in "$1"/deb/*.deb; do dpkg -x "$f" /; done
  ldconfig
  bin=/tmp/ditail-bin-$2
  mkdir -p "$bin"
  # Python's lzma: the device image need not have xz.
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$1/gpu_tools.xz" "$bin/gpu_tools"
  chmod +x "$bin/gpu_tools"
  for e in bench bench_attention gpu_counts; do ln -sf gpu_tools "$bin/$e"; done
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
}

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

# The device tool brings back at most 8 files: everything goes to $R, then one archive and
# the summaries to $OUT.
results() {
  : "${OUT:?set by the device tool}"
  R=/tmp/gpu-results-$1
  mkdir -p "$R"
  # (reference.json: the SPIR-V call's ratios are computed here against it)
  trap "tar czf '$OUT/results-$1.tgz' -C '$R' . && cp $R/vram.txt $R/ratios-*.md $R/counts.log $R/reference.json $R/ditail-spirv.json '$OUT'/ 2>/dev/null" EXIT
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$R/gpu.txt"
}

W=/tmp/sd15-random
common=(--weights $W --runs 5 --ditail-size 512 --ditail-steps 50 --ditail-runs 3 --unet-sides 64)

case "${1:-}" in
prepare)
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  for d in .gpu .gpu-spirv; do
    grep -qx "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >>"$exclude"
  done
  rm -rf .gpu .gpu-spirv
  # burn 0.22.1's `cuda` feature builds cubecl-llvm, whose build script (tracel-llvm-bundler)
  # downloads an LLVM bundle from outside crates.io: this needs a machine with internet
  # access (it fails on a registries-only machine). Without it, wgpu alone is benchmarked.
  if ! cargo build --release --features cuda --example gpu_tools; then
    echo "warning: the cuda build failed (see above); building wgpu only" >&2
    cargo build --release --example gpu_tools
  fi
  # The SPIR-V path: its own target folder, so the two builds do not undo each other.
  cargo build --release --features vulkan --target-dir target/spirv --example gpu_tools
  bundle .gpu target/release/examples/gpu_tools
  bundle .gpu-spirv target/spirv/release/examples/gpu_tools
  # diffusers as an xz tarball of the wheel's files (6.4 MB as a wheel, 1.8 MB so).
  rm -rf /tmp/gpu-whl /tmp/gpu-site && mkdir -p /tmp/gpu-whl /tmp/gpu-site
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform any -d /tmp/gpu-whl \
    diffusers==0.42.1
  python3 -m zipfile -e /tmp/gpu-whl/diffusers-*.whl /tmp/gpu-site
  tar cf - -C /tmp/gpu-site . | xz -9e -T0 >.gpu/diffusers.tar.xz
  for d in .gpu .gpu-spirv; do
    bytes=$(tree_bytes $d)
    echo "$d: a call carries $((bytes >> 20)) MiB of at most 64"
    [ "$bytes" -le $LIMIT ] || { echo "error: $d makes the call too large" >&2; exit 1; }
  done
  ;;
run)
  results wgsl
  unpack .gpu wgsl
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
    .gpu/diffusers.tar.xz /tmp/site
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  python3 scripts/bench_reference.py --weights $W --make-weights --only none --device cpu \
    --threads 16 2>&1 | tail -1
  # Each ditail bench starts from an empty kernel-tuning cache: its log's "warm-up run"
  # lines minus the timed runs are the first run's compilation and autotuning. The counts
  # keep a cache of their own, which their variants at the end reuse.
  counts_cache=/tmp/ditail-gpu-cache-counts
  set +e
  DITAIL_GPU_CACHE=$counts_cache $bin/gpu_counts --backend wgpu --dtype f16 --side 64 \
    --batch 3 --profile --json "$R/counts-wgsl.json" 2>&1 | tee "$R/counts.log"
  export DITAIL_GPU_CACHE=/tmp/ditail-gpu-cache
  rm -rf "$DITAIL_GPU_CACHE"
  # (fails fast with "does not include the cuda backend" if prepare built wgpu only)
  vram ditail-cuda $bin/bench --backend cuda --dtype f16 "${common[@]}" --json "$R/ditail-cuda.json"
  rm -rf "$DITAIL_GPU_CACHE"
  vram ditail-wgpu $bin/bench --backend wgpu --dtype f16 "${common[@]}" --json "$R/ditail-wgpu.json"
  vram reference python3 scripts/bench_reference.py --device cuda --dtype fp16 "${common[@]}" \
    --json "$R/reference.json"
  # The attention layers (Ditail's injection, SD1.5's sizes) against torch's SDPA.
  vram attention-wgpu $bin/bench_attention --backend wgpu --dtype f16 --runs 20 \
    --json "$R/attention-ditail.json"
  python3 scripts/bench_attention.py --device cuda --dtype fp16 --runs 20 \
    --json "$R/attention-torch.json" | tee "$R/attention-torch.log"
  for b in cuda wgpu; do
    [ -f "$R/ditail-$b.json" ] && python3 scripts/bench_compare.py "$R/ditail-$b.json" "$R/reference.json" --markdown | tee "$R/ratios-$b.md"
  done
  # Last, while the call has time left (480 s; each about 20 s on the tuned cache), the
  # step's profile with other settings, so that a slow card loses these and not the
  # comparison: fusion off; burn's fused norms instead of ditail's kernel; ditail's norm
  # kernel never split (one cube a group, where the default splits long groups over more
  # cubes in two kernels); 128 launches a submit instead of cubecl's 32 (the host spends
  # about 0.1 ms of CPU a launch, BENCHMARKS.md "The host's side of a step": if the device
  # idles between kernels, fewer submits may help). Which is faster here.
  for variant in DITAIL_FUSION=off:unfused DITAIL_NORM=reference:burn-norms \
    DITAIL_NORM=one:unsplit-norms CUBECL_WGPU_MAX_TASKS=128:tasks-128; do
    left=$((440 - SECONDS))
    if [ "$left" -lt 30 ]; then
      echo "skipped the ${variant#*:} profile: the call's time is spent" | tee -a "$R/counts.log"
      continue
    fi
    env "${variant%%:*}" DITAIL_GPU_CACHE=$counts_cache timeout "$left" $bin/gpu_counts \
      --backend wgpu --dtype f16 --side 64 --batch 3 --profile \
      --json "$R/counts-wgsl-${variant#*:}.json" 2>&1 | tee -a "$R/counts.log"
  done
  ;;
run-spirv)
  # On the machine the first call warmed: its random weights are still in $W.
  results spirv
  unpack .gpu-spirv spirv
  [ -d $W ] || { echo "error: $W is gone: run this on the machine that ran 'run'" >&2; exit 1; }
  export DITAIL_GPU_CACHE=/tmp/ditail-gpu-cache-spirv
  set +e
  $bin/gpu_counts --backend wgpu --dtype f16 --side 64 --batch 3 --profile \
    --json "$R/counts-spirv.json" \
    2>&1 | tee "$R/counts.log"
  rm -rf "$DITAIL_GPU_CACHE"
  vram ditail-spirv $bin/bench --backend wgpu --dtype f16 "${common[@]}" \
    --json "$R/ditail-spirv.json"
  ;;
*)
  echo "usage: scripts/gpu_bench.sh prepare|run|run-spirv" >&2
  exit 2
  ;;
esac
