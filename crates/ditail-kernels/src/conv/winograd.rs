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
//! Work runs in chunks of tiles (about `CHUNK_BYTES` of transformed inputs and at least one
//! sub-block, whole tile rows of the batch's images): first the chunk's input tiles are transformed (`V = Bᵀ d B`,
//! A² matrices `[in, tiles]`, one task per tile row, written in the 512-bit product's panel
//! layout so that the products read them without packing); then one task per block of
//! output channels (and group of sub-blocks, where the blocks are too few for the threads)
//! transforms those channels' weights (`U = G g Gᵀ`, A² matrices `[out,
//! in]`), runs the A² GEMMs `M = U·V` ([`crate::product`]) a sub-block of
//! `SUB_TILES` tiles at a time, and writes each tile's output `Aᵀ M A` plus the bias to
//! NCHW. Each 2-D transform is the 1-D one (the private `Tiling` trait) along rows, then
//! along columns.
//!
//! Why this order (issue 14, `examples/bench_winograd`): the transformed weights are
//! 1.8x (F2) to 4x (F4) the 3x3 weights, up to 210 MB for one of SD1.5's 16x16 layers, so
//! they are neither kept nor shared: when every block of tiles read the whole layer's, the
//! 16x16 and 32x32 layers were bound by that traffic (SD1.5's 3 x 1280 -> 1280 at 16x16,
//! F(2x2): 144 ms, now 77; F(4x4) lost everywhere below 64x64 and now wins from 48 tiles).
//! A block of output channels reads its own weights once per chunk, and the chunk's
//! transformed inputs, shared by every task, stay within the L3 cache. What this order
//! loses: layers with few output channels and many tiles (the VAE decoder's 128-channel
//! layers at 256x256), where the old order kept each block's transformed inputs in L2 and
//! the small transformed weights were cheap to share: the VAE decode's Winograd layers
//! measured ~10% slower (a direct kernel for them was slower still).

use std::cell::RefCell;

use rayon::prelude::*;

use crate::out_ptr::OutPtr;
use crate::product::product;

thread_local! {
    /// Each worker's transformed weights (of its block of output channels) and products,
    /// reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The calling thread's transformed inputs of a chunk of tiles, reused across calls:
    /// a new buffer each call was faulted in and zeroed page by page.
    static INPUTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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

/// Kernels [`transform_weights`] transforms at once: their A² values go to a local buffer
/// first, then out a row per matrix, so that the writes run in long contiguous stretches
/// instead of A² interleaved streams.
const WEIGHT_CHUNK: usize = 128;

/// `U = G g Gᵀ` for each of the `pairs` 3x3 kernels of `weights`, as A² matrices of
/// `pairs` values each (matrix ξ at `u[ξ·pairs..]`, the kernels in their order), on the
/// calling thread.
fn transform_weights<T: Tiling>(weights: &[f32], pairs: usize, u: &mut [f32]) {
    let a = T::A;
    for (chunk, kernels) in weights[..9 * pairs].chunks(9 * WEIGHT_CHUNK).enumerate() {
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
            u[xi * pairs + chunk * WEIGHT_CHUNK..][..count].copy_from_slice(&values[..count]);
        }
    }
}

