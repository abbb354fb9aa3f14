//! The CPU convolution: a direct implicit GEMM on NCHW f32 tensors (see the module above
//! for why).
//!
//! For each batch element and tile of output rows, the tile's im2col matrix `[in*kh*kw,
//! positions]` is built row by row (each row a shifted, zero-padded copy of input rows:
//! plain copies when the stride is 1) and multiplied by the weights `[out, in*kh*kw]`, read
//! in place, into the output's NCHW rows `[out, positions]`, which start as the bias. Tiles
//! (and, when a batch-1 layer has too few tiles for the threads, slices of the output
//! channels) run in parallel on rayon's pool, one single-threaded GEMM each
//! ([`crate::product`]), so there is no nested parallelism. A 1x1 stride-1 convolution
//! without padding skips im2col: its right operand is the image's rows themselves. Where
//! every image is one tile and the batch has several (the U-Net's 8x8 and 4x4 layers under
//! classifier-free guidance), the images' im2col matrices go side by side into one product
//! (`images_together`), so that the weights are read once, not once per image.

use std::cell::RefCell;

use burn::backend::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::out_ptr::OutPtr;
use crate::product::product;
use crate::timing::{Kind, timed};

/// Output positions per tile: enough columns for the GEMM's microkernel to stream, few
/// enough that a tile's im2col rows (`in*kh*kw` x this) stay near the L2 cache.
const TILE_POSITIONS: usize = 256;
/// The fewest output channels a parallel slice gets (below, the GEMM's packing dominates).
const MIN_SLICE_CHANNELS: usize = 64;

/// The smallest output side where Winograd F(2x2, 3x3) beats the direct kernel: below it
/// a batch-1 layer has too few tiles to keep the GEMMs busy (ncnn's rule on x86 is the
/// same: Winograd from 16x16 up, direct at 8x8 and below).
const WINOGRAD_MIN_SIDE: usize = 16;

/// The fewest output positions (batch x height x width) where Winograd beats the direct
/// kernel. Measured with `examples/bench_winograd` (2 cores of an AMD EPYC (Zen 4), SD1.5's
/// layer shapes, the Winograd kernel that transforms each block of output channels'
/// weights in its own task): 1280 channels at 16x16, batch 1 (256 positions): F(2x2) 31 ms,
/// direct 46; at 8x8, batch 3 (192): 30 and 32, even; at 8x8, batch 1: 20 and 11.
const WINOGRAD_MIN_POSITIONS: usize = 256;

/// The Winograd tile for outputs of `out` over `batch` images: F(4x4, 3x3) where that
/// makes at least [`F4_MIN_TILES`] tiles, F(2x2, 3x3) below.
fn winograd_tile(out: [usize; 2], batch: usize) -> super::winograd::Tile {
    if batch * out[0].div_ceil(4) * out[1].div_ceil(4) >= F4_MIN_TILES {
        super::winograd::Tile::F4
    } else {
        super::winograd::Tile::F2
    }
}

/// The fewest F(4x4, 3x3) tiles over the batch where it beats F(2x2, 3x3): fewer make
/// the products too narrow for the microkernel's 32-column panels. Measured with
/// `examples/bench_winograd` (2 cores of an AMD EPYC (Zen 4), SD1.5's layer shapes),
/// F(2x2) / F(4x4) in ms: 16x16 outputs, 1280 channels, batch 3 (48 tiles) 83 / 76, 2560
/// in 175 / 128; batch 1 (16 tiles) 31 / 39; at 32x32 (64 tiles a batch-1 image) 640
/// channels 23 / 18; at 64x64 3 x 960 -> 320 275 / 191; the VAE's 256 channels at 128x128
/// 89 / 62. (Before each task transformed its own channels' weights, the whole layer's
/// transformed weights were read by every block of tiles, and F(4x4)'s, 4x the 3x3
/// weights, lost below 64x64 outputs.)
const F4_MIN_TILES: usize = 48;

/// Whether a convolution goes to [`super::winograd`]: 3x3, stride 1, outputs of at least
/// [`WINOGRAD_MIN_SIDE`] a side and [`WINOGRAD_MIN_POSITIONS`] over the batch, more than a
/// few input channels (unless `DITAIL_CONV=direct`, see [`super::winograd_enabled`]).
fn winograd_pays(
    kernel: [usize; 2],
    stride: [usize; 2],
    out: [usize; 2],
    channels: usize,
    batch: usize,
) -> bool {
    kernel == [3, 3]
        && stride == [1, 1]
        && out.iter().all(|&s| s >= WINOGRAD_MIN_SIDE)
        && batch * out[0] * out[1] >= WINOGRAD_MIN_POSITIONS
        && channels >= 8
        && super::winograd_enabled()
}

