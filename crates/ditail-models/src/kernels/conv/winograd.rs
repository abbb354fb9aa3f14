//! Winograd's minimal filtering for 3x3 stride-1 convolutions on the CPU (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016,
//! <https://arxiv.org/abs/1509.09308>): F(m x m, 3x3) computes an m x m output tile from an
//! (m+2) x (m+2) input tile with (m+2)² multiplications per input channel instead of 9m².
//! Two tilings ([`Tile`]): F(2x2, 3x3), 16 per 4 outputs (2.25x fewer than direct), and
//! F(4x4, 3x3), 36 per 16 (4x fewer), with the interpolation points 0, ±1, ±2 (±1/2 in
//! the weights), whose f32 rounding stays within 1e-5 relative of the direct convolution
//! on the networks' layers (tested); larger tiles lose digits in f32 (ncnn; Lavin & Gray,
//! table 4).
//!
//! The weights are transformed (`U = G g Gᵀ`, (m+2)² matrices `[out, in]`) on every call.
//! Then, per block of output tiles, the input tiles are transformed (`V = Bᵀ d B`, (m+2)²
//! matrices `[in, tiles]`), the (m+2)² GEMMs `M = U·V` run ([`crate::kernels::product`]), and each
//! tile's output is `Aᵀ M A` plus the bias, written to NCHW. Each 2-D transform is the 1-D
//! one (the private `Tiling` trait) along rows, then along columns.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::kernels::out_ptr::OutPtr;
use crate::kernels::product::product;

/// Bytes of a block's transformed inputs and products (`(m+2)²·(in+out)·tiles` f32s):
/// about an L2 cache, so that the GEMMs of a block find their right operand there.
const BLOCK_BYTES: usize = 2 << 20;

thread_local! {
    /// Each worker's transformed inputs and GEMM products, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The calling thread's transformed weights, reused across calls: a new buffer each
    /// call (up to 105 MB for a 1280-channel layer) was faulted in and zeroed page by page.
    static WEIGHTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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

/// The output tile of a Winograd convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2x2, 3x3).
    F2,
    /// F(4x4, 3x3).
    F4,
}

/// One tiling's 1-D transforms, on arrays of the largest tile's size (F(2x2, 3x3) uses
/// the first 4 of 6 inputs and the first 2 of 4 outputs).
trait Tiling {
    /// Outputs per tile side (m).
    const M: usize;
    /// Inputs per tile side (m + 2).
    const A: usize = Self::M + 2;
    /// `G g`: a kernel row or column to the A transformed weights.
    fn weight(g: [f32; 3]) -> [f32; 6];
    /// `Bᵀ d`: A inputs to A transformed inputs.
    fn input(d: [f32; 6]) -> [f32; 6];
    /// `Aᵀ m`: A products to M outputs.
    fn output(m: [f32; 6]) -> [f32; 4];
}

/// F(2x2, 3x3): interpolation points 0, 1, -1 (and infinity).
struct F2;

impl Tiling for F2 {
    const M: usize = 2;

    fn weight([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
        [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2, 0.0, 0.0]
    }

    fn input([d0, d1, d2, d3, ..]: [f32; 6]) -> [f32; 6] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3, 0.0, 0.0]
    }

    fn output([m0, m1, m2, m3, ..]: [f32; 6]) -> [f32; 4] {
        [m0 + m1 + m2, m1 - m2 - m3, 0.0, 0.0]
    }
}

/// F(4x4, 3x3): interpolation points 0, 1, -1, 2, -2 (and infinity).
struct F4;

impl Tiling for F4 {
    const M: usize = 4;

