//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions on the CPU:
//! 16 multiplications per 2x2 output tile and input channel instead of 36, so the GEMMs
//! that do the work have 2.25x fewer FLOPs than the direct convolution's (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016,
//! <https://arxiv.org/abs/1509.09308>).
//!
//! The weights are transformed (`U = G g Gᵀ`, 16 matrices `[out, in]`) on every call: the
//! cost is `16·out·in` writes, small beside the GEMMs at the resolutions this path takes.
//! Then, per block of output tiles, the input tiles are transformed (`V = Bᵀ d B`, 16
//! matrices `[in, tiles]`), the 16 GEMMs `M = U·V` run (the `gemm` crate), and each tile's
//! output is `Aᵀ M A` plus the bias, written to NCHW. F(2x2, 3x3) keeps f32 rounding at the
//! direct convolution's order (F(4x4, 3x3) and larger lose digits in f32: ncnn, and
//! Lavin & Gray's table 4).

use std::cell::RefCell;

use rayon::prelude::*;

use crate::kernels::out_ptr::OutPtr;

/// Bytes of a block's transformed inputs and products (`16·(in+out)·tiles` f32s): about
/// an L2 cache, so that the 16 GEMMs of a block find their right operand there.
const BLOCK_BYTES: usize = 2 << 20;

