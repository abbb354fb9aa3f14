//! Pillow's separable resampling, on 8-bit RGB images (exactly as `Image.resize`) and on
//! float planes (as PyTorch's antialiased `interpolate`, which computes the same filter
//! taps in floating point without rounding to 8 bits between the passes).
//!
//! Each output pixel takes the input pixels under the filter centred on it, the filter
//! widened by the downscale factor (the antialiasing), weights normalised to sum 1. On 8-bit
//! images the weights are 22-bit fixed point, the horizontal pass runs first and each pass
//! rounds and clamps to 8 bits. See Pillow's
//! [`src/libImaging/Resample.c`](https://github.com/python-pillow/Pillow/blob/d374015504df2c7f0316154deade1bc1fa5075df/src/libImaging/Resample.c)
//! and PyTorch's [`UpSampleKernel.cpp`](https://github.com/pytorch/pytorch/blob/v2.5.0/aten/src/ATen/native/cpu/UpSampleKernel.cpp)
//! (`_upsample_bicubic2d_aa`, whose bicubic uses Pillow's a = -0.5).
//!
//! PyTorch's interpolation without antialiasing (a fixed number of taps whatever the
//! scale) is here too, for the metrics that use it: [`resize_bilinear_f32`],
//! [`resize_bicubic_f32`] (`cpu_upsample_generic` in the same file, weights from
//! [`UpSample.h`](https://github.com/pytorch/pytorch/blob/v2.5.0/aten/src/ATen/native/UpSample.h)).

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Triangle (`Image.BILINEAR`), support 1.
    Bilinear,
    /// Keys cubic with a = -0.5 (`Image.BICUBIC`), support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Normalised filter taps for resampling `in_size` pixels to `out_size`.
struct Taps {
    /// First input pixel of each output pixel.
    start: Vec<usize>,
    /// Weights of each output pixel, summing to 1.
    weights: Vec<Vec<f64>>,
}

