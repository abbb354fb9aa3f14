//! Attention on the CPU (burn-flex, f32): flash-style, on diffusers' `[batch, tokens,
//! heads * head_dim]` layout as it is (no head split, no transposes), with a vectorised
//! `exp` in the online softmax.
//!
//! Why (issue 14, `perf` of a U-Net forward at 64x64 latents, batch 1): burn-flex's
//! attention spent 28% of the forward outside its GEMMs, in a per-element loop over the
//! scores (optional mask, bias and cap tests, then libm's scalar `expf`); the U-Net's
//! 4096-token self-attention makes 134 M scores per head group and layer. Here the scale is
//! folded into the queries and the softmax runs over whole rows with a polynomial `exp`
//! (Cephes' `expf`, within 2 ulp of libm's on the range softmax uses) that the compiler
//! vectorises, built for AVX-512 (16 lanes) or AVX2 + FMA when the CPU has them.
//!
//! Work is split into (batch, head, block of query rows) tasks on rayon's pool; each walks
//! the keys in tiles: scores `Q·Kᵀ` ([`crate::product`]: the 512-bit kernel on
//! CPUs with AVX-512, with each head's keys and values packed once for all query blocks; the `gemm`
//! crate elsewhere, reading k in place; the block's queries copied scaled), a running max and sum per row, then `P·V`
//! accumulated into the block's output rows. On the 512-bit path the three run one strip
//! of 12 query rows at a time, so that a strip's scores stay in L1 between them.

use std::cell::RefCell;

use burn::backend::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::exp::{exp1, exp1_fma};
use crate::out_ptr::OutPtr;
use crate::product::product;
#[cfg(target_arch = "x86_64")]
use crate::sgemm512::NR;

/// Query rows per task: whole strips of the 512-bit kernel's 12 rows.
const QUERY_BLOCK: usize = 72;
/// Query rows whose scores go through the softmax together on the 512-bit path: one
/// microkernel strip (12 x 512 f32, 24 KiB, in L1). Measured with `examples/bench_attention`
/// (2 AVX-512 cores, batch 3, alternated three times): SD1.5's 4096-token self-attention
/// 444-477 ms against 484-737 with the whole block's scores (72 KiB, in L2) between the
/// products and the softmax (both with key tiles of 256).
const STRIP: usize = 12;
/// Keys per tile: a strip's scores stay in L1 (a block's in L2 for the `gemm` crate's
/// path). 512 measured 414-428 ms on the 4096-token layer against 435-448 with 256 and
/// 464-620 with 128 (1024 within the noise of 512); on the `gemm` crate's path (CPUs
/// without AVX-512) 512 is not measured against 256.
const KEY_TILE: usize = 512;
// Key tiles start on whole panels of the packed keys (`sgemm512::NR` = 32 columns).
const _: () = assert!(KEY_TILE.is_multiple_of(32));

/// Whether the kernel takes these tensors: f32, `[batch, tokens, channels]` with the same
/// batch and channels, keys and values of the same length, channels divisible by `heads`.
pub fn supports(
    q: &FloatTensor<Flex>,
    k: &FloatTensor<Flex>,
    v: &FloatTensor<Flex>,
    heads: usize,
) -> bool {
    let (qs, ks, vs) = (q.layout().shape(), k.layout().shape(), v.layout().shape());
    [q, k, v].iter().all(|t| t.dtype() == DType::F32)
        && [qs, ks, vs].iter().all(|s| s.num_dims() == 3)
        && heads > 0
        && qs[2] % heads == 0
        && qs[0] == ks[0]
        && ks[0] == vs[0]
        && qs[2] == ks[2]
        && ks[2] == vs[2]
        && ks[1] == vs[1]
        && ks[1] > 0
}

