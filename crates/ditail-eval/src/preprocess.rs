//! Each metric's image preprocessing, as the reference evaluation
//! ([`src/ditail_metrics.py`](https://github.com/MAPS-research/Ditail/blob/4b8b4e0b4fe56e1cd1b5ae7e8ebb2ea3dbc5b1ba/src/ditail_metrics.py))
//! does it. Every image is first squashed to 224x224 with bicubic resampling:
//!
//! - CLIP: Pillow's bicubic on 8-bit pixels, then CLIP's processor (shortest side to 224,
//!   bicubic, centre crop to 224, both no-ops after the squash; /255; CLIP's mean and std);
//! - DINO: to float first (`ToTensor`), then torchvision's `Resize` of a tensor (float
//!   taps, no rounding), ImageNet mean and std. The reference pins torchvision 0.16.1,
//!   whose `Resize` does not antialias tensors (PyTorch's bicubic, a = -0.75, 4 taps
//!   whatever the scale); torchvision >= 0.17 antialiases (Pillow's taps, a = -0.5, widened
//!   when downscaling). [`DinoResize`] picks; the pinned behaviour is the default, so
//!   numbers compare with the paper's;
//! - FID: Pillow's bicubic on 8-bit pixels, then pytorch-fid's bilinear resize to 299
//!   (no antialiasing, corners not aligned); the network maps [0, 1] to [-1, 1]. With
//!   `native` the squash is left out, as pytorch-fid's own `fid_score` does.
//!
//! Outputs are `[3, h, w]` f32 planes, row-major.

use ditail_pipeline::resample::{
    Filter, resize_bicubic_f32, resize_bilinear_f32, resize_f32, resize_u8,
};
use image::RgbImage;
use serde::Serialize;

/// The side every metric first squashes images to.
pub const SQUASH: u32 = 224;

/// CLIP's processor constants (`openai/clip-vit-large-patch14`'s `preprocessor_config.json`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// See [`CLIP_MEAN`]. (Digits as the config writes them; some are beyond f32's.)
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// ImageNet's mean and std, DINO's normalisation.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// 8-bit RGB to `[3, h, w]` planes in [0, 1] (`ToTensor`).
pub fn to_planes(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * h * w + i] = p[c] as f32 / 255.0;
        }
    }
    out
}

fn normalise(planes: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    let n = planes.len() / 3;
    for (c, plane) in planes.chunks_mut(n).enumerate() {
        for v in plane {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

/// The reference's CLIP input: squashed to 224x224, then CLIP's processor at `side`.
pub fn clip_pixels(img: &RgbImage, side: u32) -> Vec<f32> {
    let squashed = resize_u8(img, SQUASH, SQUASH, Filter::Bicubic);
    // The processor: shortest side to `side` (the longer one in proportion, truncated, as
    // transformers' `get_resize_output_image_size`), centre crop (offsets rounded down).
    let (w, h) = squashed.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    let scaled_long = (side as u64 * long as u64 / short as u64) as u32;
    let (rw, rh) = if w <= h {
        (side, scaled_long)
    } else {
        (scaled_long, side)
    };
    let resized = resize_u8(&squashed, rw, rh, Filter::Bicubic);
    let (left, top) = ((rw - side) / 2, (rh - side) / 2);
    let cropped = image::imageops::crop_imm(&resized, left, top, side, side).to_image();
    let mut planes = to_planes(&cropped);
    normalise(&mut planes, CLIP_MEAN, CLIP_STD);
    planes
}

/// How DINO's input is resized to the ViT's side: which torchvision the numbers are
/// comparable with (written into `ditail eval`'s JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum DinoResize {
    /// Bicubic without antialiasing, as torchvision 0.16.1 (the reference's pinned
    /// environment) resizes a tensor: the paper's numbers.
    #[default]
    #[serde(rename = "bicubic, no antialiasing (torchvision 0.16.1, the reference's)")]
    Reference,
    /// Antialiased bicubic, as torchvision >= 0.17 resizes a tensor.
    #[serde(rename = "bicubic, antialiased (torchvision >= 0.17)")]
    Antialiased,
}

/// The reference's DINO input: `ToTensor`, bicubic to `side` x `side` in float as `resize`
/// says, ImageNet normalisation.
pub fn dino_pixels(img: &RgbImage, side: u32, resize: DinoResize) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let side = side as usize;
    let planes = to_planes(img);
    let mut planes = match resize {
        DinoResize::Reference => resize_bicubic_f32(&planes, [3, h, w], [side, side]),
        DinoResize::Antialiased => resize_f32(&planes, [3, h, w], [side, side], Filter::Bicubic),
    };
    normalise(&mut planes, IMAGENET_MEAN, IMAGENET_STD);
    planes
}

/// The reference's InceptionV3 input at `side` (299): squashed to 224x224 unless `native`,
/// `ToTensor`, bilinear to `side` x `side`; values in [0, 1].
pub fn inception_pixels(img: &RgbImage, side: u32, native: bool) -> Vec<f32> {
    let img = if native {
        img.clone()
    } else {
        resize_u8(img, SQUASH, SQUASH, Filter::Bicubic)
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let side = side as usize;
    resize_bilinear_f32(&to_planes(&img), [3, h, w], [side, side])
}