/// Whether the kernel takes these tensors: f32, 4-D, kernels larger than 1x1 unless the
/// products run at 512 bits (elsewhere burn-flex runs 1x1 convolutions as one GEMM on NCHW
/// with the `gemm` crate, the same product ours would run).
pub fn supports(
    x: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    bias: &FloatTensor<Flex>,
) -> bool {
    let f32s = [x, weight, bias].iter().all(|t| t.dtype() == DType::F32);
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    f32s && xs.num_dims() == 4
        && ws.num_dims() == 4
        && xs[1] == ws[1]
        && (ws[2] * ws[3] > 1 || crate::product::wide())
        && bias.layout().shape().num_elements() == ws[0]
}

thread_local! {
    /// Each worker's im2col tile, reused across calls.
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The convolution (see [`super::ConvOps::ditail_conv2d`] for the arguments).
pub fn conv2d(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    bias: FloatTensor<Flex>,
    [sh, sw]: [usize; 2],
    [top, bottom, left, right]: [usize; 4],
) -> FloatTensor<Flex> {
    let (x, weight, bias) = (
        x.to_contiguous(),
        weight.to_contiguous(),
        bias.to_contiguous(),
    );
    let (xs, ws) = (x.layout().shape().clone(), weight.layout().shape().clone());
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, kh, kw) = (ws[0], ws[2], ws[3]);
    let oh = (h + top + bottom - kh) / sh + 1;
    let ow = (w + left + right - kw) / sw + 1;
    let xv: &[f32] = x.as_slice().expect("contiguous");
    let wv: &[f32] = weight.as_slice().expect("contiguous");
    let bv: &[f32] = bias.as_slice().expect("contiguous");
    if winograd_pays([kh, kw], [sh, sw], [oh, ow], c, n) {
        let shape = super::winograd::Shape {
            n,
            c,
            h,
            w,
            o,
            top,
            left,
            oh,
            ow,
        };
        super::WINOGRAD_LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let macs = n * o * oh * ow * c * 9;
        let out = timed(Kind::ConvWinograd, macs, || {
            super::winograd::conv3x3(xv, wv, bv, &shape, winograd_tile([oh, ow], n))
        });
        return Flex::float_from_data(TensorData::new(out, [n, o, oh, ow]), &Default::default());
    }

    let geometry = Geometry {
        n,
        o,
        oh,
        c,
        h,
        w,
        kh,
        kw,
        sh,
        sw,
        top,
        left,
        ow,
    };
    let kind = match kh * kw {
        1 => Kind::ConvPointwise,
        _ => Kind::ConvDirect,
    };
    let out = timed(kind, n * o * oh * ow * c * kh * kw, || {
        direct(xv, wv, bv, &geometry)
    });
    Flex::float_from_data(TensorData::new(out, [n, o, oh, ow]), &Default::default())
}

/// The direct convolution with the weights `weights` (`[o, c·kh·kw]`).
fn direct(x: &[f32], weights: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    let Geometry {
        n,
        c,
        h,
        w: iw,
        o,
        kh,
        kw,
        oh,
        ow,
        ..
    } = *g;
    let (k, p) = (c * kh * kw, oh * ow);
    // Each plane starts as its bias, written once (not zeroed first).
    let mut out = Vec::with_capacity(n * o * p);
    for i in 0..n * o {
        out.extend(std::iter::repeat_n(bias[i % o], p));
    }
    // A 1x1 stride-1 convolution without padding multiplies the image itself.
    let pointwise = k == c && g.sh == 1 && g.sw == 1 && g.top == 0 && g.left == 0 && p == h * iw;

    let rows_per_tile = TILE_POSITIONS.div_ceil(ow).clamp(1, oh);
    let tiles = oh.div_ceil(rows_per_tile);
    #[cfg(target_arch = "x86_64")]
    if tiles == 1 && n > 1 && crate::product::wide() {
        return images_together(x, weights, bias, g);
    }
    let threads = rayon::current_num_threads();
    // Batch-1 layers at low resolution have fewer tiles than threads: split the channels.
    let jobs = n * tiles;
    let slices = if jobs >= 2 * threads {
        1
    } else {
        (2 * threads)
            .div_ceil(jobs)
            .min(o.div_ceil(MIN_SLICE_CHANNELS))
            .max(1)
    };
    let per_slice = o.div_ceil(slices);
    let dst = OutPtr::new(&mut out);
    (0..jobs * slices).into_par_iter().for_each(|job| {
        let (slice, job) = (job % slices, job / slices);
        let (b, tile) = (job / tiles, job % tiles);
        let (r0, r1) = (tile * rows_per_tile, ((tile + 1) * rows_per_tile).min(oh));
        let (o0, o1) = (slice * per_slice, ((slice + 1) * per_slice).min(o));
        if o0 >= o1 {
            return;
        }
        let cols = (r1 - r0) * ow;
        let image = &x[b * c * h * iw..][..c * h * iw];
        // SAFETY: (both products) `dst` points into `out` (n·o·p elements): this task's
        // block starts at batch b, channel o0, position r0·ow and spans (o1-o0) rows of
        // stride p and `cols` columns, inside the buffer and disjoint from every other
        // task's; the right operand holds k rows of `cols` values.
        let c_block = unsafe { dst.get().add(b * o * p + o0 * p + r0 * ow) };
        if pointwise {
            let b_block = image[r0 * ow..].as_ptr();
            let w = &weights[o0 * k..];
            // SAFETY: `w` holds o1 - o0 rows of k weights, `b_block` k rows of `cols` values at stride p, `c_block` is this task's block (above).
            unsafe { product(w, k, [o1 - o0, k, cols], b_block, [p, 1], c_block, p, true) };
            return;
        }
        COL.with_borrow_mut(|col| {
            col.resize(k * cols, 0.0);
            g.im2col(image, r0..r1, 0..c, col, [cols, 0]);
            let w = &weights[o0 * k..];
            // SAFETY: as the pointwise case, with `col` (k rows of `cols` values, packed just above) as the right operand.
            unsafe {
                product(
                    w,
                    k,
                    [o1 - o0, k, cols],
                    col.as_ptr(),
                    [cols, 1],
                    c_block,
                    p,
                    true,
                )
            };
        });
    });
    out
}