/// A task's scaled queries, scores, output accumulator and per-row max and sum.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    scores: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Multi-head attention, scale `1/sqrt(head_dim)`.
///
/// # Shapes
/// - `q`: `[batch, n_q, heads * head_dim]`; `k`, `v`: `[batch, n_kv, heads * head_dim]`
/// - output: `[batch, n_q, heads * head_dim]`
pub fn attention(
    q: FloatTensor<Flex>,
    k: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    heads: usize,
) -> FloatTensor<Flex> {
    let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
    let (qs, ks) = (q.layout().shape().clone(), k.layout().shape().clone());
    let (batch, nq, c, nkv) = (qs[0], qs[1], qs[2], ks[1]);
    let d = c / heads;
    let qv: &[f32] = q.as_slice().expect("contiguous");
    let kv: &[f32] = k.as_slice().expect("contiguous");
    let vv: &[f32] = v.as_slice().expect("contiguous");
    let scale = 1.0 / (d as f32).sqrt();

    // Kᵀ and V of every (image, head) packed once where the 512-bit product runs.
    let packed_keys = pack_heads(kv, [batch, nkv, heads, d], true);
    let packed_values = pack_heads(vv, [batch, nkv, heads, d], false);
    // Every value is written below (each task its block's rows of one head), so the
    // buffer is not zeroed first (fresh pages zeroed by the kernel showed in `perf`).
    let len = batch * nq * c;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = OutPtr::spare(&mut out);
    let blocks = nq.div_ceil(QUERY_BLOCK);
    // Rows per strip: the 512-bit kernel's tile height where it runs (packed operands);
    // the whole block for the `gemm` crate, whose products pay per call.
    let strip = match packed_keys {
        Some(_) => STRIP,
        None => QUERY_BLOCK,
    };
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|task| {
            let (b, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (h, blk) = (rest / blocks, rest % blocks);
            let (q0, q1) = (blk * QUERY_BLOCK, ((blk + 1) * QUERY_BLOCK).min(nq));
            let rows = q1 - q0;
            SCRATCH.with_borrow_mut(|s| {
                s.scores.resize(strip.min(rows) * KEY_TILE, 0.0);
                s.acc.clear();
                s.acc.resize(rows * d, 0.0);
                s.max.clear();
                s.max.resize(rows, f32::NEG_INFINITY);
                s.sum.clear();
                s.sum.resize(rows, 0.0);
                // The block's queries, scaled (the scale folded into the score product).
                s.q.clear();
                for r in 0..rows {
                    let row = &qv[(b * nq + q0 + r) * c + h * d..][..d];
                    s.q.extend(row.iter().map(|x| x * scale));
                }
                for k0 in (0..nkv).step_by(KEY_TILE) {
                    let kt = KEY_TILE.min(nkv - k0);
                    let k_tile = &kv[(b * nkv + k0) * c + h * d..];
                    let v_tile = &vv[(b * nkv + k0) * c + h * d..];
                    let tile = [b * heads + h, k0];
                    // A strip of rows at a time: its scores stay in L1 from their product
                    // through the softmax into `P V`.
                    for r0 in (0..rows).step_by(strip) {
                        let sr = strip.min(rows - r0);
                        // SAFETY: scores holds sr x kt; k rows (stride c, read as the
                        // columns of Kᵀ) start inside k and span d values; the packed keys
                        // are Kᵀ's panels for every (image, head).
                        unsafe {
                            head_product(
                                &s.q[r0 * d..],
                                [sr, d, kt],
                                packed_keys.as_ref().map(|p| (p, tile)),
                                (k_tile.as_ptr(), [1, c]),
                                (s.scores.as_mut_ptr(), kt),
                                false,
                            )
                        };
                        for r in 0..sr {
                            let row = &mut s.scores[r * kt..][..kt];
                            let (max, sum) = (&mut s.max[r0 + r], &mut s.sum[r0 + r]);
                            let (new_max, tile_sum) = softmax_tile(row, *max);
                            let correction = if *max == f32::NEG_INFINITY {
                                0.0
                            } else {
                                exp1(*max - new_max)
                            };
                            if correction != 1.0 {
                                s.acc[(r0 + r) * d..][..d]
                                    .iter_mut()
                                    .for_each(|a| *a *= correction);
                            }
                            *sum = *sum * correction + tile_sum;
                            *max = new_max;
                        }
                        // SAFETY: acc holds rows x d from row r0, scores sr x kt; v rows
                        // (stride c) start inside v and span d values; the packed values
                        // are V's panels for every (image, head).
                        unsafe {
                            head_product(
                                &s.scores,
                                [sr, kt, d],
                                packed_values.as_ref().map(|p| (p, tile)),
                                (v_tile.as_ptr(), [c, 1]),
                                (s.acc[r0 * d..].as_mut_ptr(), d),
                                true,
                            )
                        };
                    }
                }
                let base = dst.get();
                for r in 0..rows {
                    let inv = 1.0 / s.sum[r];
                    let row = (b * nq + q0 + r) * c + h * d;
                    for (j, a) in s.acc[r * d..][..d].iter().enumerate() {
                        // SAFETY: row q0 + r of batch b, head h's d columns: inside `out`'s
                        // capacity, and written by this task only (raw writes: the
                        // memory is not initialised yet).
                        unsafe { base.add(row + j).write(a * inv) };
                    }
                }
            });
        });
    // SAFETY: the tasks cover every (image, query row, head) and write all d values of it.
    unsafe { out.set_len(len) };
    Flex::float_from_data(TensorData::new(out, [batch, nq, c]), &Default::default())
}