    fn weight([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
        let (even, odd) = (g0 + g2, g1);
        let (even4, odd2) = (g0 / 24.0 + g2 / 6.0, g1 / 12.0);
        [
            g0 / 4.0,
            -(even + odd) / 6.0,
            -(even - odd) / 6.0,
            even4 + odd2,
            even4 - odd2,
            g2,
        ]
    }

    fn input([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
        let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
        [
            4.0 * d0 - 5.0 * d2 + d4,
            a + b,
            a - b,
            c + e,
            c - e,
            4.0 * d1 - 5.0 * d3 + d5,
        ]
    }

    fn output([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        [
            m0 + s12 + s34,
            d12 + 2.0 * d34,
            s12 + 4.0 * s34,
            d12 + 8.0 * d34 + m5,
        ]
    }
}

/// Kernels a task of [`transform_weights`] transforms at once: their A² values go to a
/// local buffer first, then out a row per matrix, so that the writes run in long
/// contiguous stretches instead of A² interleaved streams.
const WEIGHT_CHUNK: usize = 128;

/// `U = G g Gᵀ` for every (out, in) pair, as A² row-major `[out, in]` matrices, into `u`
/// (resized; its old contents are overwritten), on the thread pool.
fn transform_weights<T: Tiling>(weights: &[f32], o: usize, c: usize, u: &mut Vec<f32>) {
    let (a, pairs) = (T::A, o * c);
    u.resize(a * a * pairs, 0.0);
    let dst = OutPtr::new(u);
    weights
        .par_chunks(9 * WEIGHT_CHUNK)
        .enumerate()
        .for_each(|(chunk, kernels)| {
            let mut local = [[0f32; WEIGHT_CHUNK]; 36];
            let count = kernels.len() / 9;
            for (k, g) in kernels.chunks_exact(9).enumerate() {
                // G g: A x 3, a column at a time.
                let mut t = [[0f32; 3]; 6];
                for j in 0..3 {
                    let col = T::weight([g[j], g[3 + j], g[6 + j]]);
                    for i in 0..a {
                        t[i][j] = col[i];
                    }
                }
                // (G g) Gᵀ: A x A, a row at a time.
                for (i, r) in t.iter().take(a).enumerate() {
                    for (j, v) in T::weight(*r).into_iter().take(a).enumerate() {
                        local[i * a + j][k] = v;
                    }
                }
            }
            for (xi, values) in local.iter().take(a * a).enumerate() {
                // SAFETY: matrix xi's entries of this chunk's pairs, inside `u`; chunks
                // are disjoint.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        values.as_ptr(),
                        dst.get().add(xi * pairs + chunk * WEIGHT_CHUNK),
                        count,
                    );
                }
            }
        });
}

/// `V = Bᵀ d B` of the tile rows `rows` of one image, every channel: A² row-major
/// matrices `[c, rows.len()·tw]` in `v`. Works a tile row at a time on whole input rows, so
/// that every loop runs over contiguous memory: the A rows of `Bᵀ d` first (each a
/// combination of padded input rows), then `(Bᵀ d) B` along them.
fn transform_inputs<T: Tiling>(
    image: &[f32],
    s: &Shape,
    tw: usize,
    rows: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let (a, m) = (T::A, T::M);
    let (c, h, w) = (s.c, s.h, s.w);
    let nt = rows.len() * tw;
    // Padded input rows: column q holds input column q - left (zero outside). Six rows
    // whatever the tile, so that the row pass reads a full array.
    let width = m * tw + 2;
    let mut d = vec![0f32; 6 * width];
    let mut bt = vec![0f32; 6 * width];
    for ci in 0..c {
        let plane = &image[ci * h * w..][..h * w];
        for ty in rows.clone() {
            for (i, row) in d.chunks_exact_mut(width).take(a).enumerate() {
                row.fill(0.0);
                let Some(iy) = (m * ty + i).checked_sub(s.top).filter(|&r| r < h) else {
                    continue;
                };
                let src = &plane[iy * w..][..w];
                // Columns q in [left, left + w) ∩ [0, width).
                let end = (s.left + w).min(width);
                if s.left < end {
                    row[s.left..end].copy_from_slice(&src[..end - s.left]);
                }
            }
            // Bᵀ d, a column of the six rows at a time (contiguous in q for each row).
            {
                let dr: [&[f32]; 6] = std::array::from_fn(|k| &d[k * width..][..width]);
                let mut out: Vec<&mut [f32]> = bt.chunks_exact_mut(width).collect();
                for q in 0..width {
                    let col = T::input(std::array::from_fn(|k| dr[k][q]));
                    for (row, value) in out.iter_mut().zip(col).take(a) {
                        row[q] = value;
                    }
                }
            }
            let base = (ty - rows.start) * tw;
            for (i, r) in bt.chunks_exact(width).take(a).enumerate() {
                for tx in 0..tw {
                    let q = m * tx;
                    let row = T::input(std::array::from_fn(|j| if j < a { r[q + j] } else { 0.0 }));
                    for (j, value) in row.into_iter().take(a).enumerate() {
                        v[((i * a + j) * c + ci) * nt + base + tx] = value;
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A + bias` for the tile rows `rows` of one image and output channel `oc`,
/// written to its output plane (`oh x ow`), cropped. `prod` holds the A² GEMM products
/// `[o, rows.len()·tw]`; `scratch` at least `M·A·tw` values.
#[allow(clippy::too_many_arguments)]
fn transform_outputs<T: Tiling>(
    prod: &[f32],
    o: usize,
    oc: usize,
    tw: usize,
    rows: std::ops::Range<usize>,
    bias: f32,
    (oh, ow): (usize, usize),
    plane: *mut f32,
    scratch: &mut [f32],
) {
    let (a, m) = (T::A, T::M);
    let nt = rows.len() * tw;
    for ty in rows.clone() {
        let base = (ty - rows.start) * tw;
        let at = |xi: usize| &prod[(xi * o + oc) * nt + base..][..tw];
        // Aᵀ M: M rows of A values per tile, row r at scratch[r·A·tw + j·tw + tx].
        for j in 0..a {
            let col: [&[f32]; 6] = std::array::from_fn(|i| at(if i < a { i * a + j } else { j }));
            for tx in 0..tw {
                let y = T::output(std::array::from_fn(
                    |i| if i < a { col[i][tx] } else { 0.0 },
                ));
                for (r, value) in y.into_iter().take(m).enumerate() {
                    scratch[(r * a + j) * tw + tx] = value;
                }
            }
        }
        for r in 0..m {
            let y = m * ty + r;
            if y >= oh {
                break;
            }
            let row = &scratch[r * a * tw..][..a * tw];
            // SAFETY: row y of this task's output plane, `ow` values.
            let out = unsafe { std::slice::from_raw_parts_mut(plane.add(y * ow), ow) };
            for tx in 0..tw {
                let vals = T::output(std::array::from_fn(|j| {
                    if j < a { row[j * tw + tx] } else { 0.0 }
                }));
                let x = m * tx;
                for (k, value) in vals.into_iter().take(m.min(ow - x)).enumerate() {
                    out[x + k] = value + bias;
                }
            }
        }
    }
}

/// The convolution with `tile`: `x` `[n, c, h, w]`, `weights` `[o, c, 3, 3]`, `bias`
/// `[o]`, all contiguous; returns `[n, o, oh, ow]`.
pub fn conv3x3(x: &[f32], weights: &[f32], bias: &[f32], s: &Shape, tile: Tile) -> Vec<f32> {
    match tile {
        Tile::F2 => conv3x3_with::<F2>(x, weights, bias, s),
        Tile::F4 => conv3x3_with::<F4>(x, weights, bias, s),
    }
}

fn conv3x3_with<T: Tiling>(x: &[f32], weights: &[f32], bias: &[f32], s: &Shape) -> Vec<f32> {
    let (o, c) = (s.o, s.c);
    WEIGHTS.with_borrow_mut(|u| {
        transform_weights::<T>(weights, o, c, u);
        conv3x3_transformed::<T>(x, u, bias, s)
    })
}

/// The convolution with the weights transformed (`u`, A² `[o, c]` matrices).
fn conv3x3_transformed<T: Tiling>(x: &[f32], u: &[f32], bias: &[f32], s: &Shape) -> Vec<f32> {
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
    let (a, m) = (T::A, T::M);
    let aa = a * a;
    let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
    // Blocks of whole tile rows, about BLOCK_BYTES of transformed inputs and products.
    let per_block = (BLOCK_BYTES / (aa * 4 * (c + o))).clamp(8, 256);
    let rows_per_block = per_block.div_ceil(tw).clamp(1, th);
    let blocks = th.div_ceil(rows_per_block);
    let len = n * o * oh * ow;
    // Every value is written below (the tiles cover each plane), so the buffer is not
    // zeroed first: zeroing fresh pages was a tenth of a U-Net forward in `perf`.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = OutPtr::spare(&mut out);
    (0..n * blocks).into_par_iter().for_each(|job| {
        let (b, blk) = (job / blocks, job % blocks);
        let rows = blk * rows_per_block..((blk + 1) * rows_per_block).min(th);
        let nt = rows.len() * tw;
        let image = &x[b * c * h * w..][..c * h * w];
        SCRATCH.with_borrow_mut(|(v, prod)| {
            v.resize(aa * c * nt, 0.0);
            prod.resize(aa * o * nt, 0.0);
            transform_inputs::<T>(image, s, tw, rows.clone(), v);
            // M[ξ] = U[ξ] V[ξ]: [o, c] x [c, nt].
            for xi in 0..aa {
                // SAFETY: u holds A² [o, c] matrices, v A² [c, nt], prod A² [o, nt].
                unsafe {
                    product(
                        &u[xi * o * c..][..o * c],
                        c,
                        [o, c, nt],
                        v.as_ptr().add(xi * c * nt),
                        [nt, 1],
                        prod.as_mut_ptr().add(xi * o * nt),
                        nt,
                        false,
                    );
                }
            }
            let mut scratch = vec![0f32; m * a * tw];
            for (oc, &bias) in bias.iter().enumerate() {
                // SAFETY: the plane of (b, oc) inside `out`; this task writes only its
                // tile rows of it.
                let plane = unsafe { dst.get().add((b * o + oc) * oh * ow) };
                transform_outputs::<T>(
                    prod,
                    o,
                    oc,
                    tw,
                    rows.clone(),
                    bias,
                    (oh, ow),
                    plane,
                    &mut scratch,
                );
            }
        });
    });
    // SAFETY: the blocks' tile rows cover every row of every (image, channel) plane, and
    // each row's tiles every column (`transform_outputs` writes all `ow` of them).
    unsafe { out.set_len(len) };
    out
}