/// The direct convolution of a batch of small planes (each image one tile of at most
/// [`TILE_POSITIONS`] outputs): the im2col matrices of as many images as fit in a tile
/// side by side, packed once into the 512-bit product's panels, multiplied by slices of the
/// output channels in parallel (each row starting as its bias), then scattered to NCHW.
///
/// Why: a tile per image multiplies every image by the whole weights, read from memory
/// each time (SD1.5's 8x8 and 4x4 layers: 1280 channels, 59 MB of 3x3 weights each, 64 or
/// 16 positions an image), and a tile's panels (at most 64 columns) give each weight
/// strip only two microkernel calls; side by side the weights are read once per tile of
/// images.
#[cfg(target_arch = "x86_64")]
fn images_together(x: &[f32], weights: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    use crate::sgemm512::single::{Right, Start, gemm, pack_panels, panels_len};
    use crate::sgemm512::{MR, NR};
    let Geometry {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        oh,
        ow,
        ..
    } = *g;
    let (k, p) = (c * kh * kw, oh * ow);
    let per_tile = (TILE_POSITIONS / p).max(1);
    let threads = rayon::current_num_threads();
    // Enough slices of whole microkernel strips for the threads to stay even.
    let per_slice = o
        .div_ceil(4 * threads)
        .max(MIN_SLICE_CHANNELS)
        .next_multiple_of(MR);
    let mut out: Vec<f32> = Vec::with_capacity(n * o * p);
    let dst = OutPtr::spare(&mut out);
    // The calling thread's buffers, reused across calls (fresh ones, tens of MB, cost page
    // faults); fresh ones when they are in use (a forward inside a rayon task whose thread
    // took another's convolution while waiting).
    let mut fresh = ImageBuffers::default();
    IMAGES.with(|cell| {
        let mut held = cell.try_borrow_mut();
        let ImageBuffers {
            col,
            panels,
            product,
        } = match held {
            Ok(ref mut buffers) => &mut **buffers,
            Err(_) => &mut fresh,
        };
        for b0 in (0..n).step_by(per_tile) {
            let images = per_tile.min(n - b0);
            let cols = images * p;
            col.resize(k * cols, 0.0);
            col.par_chunks_mut(kh * kw * cols)
                .enumerate()
                .for_each(|(ci, rows)| {
                    for i in 0..images {
                        let image = &x[(b0 + i) * c * h * w..][..c * h * w];
                        g.im2col(image, 0..oh, ci..ci + 1, rows, [cols, i * p]);
                    }
                });
            panels.resize(panels_len([k, cols]), 0.0);
            // One panel of NR columns per task (packing on one thread idled the other).
            let col: &[f32] = col;
            panels
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(pi, panel)| {
                    let c0 = pi * NR;
                    // SAFETY: columns c0.. of the k x cols matrix in `col` (rows of stride
                    // cols).
                    unsafe {
                        pack_panels(col[c0..].as_ptr(), [cols, 1], [k, NR.min(cols - c0)], panel)
                    };
                });
            let panels: &[f32] = panels;
            product.resize(o * cols, 0.0);
            let into = OutPtr::new(product);
            (0..o.div_ceil(per_slice))
                .into_par_iter()
                .for_each(|slice| {
                    let (o0, o1) = (slice * per_slice, ((slice + 1) * per_slice).min(o));
                    // Rows start as their bias, as in `direct` (the same sums in the same
                    // order: a batch's images equal each image alone, bit for bit).
                    for (oc, &b) in (o0..o1).zip(&bias[o0..o1]) {
                        // SAFETY: row oc of `product` (cols values), this task's only.
                        let row = unsafe { into.get().add(oc * cols) };
                        // SAFETY: j < cols: inside row oc, this task's only (above).
                        (0..cols).for_each(|j| unsafe { row.add(j).write(b) });
                    }
                    // SAFETY: AVX-512 (the wide product is on); the panels hold the k x cols
                    // matrix; rows o0..o1 of `product` (stride cols) are this task's only.
                    unsafe {
                        gemm(
                            &weights[o0 * k..],
                            k,
                            [o1 - o0, k, cols],
                            Right::Panels(panels.as_ptr(), k * NR),
                            into.get().add(o0 * cols),
                            cols,
                            Start::Accumulate,
                        )
                    };
                    for oc in o0..o1 {
                        for i in 0..images {
                            // SAFETY: the values this task's product wrote above.
                            let src = unsafe {
                                std::slice::from_raw_parts(into.get().add(oc * cols + i * p), p)
                            };
                            // SAFETY: (image b0 + i, channel oc)'s plane of `out`, this task's
                            // only; its spare capacity holds n·o·p values.
                            let plane = unsafe { dst.get().add(((b0 + i) * o + oc) * p) };
                            // SAFETY: `src` holds p values and `plane` has room for p (above); they are different buffers.
                            unsafe { plane.copy_from_nonoverlapping(src.as_ptr(), p) };
                        }
                    }
                });
        }
    });
    // SAFETY: the tiles of images cover the batch and their slices every channel, each
    // writing all p values of its planes.
    unsafe { out.set_len(n * o * p) };
    out
}