thread_local! {
    /// Each worker's transformed inputs and GEMM products, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Zero rows above the input.
    pub top: usize,
    /// Zero columns left of the input.
    pub left: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// `U = G g Gᵀ` for every (out, in) pair, as 16 row-major `[out, in]` matrices.
fn transform_weights(weights: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * o * c];
    for (oc, g) in weights.chunks_exact(9).enumerate() {
        // G g: 4x3.
        let mut t = [[0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        // (G g) Gᵀ: 4x4.
        for (i, r) in t.iter().enumerate() {
            let row = [
                r[0],
                0.5 * (r[0] + r[1] + r[2]),
                0.5 * (r[0] - r[1] + r[2]),
                r[2],
            ];
            for (j, v) in row.into_iter().enumerate() {
                u[(i * 4 + j) * o * c + oc] = v;
            }
        }
    }
    u
}

/// `V = Bᵀ d B` of the tile rows `rows` of one image, every channel: 16 row-major
/// matrices `[c, rows.len()·tw]` in `v`. Works a tile row at a time on whole input rows, so
/// that every loop runs over contiguous memory: the four rows `Bᵀ d` first (each the sum
/// or difference of two padded input rows), then `(Bᵀ d) B` along them.
fn transform_inputs(
    image: &[f32],
    s: &Shape,
    tw: usize,
    rows: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let (c, h, w) = (s.c, s.h, s.w);
    let nt = rows.len() * tw;
    // Padded input rows: column q holds input column q - left (zero outside).
    let width = 2 * tw + 2;
    let mut d = vec![0f32; 4 * width];
    let mut bt = vec![0f32; 4 * width];
    for ci in 0..c {
        let plane = &image[ci * h * w..][..h * w];
        for ty in rows.clone() {
            for (i, row) in d.chunks_exact_mut(width).enumerate() {
                row.fill(0.0);
                let Some(iy) = (2 * ty + i).checked_sub(s.top).filter(|&r| r < h) else {
                    continue;
                };
                let src = &plane[iy * w..][..w];
                // Columns q in [left, left + w) ∩ [0, width).
                let end = (s.left + w).min(width);
                if s.left < end {
                    row[s.left..end].copy_from_slice(&src[..end - s.left]);
                }
            }
            let (d0, rest) = d.split_at(width);
            let (d1, rest) = rest.split_at(width);
            let (d2, d3) = rest.split_at(width);
            let (b0, rest) = bt.split_at_mut(width);
            let (b1, rest) = rest.split_at_mut(width);
            let (b2, b3) = rest.split_at_mut(width);
            for q in 0..width {
                b0[q] = d0[q] - d2[q];
                b1[q] = d1[q] + d2[q];
                b2[q] = d2[q] - d1[q];
                b3[q] = d1[q] - d3[q];
            }
            let base = (ty - rows.start) * tw;
            for (i, r) in bt.chunks_exact(width).enumerate() {
                let at = |j: usize| ((i * 4 + j) * c + ci) * nt + base;
                let (v0, v1, v2, v3) = (at(0), at(1), at(2), at(3));
                for tx in 0..tw {
                    let q = 2 * tx;
                    let (x0, x1, x2, x3) = (r[q], r[q + 1], r[q + 2], r[q + 3]);
                    v[v0 + tx] = x0 - x2;
                    v[v1 + tx] = x1 + x2;
                    v[v2 + tx] = x2 - x1;
                    v[v3 + tx] = x1 - x3;
                }
            }
        }
    }
}

/// `Y = Aᵀ M A + bias` for the tile rows `rows` of one image and output channel `oc`,
/// written to its output plane (`oh x ow`), cropped. `m` holds the 16 GEMM products
/// `[o, rows.len()·tw]`.
#[allow(clippy::too_many_arguments)]
fn transform_outputs(
    m: &[f32],
    o: usize,
    oc: usize,
    tw: usize,
    rows: std::ops::Range<usize>,
    bias: f32,
    (oh, ow): (usize, usize),
    plane: *mut f32,
    a: &mut [f32],
) {
    let nt = rows.len() * tw;
    for ty in rows.clone() {
        let base = (ty - rows.start) * tw;
        let at = |xi: usize| &m[(xi * o + oc) * nt + base..][..tw];
        // Aᵀ M: two rows of four values per tile, as 8 vectors over the tile row.
        let (a0, a1) = a.split_at_mut(4 * tw);
        for j in 0..4 {
            let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
            for tx in 0..tw {
                a0[j * tw + tx] = m0[tx] + m1[tx] + m2[tx];
                a1[j * tw + tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        for (i, r) in [&*a0, &*a1].into_iter().enumerate() {
            let y = 2 * ty + i;
            if y >= oh {
                break;
            }
            // SAFETY: row y of this task's output plane, `ow` values.
            let out = unsafe { std::slice::from_raw_parts_mut(plane.add(y * ow), ow) };
            for tx in 0..tw {
                let (r0, r1, r2, r3) = (r[tx], r[tw + tx], r[2 * tw + tx], r[3 * tw + tx]);
                let x = 2 * tx;
                out[x] = r0 + r1 + r2 + bias;
                if x + 1 < ow {
                    out[x + 1] = r1 - r2 - r3 + bias;
                }
            }
        }
    }
}

/// The convolution: `x` `[n, c, h, w]`, `weights` `[o, c, 3, 3]`, `bias` `[o]`, all
/// contiguous; returns `[n, o, oh, ow]`.
pub fn conv3x3(x: &[f32], weights: &[f32], bias: &[f32], s: &Shape) -> Vec<f32> {
    let Shape {
        n,
        c,
        h,
        w,
        o,
        oh,
        ow,
        ..
    } = *s;
    let u = transform_weights(weights, o, c);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Blocks of whole tile rows, about BLOCK_BYTES of transformed inputs and products.
    let per_block = (BLOCK_BYTES / (16 * 4 * (c + o))).clamp(8, 256);
    let rows_per_block = per_block.div_ceil(tw).clamp(1, th);
    let blocks = th.div_ceil(rows_per_block);
    let mut out = vec![0f32; n * o * oh * ow];
    let dst = OutPtr::new(&mut out);
    (0..n * blocks).into_par_iter().for_each(|job| {
        let (b, blk) = (job / blocks, job % blocks);
        let rows = blk * rows_per_block..((blk + 1) * rows_per_block).min(th);
        let nt = rows.len() * tw;
        let image = &x[b * c * h * w..][..c * h * w];
        SCRATCH.with_borrow_mut(|(v, m)| {
            v.resize(16 * c * nt, 0.0);
            m.resize(16 * o * nt, 0.0);
            transform_inputs(image, s, tw, rows.clone(), v);
            // M[ξ] = U[ξ] V[ξ]: [o, c] x [c, nt].
            for xi in 0..16 {
                // SAFETY: u holds 16 [o, c] matrices, v 16 [c, nt], m 16 [o, nt].
                unsafe {
                    gemm::gemm(
                        o,
                        nt,
                        c,
                        m.as_mut_ptr().add(xi * o * nt),
                        1,
                        nt as isize,
                        false,
                        u.as_ptr().add(xi * o * c),
                        1,
                        c as isize,
                        v.as_ptr().add(xi * c * nt),
                        1,
                        nt as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            let mut a = vec![0f32; 8 * tw];
            for (oc, &bias) in bias.iter().enumerate() {
                // SAFETY: the plane of (b, oc) inside `out`; this task writes only its
                // tile rows of it.
                let plane = unsafe { dst.get().add((b * o + oc) * oh * ow) };
                transform_outputs(m, o, oc, tw, rows.clone(), bias, (oh, ow), plane, &mut a);
            }
        });
    });
    out
}