/// `Kᵀ` (`transposed`) or `V` of every (image, head) of `x` (`[batch, n, heads·d]`) in the
/// 512-bit product's panels, where it runs: packed once here instead of by every block of
/// queries. For the keys that transposing gather cost as much as the block's products at
/// SD1.5's head width of 40 (`perf`, U-Net at 64x64 latents); the values' copies were a
/// tenth of theirs.
fn pack_heads(
    x: &[f32],
    [batch, n, heads, d]: [usize; 4],
    transposed: bool,
) -> Option<PackedHeads> {
    #[cfg(target_arch = "x86_64")]
    if crate::product::wide() {
        use crate::sgemm512::single::{pack_panels, panels_len};
        let c = heads * d;
        let (strides, shape) = match transposed {
            true => ([1, c], [d, n]),
            false => ([c, 1], [n, d]),
        };
        let per = panels_len(shape);
        let mut out = vec![0f32; batch * heads * per];
        out.par_chunks_mut(per).enumerate().for_each(|(bh, dst)| {
            let (b, h) = (bh / heads, bh % heads);
            // SAFETY: head h's d columns of image b's n rows (stride c), inside x.
            unsafe { pack_panels(x[b * n * c + h * d..].as_ptr(), strides, shape, dst) };
        });
        return Some(PackedHeads {
            values: out,
            per,
            transposed,
            n,
            d,
        });
    }
    let _ = (x, batch, n, heads, d, transposed);
    None
}

/// `Kᵀ` or `V` of every (image, head), as [`pack_heads`] packed them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct PackedHeads {
    values: Vec<f32>,
    /// Values per (image, head).
    per: usize,
    /// `Kᵀ` (`[d, n]`: panels of `d` rows) rather than `V` (`[n, d]`: panels of `n` rows).
    transposed: bool,
    n: usize,
    d: usize,
}

#[cfg(target_arch = "x86_64")]
impl PackedHeads {
    /// Image-head `bh`'s operand for the key tile from `k0` (for `Kᵀ` a multiple of the
    /// panel width): its first panel and the distance from one panel to the next.
    fn tile(&self, bh: usize, k0: usize) -> (*const f32, usize) {
        let (at, stride) = match self.transposed {
            true => (k0 * self.d, self.d * NR),
            false => (k0 * NR, self.n * NR),
        };
        (self.values[bh * self.per + at..].as_ptr(), stride)
    }
}

/// `c (+)= a b` (`accumulate`) for `a` `[m, k]` (rows of stride `k`), `b` the key tile of
/// (image-head, first key) from its packed heads where [`pack_heads`] packed them, else
/// read in place (`(pointer, [rs, cs])`), `c` `(pointer, row stride)`.
///
/// # Safety
/// As [`product`]'s, for both forms of `b`.
unsafe fn head_product(
    a: &[f32],
    [m, k, n]: [usize; 3],
    packed: Option<(&PackedHeads, [usize; 2])>,
    (b, strides): (*const f32, [usize; 2]),
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
) {
    match packed {
        #[cfg(target_arch = "x86_64")]
        Some((heads, [bh, k0])) => {
            use crate::sgemm512::single::{Right, Start, gemm};
            let start = match accumulate {
                true => Start::Accumulate,
                false => Start::Bias(None),
            };
            let (panels, stride) = heads.tile(bh, k0);
            let right = Right::Panels(panels, stride);
            // SAFETY: the caller's promises; packed panels exist only where the 512-bit
            // product runs.
            unsafe { gemm(a, k, [m, k, n], right, c, ldc, start) }
        }
        // SAFETY: the caller's promises.
        _ => unsafe { product(a, k, [m, k, n], b, strides, c, ldc, accumulate) },
    }
}

