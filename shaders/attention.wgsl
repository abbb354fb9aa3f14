// Flash-style multi-head attention with Ditail's q/k injection fused into the loads.
//
// out[b, n, h*D..(h+1)*D] = softmax(q_bh[n] . k_bh^T / sqrt(D)) v_bh
//
// q, k, v and out are [batch, tokens, heads * D] (diffusers' layout before the heads are
// split), so no head split or transpose is ever materialised. SPLIT invocations own one
// query row of one head, each a slice of DL vec4s of its q row and output accumulator, in
// registers; the workgroup walks the keys in tiles of BK staged in workgroup memory, keeping
// a running max and sum (online softmax). The score matrix never exists. Wide heads are
// split so that no invocation holds more than 2 x 20 vec4s (past that, GPUs spill
// registers, and lavapipe's JIT computed wrong results for 160-wide heads over 768+ keys);
// the SPLIT partial dot products of a score meet in workgroup memory.
//
// Injection: batch elements b >= params.mix_from read their q and k as the source's mixed in,
// `x + (src - x) * mask[token]`, or exactly `src` when there is no mask; the source is
// `src_q`/`src_k` at batch offset 0 (element 0 of q/k themselves, or a captured copy). With
// mix_from >= batch nothing is mixed and src_q/src_k/mask are never read.
//
// Template values (filled by `crates/ditail-models/src/kernels/attention/wgsl.rs`):
//   enable: `enable f16;` when T is f16, else empty
//   elem:   the storage type T of q, k, v, src, mask and out (f32 or f16); arithmetic is f32
//   d4:     head width / 4
//   bk:     keys per tile (BK * D floats of k and of v fit 5 KiB of workgroup memory each)
//   wg:     invocations per workgroup (= query rows per workgroup)
{{ enable }}

alias T = {{ elem }};

const D4: u32 = {{ d4 }}u;
const SPLIT: u32 = {{ split }}u;
const DL: u32 = {{ dl }}u;
const BK: u32 = {{ bk }}u;
const ROWS: u32 = {{ rows }}u;
const WG: u32 = ROWS * SPLIT;
// Lower than any score; -inf is not portable in WGSL constants.
const NEG: f32 = -3.0e38;

struct Params {
    batch: u32,
    heads: u32,
    n_q: u32,
    n_kv: u32,
    // heads * D / 4: the row stride of q, k, v, out in vec4s.
    row4: u32,
    mix_from: u32,
    use_mask: u32,
    scale: f32,
}

// Every binding is read_write: cubecl pools tensors into shared buffers, and a buffer bound
// both read-only and writable in one dispatch fails wgpu's validation.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> src_q: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> src_k: array<vec4<T>>;
@group(0) @binding(5) var<storage, read_write> mask: array<T>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<T>>;
@group(0) @binding(7) var<storage, read_write> params: Params;

var<workgroup> k_tile: array<vec4<f32>, BK * D4>;
// The key count, read through workgroupUniformLoad: a value read from a storage buffer is
// not uniform to WGSL, and the key loop holds barriers.
var<workgroup> n_kv_uniform: u32;
var<workgroup> v_tile: array<vec4<f32>, BK * D4>;
// Each invocation's partial dot products of the current tile (only used when SPLIT > 1).
var<workgroup> part: array<f32, {{ part }}>;

// The injected value of one vec4 of q or k: the same arithmetic as the reference
// (`x + (src - x) * m`), and an exact copy when there is no mask.
fn mixed(x: vec4<f32>, src: vec4<f32>, token: u32) -> vec4<f32> {
    if (params.use_mask == 0u) {
        return src;
    }
    return x + (src - x) * f32(mask[token]);
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let h = wid.y;
    let b = wid.z;
    let lane = lid.x % SPLIT;
    let local_row = lid.x / SPLIT;
    let row = wid.x * ROWS + local_row;
    // Rows past the end still help stage tiles; they compute on the last row and never store.
    let r = min(row, params.n_q - 1u);
    let mixes = b >= params.mix_from;
    // This invocation's vec4s of the head: [d0, d0 + DL), cut at D4.
    let d0 = lane * DL;
    let head4 = h * D4 + d0;

    var qr: array<vec4<f32>, DL>;
    var acc: array<vec4<f32>, DL>;
    let q_at = (b * params.n_q + r) * params.row4 + head4;
    let src_q_at = r * params.row4 + head4;
    for (var d = 0u; d < DL; d++) {
        var x = vec4<f32>(0.0);
        if (d0 + d < D4) {
            x = vec4<f32>(q[q_at + d]);
            if (mixes) {
                x = mixed(x, vec4<f32>(src_q[src_q_at + d]), r);
            }
        }
        qr[d] = x;
        acc[d] = vec4<f32>(0.0);
    }
    var run_max = NEG;
    var run_sum = 0.0;

    if (lid.x == 0u) {
        n_kv_uniform = params.n_kv;
    }
    let n_kv = workgroupUniformLoad(&n_kv_uniform);
    for (var k0 = 0u; k0 < n_kv; k0 += BK) {
        for (var i = lid.x; i < BK * D4; i += WG) {
            let j = i / D4;
            let d = i % D4;
            let key = k0 + j;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (key < n_kv) {
                let at = (b * n_kv + key) * params.row4 + h * D4 + d;
                kx = vec4<f32>(k[at]);
                if (mixes) {
                    kx = mixed(kx, vec4<f32>(src_k[key * params.row4 + h * D4 + d]), key);
                }
                vx = vec4<f32>(v[at]);
            }
            k_tile[i] = kx;
            v_tile[i] = vx;
        }
        workgroupBarrier();

        var s: array<f32, BK>;
        for (var j = 0u; j < BK; j++) {
            var dot_qk = 0.0;
            for (var d = 0u; d < DL; d++) {
                if (d0 + d < D4) {
                    dot_qk += dot(qr[d], k_tile[j * D4 + d0 + d]);
                }
            }
            s[j] = dot_qk;
        }
        if (SPLIT > 1u) {
            for (var j = 0u; j < BK; j++) {
                part[lid.x * BK + j] = s[j];
            }
            workgroupBarrier();
            // Every lane of a row sums the same partials in the same order, so all of them
            // keep the same running max and sum.
            for (var j = 0u; j < BK; j++) {
                var total = 0.0;
                for (var l = 0u; l < SPLIT; l++) {
                    total += part[(local_row * SPLIT + l) * BK + j];
                }
                s[j] = total;
            }
        }

        let valid = min(BK, n_kv - k0);
        var tile_max = NEG;
        for (var j = 0u; j < BK; j++) {
            s[j] = select(NEG, s[j] * params.scale, j < valid);
            tile_max = max(tile_max, s[j]);
        }
        let new_max = max(run_max, tile_max);
        let shrink = exp(run_max - new_max);
        run_sum *= shrink;
        for (var d = 0u; d < DL; d++) {
            acc[d] *= shrink;
        }
        for (var j = 0u; j < BK; j++) {
            let p = select(0.0, exp(s[j] - new_max), j < valid);
            run_sum += p;
            for (var d = 0u; d < DL; d++) {
                if (d0 + d < D4) {
                    acc[d] += p * v_tile[j * D4 + d0 + d];
                }
            }
        }
        run_max = new_max;
        workgroupBarrier();
    }

    if (row < params.n_q) {
        let inv = 1.0 / run_sum;
        let out_at = (b * params.n_q + row) * params.row4 + head4;
        for (var d = 0u; d < DL; d++) {
            if (d0 + d < D4) {
                out[out_at + d] = vec4<T>(acc[d] * inv);
            }
        }
    }
}