impl Taps {
    /// Pillow computes the taps' positions in double precision; PyTorch in the tensor's
    /// type, so `single` rounds every intermediate to f32 as it does (this moves a tap's
    /// boundary now and then: 1e-5 differences in the output, measured, where f64 taps
    /// would be used for f32 tensors).
    fn new(in_size: usize, out_size: usize, filter: Filter, single: bool) -> Self {
        let r = |x: f64| if single { x as f32 as f64 } else { x };
        let scale = r(in_size as f64 / out_size as f64);
        let filter_scale = scale.max(1.0);
        let support = r(filter.support() * filter_scale);
        let ss = r(1.0 / filter_scale);
        let (mut start, mut weights) = (Vec::with_capacity(out_size), Vec::with_capacity(out_size));
        for xx in 0..out_size {
            let center = r((xx as f64 + 0.5) * scale);
            // Truncation toward zero, then the clamp, as Pillow's `(int)` casts.
            let xmin = (r(r(center - support) + 0.5) as i64).max(0) as usize;
            let xmax = (r(r(center + support) + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight(r(r(r(x as f64 - center) + 0.5) * ss)))
                .collect();
            let total: f64 = w.iter().sum();
            start.push(xmin);
            weights.push(
                w.into_iter()
                    .map(|k| if total != 0.0 { k / total } else { k })
                    .collect(),
            );
        }
        Taps { start, weights }
    }

    /// The weights in 22-bit fixed point, rounded half away from zero as Pillow does.
    fn fixed(&self) -> Vec<Vec<i64>> {
        let one = (1u64 << PRECISION_BITS) as f64;
        self.weights
            .iter()
            .map(|w| {
                w.iter()
                    .map(|&k| {
                        let scaled = k * one;
                        if scaled < 0.0 {
                            (scaled - 0.5) as i32 as i64
                        } else {
                            (scaled + 0.5) as i32 as i64
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One 8-bit pass along x (`horizontal`) or y.
fn pass_u8(img: &RgbImage, size: u32, filter: Filter, horizontal: bool) -> RgbImage {
    let (w0, h0) = img.dimensions();
    let (in_size, (w, h)) = if horizontal {
        (w0, (size, h0))
    } else {
        (h0, (w0, size))
    };
    let taps = Taps::new(in_size as usize, size as usize, filter, false);
    let fixed = taps.fixed();
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let o = if horizontal { x } else { y } as usize;
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &k) in fixed[o].iter().enumerate() {
                let at = (taps.start[o] + i) as u32;
                let p = if horizontal {
                    img.get_pixel(at, y)
                } else {
                    img.get_pixel(x, at)
                };
                for c in 0..3 {
                    acc[c] += p[c] as i64 * k;
                }
            }
            out.put_pixel(x, y, image::Rgb(acc.map(clip8)));
        }
    }
    out
}

/// Resamples an 8-bit RGB image to `width` x `height` exactly as Pillow's `Image.resize`
/// with `filter` (a side already at its size is not resampled).
pub fn resize_u8(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w0, h0) = img.dimensions();
    let mut cur = img.clone();
    if width != w0 {
        cur = pass_u8(&cur, width, filter, true);
    }
    if height != h0 {
        cur = pass_u8(&cur, height, filter, false);
    }
    cur
}

/// Resamples float planes (`[channels, height, width]`, row-major) to `[channels,
/// out_h, out_w]` with Pillow's taps in floating point, as PyTorch's `interpolate(...,
/// antialias=True, align_corners=False)` (what torchvision's `Resize` does to a tensor).
pub fn resize_f32(
    planes: &[f32],
    [c, h, w]: [usize; 3],
    [out_h, out_w]: [usize; 2],
    filter: Filter,
) -> Vec<f32> {
    assert_eq!(planes.len(), c * h * w, "planes must hold [c, h, w] values");
    let tx = Taps::new(w, out_w, filter, true);
    let ty = Taps::new(h, out_h, filter, true);
    let mut horizontal = vec![0f32; c * h * out_w];
    for (src, dst) in planes.chunks(w).zip(horizontal.chunks_mut(out_w)) {
        for (x, d) in dst.iter_mut().enumerate() {
            *d = tx.weights[x]
                .iter()
                .enumerate()
                .map(|(i, &k)| src[tx.start[x] + i] * k as f32)
                .sum();
        }
    }
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        let src = &horizontal[ch * h * out_w..(ch + 1) * h * out_w];
        let dst = &mut out[ch * out_h * out_w..(ch + 1) * out_h * out_w];
        for y in 0..out_h {
            for x in 0..out_w {
                dst[y * out_w + x] = ty.weights[y]
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| src[(ty.start[y] + i) * out_w + x] * k as f32)
                    .sum();
            }
        }
    }
    out
}

/// Resamples float planes as PyTorch's `interpolate(..., mode="bilinear",
/// align_corners=False)` without antialiasing (pytorch-fid's resize to 299): each output
/// pixel interpolates the two nearest input pixels per axis, source coordinates
/// `(dst + 0.5) * in / out - 0.5` clamped at 0.
pub fn resize_bilinear_f32(
    planes: &[f32],
    shape: [usize; 3],
    [out_h, out_w]: [usize; 2],
) -> Vec<f32> {
    let axis = |from: usize, to: usize| -> Vec<([usize; 2], [f32; 2])> {
        let scale = from as f32 / to as f32;
        (0..to)
            .map(|d| {
                let src = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src as usize).min(from - 1);
                let i1 = (i0 + 1).min(from - 1);
                let l = src - i0 as f32;
                ([i0, i1], [1.0 - l, l])
            })
            .collect()
    };
    let [_, h, w] = shape;
    interpolate(planes, shape, &axis(h, out_h), &axis(w, out_w))
}

/// Resamples float planes as PyTorch's `interpolate(..., mode="bicubic",
/// align_corners=False)` without antialiasing (torchvision < 0.17's `Resize` of a tensor):
/// each output pixel takes the 4 x 4 input pixels around its source coordinate
/// `(dst + 0.5) * in / out - 0.5` (indices clamped to the edge), weighted by the Keys cubic
/// with a = -0.75 (not Pillow's -0.5), whatever the scale (so downscaling aliases).
pub fn resize_bicubic_f32(
    planes: &[f32],
    shape: [usize; 3],
    [out_h, out_w]: [usize; 2],
) -> Vec<f32> {
    const A: f32 = -0.75;
    // PyTorch's `cubic_convolution1` (|x| <= 1) and `cubic_convolution2` (1 < |x| < 2), in
    // its operation order.
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let axis = |from: usize, to: usize| -> Vec<([usize; 4], [f32; 4])> {
        let scale = from as f32 / to as f32;
        let last = from as i64 - 1;
        (0..to)
            .map(|d| {
                // Fused, as PyTorch's x86 builds compile it (GCC contracts `a * b - c`): near
                // 256 an f32 holds 1/32768ths, so the two roundings move the weights by 1e-5.
                let src = scale.mul_add(d as f32 + 0.5, -0.5);
                let i = (src.floor() as i64).min(last);
                let t = (src - i as f32).clamp(0.0, 1.0);
                let at = |k: i64| (i + k).clamp(0, last) as usize;
                (
                    [at(-1), at(0), at(1), at(2)],
                    [far(t + 1.0), near(t), near(1.0 - t), far(1.0 - t + 1.0)],
                )
            })
            .collect()
    };
    let [_, h, w] = shape;
    interpolate(planes, shape, &axis(h, out_h), &axis(w, out_w))
}

/// Separable interpolation with `N` taps per output index and axis (`ty` for rows, `tx`
/// for columns): `sum_i wy_i * sum_j wx_j * src[y_i][x_j]`, PyTorch's order of operations
/// (its `cpu_upsample_generic`), so results agree to the last bit or two.
fn interpolate<const N: usize>(
    planes: &[f32],
    [c, h, w]: [usize; 3],
    ty: &[([usize; N], [f32; N])],
    tx: &[([usize; N], [f32; N])],
) -> Vec<f32> {
    assert_eq!(planes.len(), c * h * w, "planes must hold [c, h, w] values");
    let (out_h, out_w) = (ty.len(), tx.len());
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        let src = &planes[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * out_h * out_w..(ch + 1) * out_h * out_w];
        for (row, (ys, wys)) in dst.chunks_mut(out_w).zip(ty) {
            for (d, (xs, wxs)) in row.iter_mut().zip(tx) {
                let mut acc = 0f32;
                for (&y, &wy) in ys.iter().zip(wys) {
                    let line = &src[y * w..(y + 1) * w];
                    let mut inner = 0f32;
                    for (&x, &wx) in xs.iter().zip(wxs) {
                        inner += line[x] * wx;
                    }
                    acc += inner * wy;
                }
                *d = acc;
            }
        }
    }
    out
}