/// One row of a key tile: the running max updated by the row's largest value, then
/// `row[i] = exp(row[i] - max)`; returns (the new max, the row's sum). 512-bit (16 lanes)
/// where the CPU has AVX-512, 256-bit with AVX2 + FMA: built for the baseline (SSE2), the
/// max alone measured 4% of a U-Net forward at 64x64 latents (`perf`).
fn softmax_tile(row: &mut [f32], running_max: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected.
            return unsafe { softmax_tile_avx512(row, running_max) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected.
            return unsafe { softmax_tile_avx2(row, running_max) };
        }
    }
    softmax_tile_lanes::<8, false>(row, running_max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_tile_avx512(row: &mut [f32], running_max: f32) -> (f32, f32) {
    softmax_tile_lanes::<16, true>(row, running_max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_tile_avx2(row: &mut [f32], running_max: f32) -> (f32, f32) {
    softmax_tile_lanes::<8, true>(row, running_max)
}

/// [`softmax_tile`] in `L` lanes (the vector width it is built for), with fused
/// multiply-adds in the `exp` where the build has them (`FMA`).
#[inline(always)]
fn softmax_tile_lanes<const L: usize, const FMA: bool>(
    row: &mut [f32],
    running_max: f32,
) -> (f32, f32) {
    let max = running_max.max(row_max::<L>(row));
    (max, exp_shifted::<L, FMA>(row, max))
}

/// The largest value of a row, NaN ignored: a NaN score still reaches the output (and the
/// pipeline's finite check) through its `exp`, the row's sum and `P V`. Ignoring it keeps
/// the loop one `vmaxps` per vector; the NaN-keeping form had compiled to a scalar loop
/// (12% of the softmax in `perf`).
#[inline(always)]
fn row_max<const L: usize>(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(chunks.remainder()) {
        m = if x > m { x } else { m };
    }
    m
}

/// `row[i] = exp(row[i] - max)`, returning their sum.
#[inline(always)]
fn exp_shifted<const L: usize, const FMA: bool>(row: &mut [f32], max: f32) -> f32 {
    let exp = if FMA { exp1_fma } else { exp1 };
    let mut lanes = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for chunk in &mut chunks {
        for (s, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_max_and_exp_shifted_sum() {
        let values = [0.5f32, -1.0, 0.0, 2.0, 0.0, 1.0, 3.0, -3.0, 4.0];
        // Rows longer than a vector of either width, with a remainder.
        let row: Vec<f32> = (0..5).flat_map(|i| values.map(|v| v - i as f32)).collect();
        assert_eq!(row_max::<16>(&row), 4.0);
        assert_eq!(row_max::<8>(&row), 4.0);
        let want: f32 = row.iter().map(|v| (v - 5.0).exp()).sum();
        // A running max above the row's own wins.
        for (max, sum) in [
            softmax_tile(&mut row.clone(), 5.0),
            softmax_tile_lanes::<8, false>(&mut row.clone(), 5.0),
            softmax_tile_lanes::<16, true>(&mut row.clone(), 5.0),
        ] {
            assert_eq!(max, 5.0);
            assert!((sum - want).abs() < 1e-5, "{sum} vs {want}");
        }
        let mut shifted = row.clone();
        assert_eq!(softmax_tile(&mut shifted, f32::NEG_INFINITY).0, 4.0);
        for (got, x) in shifted.iter().zip(&row) {
            assert!((got - (x - 4.0).exp()).abs() < 1e-6);
        }
        // A NaN score (in the vector part or the remainder) makes the row's sum NaN.
        for at in [2, 44] {
            let mut with_nan = row.clone();
            with_nan[at] = f32::NAN;
            assert!(softmax_tile(&mut with_nan, f32::NEG_INFINITY).1.is_nan());
        }
    }
}