/// `V = Bᵀ d B` of tile row `ty` of one image, every channel: `put(ξ, channel, values)`
/// with the row's `tw` tiles' values of matrix ξ. Works on whole input rows, so that every
/// loop runs over contiguous memory: the A rows of `Bᵀ d` first (each a combination of
/// padded input rows), then `(Bᵀ d) B` along them, into a local `[A², tw]` block.
fn transform_inputs<T: Tiling>(
    image: &[f32],
    s: &Shape,
    tw: usize,
    ty: usize,
    mut put: impl FnMut(usize, usize, &[f32]),
) {
    let (a, m) = (T::A, T::M);
    let (c, h, w) = (s.c, s.h, s.w);
    // Padded input rows: column q holds input column q - left (zero outside). Six rows
    // whatever the tile, so that the row pass reads a full array.
    let width = m * tw + 2;
    let mut d = vec![0f32; 6 * width];
    let mut bt = vec![0f32; 6 * width];
    let mut values = vec![0f32; a * a * tw];
    // Columns q in [left, left + w) ∩ [0, width) hold input columns.
    let end = (s.left + w).min(width);
    for ci in 0..c {
        let plane = &image[ci * h * w..][..h * w];
        for (i, row) in d.chunks_exact_mut(width).take(a).enumerate() {
            match (m * ty + i).checked_sub(s.top).filter(|&r| r < h) {
                Some(iy) if s.left < end => {
                    row[..s.left].fill(0.0);
                    row[s.left..end].copy_from_slice(&plane[iy * w..][..end - s.left]);
                    row[end..].fill(0.0);
                }
                _ => row.fill(0.0),
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
        for (i, r) in bt.chunks_exact(width).take(a).enumerate() {
            for tx in 0..tw {
                let q = m * tx;
                let row = T::input(std::array::from_fn(|j| if j < a { r[q + j] } else { 0.0 }));
                for (j, value) in row.into_iter().take(a).enumerate() {
                    values[(i * a + j) * tw + tx] = value;
                }
            }
        }
        for (xi, row) in values.chunks_exact(tw).enumerate() {
            put(xi, ci, row);
        }
    }
}

/// `Y = Aᵀ M A + bias` of tile row `ty` for output channel `oc` of the products, written to
/// its output plane (`oh x ow`), cropped. `prod` holds A² products `[o, ld]` (matrix ξ at
/// `ξ·o·ld`), the row's tiles from column 0; `scratch` at least `M·A·tw` values.
#[allow(clippy::too_many_arguments)]
fn transform_outputs<T: Tiling>(
    prod: &[f32],
    [o, ld]: [usize; 2],
    oc: usize,
    tw: usize,
    ty: usize,
    bias: f32,
    (oh, ow): (usize, usize),
    plane: *mut f32,
    scratch: &mut [f32],
) {
    let (a, m) = (T::A, T::M);
    let at = |xi: usize| &prod[(xi * o + oc) * ld..][..tw];
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

/// The convolution with `tile`: `x` `[n, c, h, w]`, `weights` `[o, c, 3, 3]`, `bias`
/// `[o]`, all contiguous; returns `[n, o, oh, ow]`.
pub fn conv3x3(x: &[f32], weights: &[f32], bias: &[f32], s: &Shape, tile: Tile) -> Vec<f32> {
    match tile {
        Tile::F2 => conv3x3_with::<F2>(x, weights, bias, s),
        Tile::F4 => conv3x3_with::<F4>(x, weights, bias, s),
    }
}

/// Where the transformed inputs of a chunk of tiles lie: per (ξ, sub-block) a `[c, cols]`
/// matrix, in the 512-bit product's panels where it runs (each [`PANEL`] tiles' `c` rows
/// of [`PANEL`] values, so the products read them without packing), row-major elsewhere.
#[derive(Clone, Copy)]
struct Inputs {
    panels: bool,
    c: usize,
    /// Columns per sub-block: its tiles, rounded up to whole panels.
    cols: usize,
    /// Sub-blocks per chunk (the stride of ξ).
    subs: usize,
}

impl Inputs {
    /// The first value of (ξ, sub-block)'s matrix.
    fn block(&self, xi: usize, sub: usize) -> usize {
        (xi * self.subs + sub) * self.c * self.cols
    }

    /// Value (channel, tile) of a block, from its first.
    fn at(&self, ci: usize, t: usize) -> usize {
        match self.panels {
            true => (t / PANEL) * self.c * PANEL + ci * PANEL + t % PANEL,
            false => ci * self.cols + t,
        }
    }

    /// `values` as channel `ci` of the tiles from `t0` of the block at `block`, copied a
    /// run at a time (the tiles within a panel are contiguous).
    ///
    /// # Safety
    /// `block` points at a block of this layout, and those values are the caller's to
    /// write.
    unsafe fn write(&self, block: *mut f32, ci: usize, t0: usize, values: &[f32]) {
        let (mut t, mut rest) = (t0, values);
        while !rest.is_empty() {
            let run = match self.panels {
                true => (PANEL - t % PANEL).min(rest.len()),
                false => rest.len(),
            };
            // SAFETY: the caller's promise.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), block.add(self.at(ci, t)), run) };
            (t, rest) = (t + run, &rest[run..]);
        }
    }
}

/// Tiles per sub-block: the products' columns, whose A² results for a task's output
/// channels (`A²·rows·tiles` f32) stay in L2 until the output transform reads them.
const SUB_TILES: usize = 128;
/// Bytes of transformed inputs per chunk (a chunk's tiles go through the products
/// together, every task reading them: the L3 cache).
const CHUNK_BYTES: usize = 16 << 20;
/// Bytes of a task's products of one sub-block (`A²·rows·cols` f32): the L2 cache.
const PROD_BYTES: usize = 512 << 10;
/// Output rows a task's block of channels is a multiple of (the 512-bit kernel's strip).
const ROWS: usize = 12;
/// Columns of a panel of transformed inputs (the 512-bit kernel's).
const PANEL: usize = 32;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(PANEL == crate::sgemm512::NR && ROWS == crate::sgemm512::MR);

fn conv3x3_with<T: Tiling>(x: &[f32], weights: &[f32], bias: &[f32], s: &Shape) -> Vec<f32> {
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
    // Tile rows of all images in sequence (row g: image g / th, row g % th), in
    // sub-blocks of whole rows, chunks of whole sub-blocks.
    let rows_total = n * th;
    let sub_rows = (SUB_TILES / tw).clamp(1, rows_total);
    let cols = (sub_rows * tw).next_multiple_of(PANEL);
    let per_sub = aa * c * cols;
    let subs_total = rows_total.div_ceil(sub_rows);
    let subs = (CHUNK_BYTES / 4 / per_sub).clamp(1, subs_total);
    let layout = Inputs {
        panels: crate::product::wide(),
        c,
        cols,
        subs,
    };
    // Blocks of output channels: products of a sub-block within PROD_BYTES, and enough
    // blocks for every thread where there are enough channels.
    let threads = rayon::current_num_threads();
    let by_cache = PROD_BYTES / (4 * aa * cols) / ROWS * ROWS;
    let by_threads = o.div_ceil(4 * threads).next_multiple_of(ROWS);
    let ob = by_cache.min(by_threads).max(ROWS);
    let len = n * o * oh * ow;
    // Every value is written below (the tiles cover each plane), so the buffer is not
    // zeroed first: zeroing fresh pages was a tenth of a U-Net forward in `perf`.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = OutPtr::spare(&mut out);
    let run = |v: &mut Vec<f32>| {
        // Zeroed when it grows. The panels' padding columns are never written here: they
        // hold zeros or an earlier call's values, and each column of a product depends on
        // its own column of `v` only, so they reach no output.
        if v.len() < subs * per_sub {
            v.resize(subs * per_sub, 0.0);
        }
        for first in (0..subs_total).step_by(subs) {
            let (row0, row1) = (
                first * sub_rows,
                ((first + subs) * sub_rows).min(rows_total),
            );
            let vp = OutPtr::new(v);
            (row0..row1).into_par_iter().for_each(|g| {
                let (b, ty) = (g / th, g % th);
                let (sub, t0) = ((g - row0) / sub_rows, ((g - row0) % sub_rows) * tw);
                let image = &x[b * c * h * w..][..c * h * w];
                transform_inputs::<T>(image, s, tw, ty, |xi, ci, row| {
                    // SAFETY: the block (ξ, sub) lies inside the chunk's buffer (subs·per_sub
                    // values), and its tiles t0.. are this tile row's alone.
                    unsafe { layout.write(vp.get().add(layout.block(xi, sub)), ci, t0, row) };
                });
            });
            let v: &[f32] = v;
            // Tasks: a block of output channels and a group of the chunk's sub-blocks;
            // several groups where there are too few blocks for the threads (the VAE's
            // conv_out has 3 channels, its 256x256 layers 128). Each task transforms its
            // block's weights, so a block's are transformed once per group: only where the
            // blocks, and so the weights, are few.
            let blocks = o.div_ceil(ob);
            let chunk_subs = (row1 - row0).div_ceil(sub_rows);
            let groups = (4 * threads).div_ceil(blocks).min(chunk_subs);
            (0..blocks * groups).into_par_iter().for_each(|task| {
                let (blk, group) = (task % blocks, task / blocks);
                let (o0, o1) = (blk * ob, ((blk + 1) * ob).min(o));
                let rows = o1 - o0;
                SCRATCH.with_borrow_mut(|(u, prod)| {
                    u.resize(aa * rows * c, 0.0);
                    transform_weights::<T>(&weights[o0 * c * 9..o1 * c * 9], rows * c, u);
                    prod.resize(aa * rows * cols, 0.0);
                    let mut scratch = vec![0f32; m * a * tw];
                    for sub in group * chunk_subs / groups..(group + 1) * chunk_subs / groups {
                        let g0 = row0 + sub * sub_rows;
                        let g1 = (g0 + sub_rows).min(row1);
                        let nt = (g1 - g0) * tw;
                        for xi in 0..aa {
                            // SAFETY: u holds A² [rows, c] matrices, the block (ξ, sub) of
                            // v a [c, nt] matrix in `layout`, prod A² [rows, cols].
                            unsafe {
                                multiply(
                                    &u[xi * rows * c..][..rows * c],
                                    [rows, c, nt],
                                    &v[layout.block(xi, sub)..],
                                    layout,
                                    prod.as_mut_ptr().add(xi * rows * cols),
                                )
                            };
                        }
                        for g in g0..g1 {
                            let (b, ty) = (g / th, g % th);
                            for oc in 0..rows {
                                // SAFETY: the plane of (b, o0 + oc) inside `out`; only this
                                // task writes its channels.
                                let plane = unsafe { dst.get().add((b * o + o0 + oc) * oh * ow) };
                                transform_outputs::<T>(
                                    &prod[(g - g0) * tw..],
                                    [rows, cols],
                                    oc,
                                    tw,
                                    ty,
                                    bias[o0 + oc],
                                    (oh, ow),
                                    plane,
                                    &mut scratch,
                                );
                            }
                        }
                    }
                });
            });
        }
    };
    match INPUTS.try_with(|v| v.try_borrow_mut().map(|mut v| run(&mut v))) {
        Ok(Ok(())) => {}
        // This thread's buffer is in use (a task of an outer call on the same thread).
        _ => run(&mut Vec::new()),
    }
    // SAFETY: the chunks' tile rows cover every row of every (image, channel) plane, and
    // each row's tiles every column (`transform_outputs` writes all `ow` of them).
    unsafe { out.set_len(len) };
    out
}

/// `c = u v` for one (ξ, sub-block): `u` `[rows, k]`, `v` that block's `[k, n]` matrix as
/// `layout` lays it out, `c` rows of `layout.cols` values.
///
/// # Safety
/// `c` points at `rows` rows of that stride that no other thread touches during the call.
unsafe fn multiply(u: &[f32], [rows, k, n]: [usize; 3], v: &[f32], layout: Inputs, c: *mut f32) {
    assert!(n <= layout.cols && v.len() >= k * layout.cols);
    #[cfg(target_arch = "x86_64")]
    if layout.panels {
        use crate::sgemm512::single::{Right, Start, gemm};
        // SAFETY: the caller's promise; panels exist only where the 512-bit kernel runs;
        // v holds the block's panels of k rows each.
        unsafe {
            gemm(
                u,
                k,
                [rows, k, n],
                Right::Panels(v.as_ptr(), k * PANEL),
                c,
                layout.cols,
                Start::Bias(None),
            )
        };
        return;
    }
    // SAFETY: the caller's promise; v holds k rows of `cols` values.
    unsafe {
        product(
            u,
            k,
            [rows, k, n],
            v.as_ptr(),
            [layout.cols, 1],
            c,
            layout.cols,
            false,
        )
    };
}