/// [`images_together`]'s im2col matrix, its panels and the product before the scatter.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct ImageBuffers {
    col: Vec<f32>,
    panels: Vec<f32>,
    product: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The calling thread's [`ImageBuffers`].
    static IMAGES: RefCell<ImageBuffers> = RefCell::new(ImageBuffers::default());
}

/// The convolution's sizes, and where each output position reads the input.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    o: usize,
    oh: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    top: usize,
    left: usize,
    ow: usize,
}

impl Geometry {
    /// Fills `col` with the input values each output position of `rows` multiplies by the
    /// weights of input channels `channels`: row ((ci - channels.start)·kh + ky)·kw + kx of
    /// `col` (rows of stride `ld`), from column `at` on, `rows.len()*ow` values; zero in
    /// the padding.
    fn im2col(
        &self,
        image: &[f32],
        rows: std::ops::Range<usize>,
        channels: std::ops::Range<usize>,
        col: &mut [f32],
        [ld, at]: [usize; 2],
    ) {
        let cols = rows.len() * self.ow;
        let mut chunks = col.chunks_mut(ld);
        for ci in channels {
            let plane = &image[ci * self.h * self.w..][..self.h * self.w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = &mut chunks.next().expect("k rows")[at..at + cols];
                    for (y, dst) in rows.clone().zip(row.chunks_exact_mut(self.ow)) {
                        // Input row of this output row and kernel row, if inside the image.
                        let iy = (y * self.sh + ky)
                            .checked_sub(self.top)
                            .filter(|&r| r < self.h);
                        match iy {
                            None => dst.fill(0.0),
                            Some(iy) => self.row(&plane[iy * self.w..][..self.w], kx, dst),
                        }
                    }
                }
            }
        }
    }

    /// One output row's inputs for kernel column `kx` from input row `src`.
    fn row(&self, src: &[f32], kx: usize, dst: &mut [f32]) {
        // Output x reads input x·sw + kx - left: valid for x in [lo, hi).
        let lo = self.left.saturating_sub(kx).div_ceil(self.sw);
        let hi = (self.w + self.left)
            .saturating_sub(kx)
            .div_ceil(self.sw)
            .min(self.ow);
        if lo >= hi {
            dst.fill(0.0);
            return;
        }
        dst[..lo].fill(0.0);
        dst[hi..].fill(0.0);
        let first = lo * self.sw + kx - self.left;
        if self.sw == 1 {
            dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
        } else {
            for (i, d) in dst[lo..hi].iter_mut().enumerate() {
                *d = src[first + i * self.sw];
            }
        }
    }
}
