#!/usr/bin/env bash
# The GPU tests again, through cubecl's SPIR-V compiler (the `vulkan` feature, the compiler
# NVIDIA, AMD and Intel GPUs get on Vulkan in that build) on Mesa's lavapipe, then
# `spirv-val` on every SPIR-V module they made.
#
# lavapipe lacks VK_KHR_workgroup_memory_explicit_layout, without which cubecl-spirv 0.11.3
# writes invalid shared memory (and lavapipe crashes compiling it), so the tests run through
# tests/spirv/explicit_layout_shim.c, a Vulkan driver that forwards to lavapipe and adds that
# extension (its header says how and why). Last, without the shim: a SPIR-V build refuses
# lavapipe with a clear error instead of crashing.
#
# Needs: mesa-vulkan-drivers, libvulkan-dev (headers), spirv-tools, a C compiler. Extra
# arguments go to `cargo test` (e.g. `-- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."

out="$PWD/target/spirv-shim"
mkdir -p "$out/modules"
rm -f "$out"/modules/*.spv

# lavapipe's library as the system's Vulkan loader finds it.
lavapipe=""
for json in /usr/share/vulkan/icd.d/lvp_icd*.json; do
    [ -e "$json" ] || continue
    lavapipe=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ICD"]["library_path"])' "$json")
    break
done
if [ -z "$lavapipe" ]; then
    echo "no lavapipe (install mesa-vulkan-drivers)" >&2
    exit 1
fi

cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$out/libexplicit_layout_shim.so" \
    tests/spirv/explicit_layout_shim.c -ldl
cat > "$out/icd.json" <<EOF
{"file_format_version": "1.0.0",
 "ICD": {"library_path": "$out/libexplicit_layout_shim.so", "api_version": "1.3.0"}}
EOF

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
# Caches of their own (cubecl keys tunings by kernel and shape, not by compiler, so the
# WGSL runs' choices stay apart): each group's tunings below, lavapipe's shaders.
export XDG_CACHE_HOME="$out/cache"
# The tests that run kernels on wgpu: the networks and the pipeline's injecting steps
# against diffusers and the reference, burn-cubecl's flash attention with Ditail's q/k mix
# (the attention SPIR-V runs), f16 accumulation, kernel timing, and `ditail devices`.
#
# They run in two groups side by side. A test program has one GPU device, whose thread
# compiles the kernels one after another (lavapipe's LLVM: up to seconds a kernel, and a
# cold cache compiles every autotune candidate), so one program leaves the second core
# mostly idle. Each group keeps its own kernel-tuning cache (`DITAIL_GPU_CACHE`: cubecl's
# database is one process's); lavapipe's shader cache under XDG_CACHE_HOME is shared,
# which Mesa allows across processes. The groups are balanced on cold-cache times; from a
# cold cache the six programs took 442 s side by side, 611 s one after the other (2 cores).
groups=("--test attention_flash --test gpu_dispatches --test cli"
    "--test gpu_f16 --test wgpu --test pipeline")
# Arguments before `--` are cargo's (the build takes them too), the rest the tests'.
cargo_args=()
for arg in "$@"; do
    [ "$arg" = -- ] && break
    cargo_args+=("$arg")
done
# shellcheck disable=SC2086 # each group is a list of words
cargo test --no-run --features vulkan ${groups[*]} "${cargo_args[@]}"
logs="$out/logs"
mkdir -p "$logs"
pids=()
for i in "${!groups[@]}"; do
    echo "group $i: ${groups[$i]} (its output follows when both groups end)"
    # shellcheck disable=SC2086
    VK_ICD_FILENAMES="$out/icd.json" DITAIL_SHIM_ICD="$lavapipe" \
        DITAIL_SHIM_SPIRV_DIR="$out/modules" DITAIL_GPU_CACHE="$out/cache/ditail/gpu-$i" \
        cargo test --no-fail-fast --features vulkan ${groups[$i]} "$@" >"$logs/group-$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!groups[@]}"; do
    if ! wait "${pids[$i]}"; then
        failed=1
    fi
    echo "==> group $i: ${groups[$i]}"
    cat "$logs/group-$i.log"
done
if [ "$failed" = 1 ]; then
    echo "a group of SPIR-V tests failed (above)" >&2
    exit 1
fi

modules=("$out"/modules/*.spv)
if [ ! -e "${modules[0]}" ]; then
    echo "no SPIR-V module was made: the tests did not run through the SPIR-V compiler" >&2
    exit 1
fi
invalid=0
for module in "${modules[@]}"; do
    if ! report=$(spirv-val --target-env vulkan1.3 "$module" 2>&1); then
        echo "invalid SPIR-V: $module"
        echo "$report" | head -5
        invalid=$((invalid + 1))
    fi
done
echo "spirv-val: ${#modules[@]} SPIR-V modules, $invalid invalid"
[ "$invalid" = 0 ]

# Without the shim lavapipe lacks the extension: refused, with the extension named.
cargo test --features vulkan --test wgpu a_spirv_build_refuses "$@"
