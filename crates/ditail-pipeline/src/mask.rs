//! Where Ditail injects (METHOD.md stage 2, step 2): the whole image, one half, or a
//! grayscale mask image, laid on each layer's own grid.

use std::path::Path;

use burn::prelude::*;

use crate::error::{PipelineError, Result};

/// The injection mask. 1 takes the source's structure, 0 keeps the target branch's own.
#[derive(Clone, Debug, PartialEq)]
pub enum Mask {
    /// Everywhere (the reference's default).
    Full,
    /// Columns `[0, w div 2)`.
    Left,
    /// Columns `[w div 2, w)`.
    Right,
    /// Rows `[0, h div 2)`.
    Top,
    /// Rows `[h div 2, h)`.
    Bottom,
    /// A grayscale image (white = 1), resized to each layer's grid.
    Image {
        /// Width of `values`.
        width: usize,
        /// Height of `values`.
        height: usize,
        /// Row-major values in [0, 1].
        values: Vec<f32>,
    },
}

impl Mask {
    /// Parses `full`, `left`, `right`, `top`, `bottom`, or reads a mask image from a path.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec {
            "full" => Ok(Mask::Full),
            "left" => Ok(Mask::Left),
            "right" => Ok(Mask::Right),
            "top" => Ok(Mask::Top),
            "bottom" => Ok(Mask::Bottom),
            path => Self::from_image(Path::new(path)),
        }
    }

    /// Fails when a mask image's aspect ratio is not the content's, worked at `width` x
    /// `height` pixels: it would be stretched onto the content. The two may differ by up
    /// to one latent cell (8 pixels), which the content's crop to multiples of 8 and
    /// rounding can take. Other masks fit any content.
    pub fn check_shape(&self, (width, height): (u32, u32)) -> Result<()> {
        let Mask::Image {
            width: mw,
            height: mh,
            ..
        } = self
        else {
            return Ok(());
        };
        let (mw, mh, w, h) = (*mw as f64, *mh as f64, f64::from(width), f64::from(height));
        // The mask scaled to the content's height against the content's width, and vice versa.
        let off = (mw * h / mh - w).abs().max((mh * w / mw - h).abs());
        if off > 8.0 {
            return Err(PipelineError::Settings(format!(
                "the mask is {mw} x {mh} pixels, the content {width} x {height}: a mask of \
                 another aspect ratio would be stretched onto the content; give a mask of the \
                 content's shape"
            )));
        }
        Ok(())
    }

    /// Reads a grayscale mask image; fails if it is blank (nothing would be injected). As
    /// for content images, sizes beyond [`crate::preprocess::MAX_IMAGE_PIXELS`] are refused
    /// from the header and the EXIF orientation is applied (see
    /// [`crate::preprocess::decode_image`]).
    pub fn from_image(path: &Path) -> Result<Self> {
        let err = |reason: String| PipelineError::Image {
            path: path.to_path_buf(),
            reason,
        };
        let img = crate::preprocess::decode_image(path)?.to_luma8();
        let (width, height) = (img.width() as usize, img.height() as usize);
        let values: Vec<f32> = img.pixels().map(|p| p[0] as f32 / 255.0).collect();
        let mask = Mask::Image {
            width,
            height,
            values,
        };
        mask.validate().map_err(|e| err(e.to_string()))?;
        Ok(mask)
    }

    /// Fails for a mask that would inject nothing.
    pub fn validate(&self) -> Result<()> {
        if let Mask::Image {
            width,
            height,
            values,
        } = self
        {
            if *width == 0 || *height == 0 || values.len() != width * height {
                return Err(PipelineError::Settings(format!(
                    "mask image of {width}x{height} has {} values",
                    values.len()
                )));
            }
            if values.iter().all(|&v| v == 0.0) {
                return Err(PipelineError::Settings(
                    "the mask image is black everywhere: nothing would be injected".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether the mask is 1 everywhere (injection is then a plain copy).
    pub fn is_full(&self) -> bool {
        matches!(self, Mask::Full)
    }

    /// The mask on an `h` x `w` grid, row-major.
    pub fn grid(&self, h: usize, w: usize) -> Vec<f32> {
        let cell = |row: usize, col: usize| -> f32 {
            let on = match self {
                Mask::Full => true,
                Mask::Left => col < w / 2,
                Mask::Right => col >= w / 2,
                Mask::Top => row < h / 2,
                Mask::Bottom => row >= h / 2,
                Mask::Image { .. } => unreachable!("handled below"),
            };
            if on { 1.0 } else { 0.0 }
        };
        match self {
            Mask::Image {
                width,
                height,
                values,
            } => resize_area(values, *width, *height, w, h),
            _ => (0..h)
                .flat_map(|r| (0..w).map(move |c| cell(r, c)))
                .collect(),
        }
    }

    /// The mask on an `h` x `w` grid as a tensor `[h * w]`.
    pub fn tensor(&self, h: usize, w: usize, device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(self.grid(h, w), [h * w]), device)
    }
}

/// Antialiased (triangle-filter) resize of a float grid, as the image preprocessing does
/// for pixels but without 8-bit rounding.
fn resize_area(values: &[f32], w0: usize, h0: usize, w: usize, h: usize) -> Vec<f32> {
    let weights = |n_in: usize, n_out: usize| -> Vec<Vec<(usize, f64)>> {
        let scale = n_in as f64 / n_out as f64;
        let fs = scale.max(1.0);
        (0..n_out)
            .map(|o| {
                let center = (o as f64 + 0.5) * scale;
                let lo = ((center - fs + 0.5) as i64).max(0) as usize;
                let hi = ((center + fs + 0.5) as i64).min(n_in as i64) as usize;
                let taps: Vec<(usize, f64)> = (lo..hi)
                    .map(|i| (i, (1.0 - ((i as f64 - center + 0.5) / fs).abs()).max(0.0)))
                    .collect();
                let total: f64 = taps.iter().map(|t| t.1).sum();
                taps.into_iter()
                    .map(|(i, t)| (i, if total > 0.0 { t / total } else { t }))
                    .collect()
            })
            .collect()
    };
    let (wx, wy) = (weights(w0, w), weights(h0, h));
    let mut out = Vec::with_capacity(w * h);
    for row in &wy {
        for col in &wx {
            let v: f64 = row
                .iter()
                .flat_map(|&(r, a)| {
                    col.iter()
                        .map(move |&(c, b)| a * b * values[r * w0 + c] as f64)
                })
                .sum();
            out.push(v.clamp(0.0, 1.0) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directional_masks_split_at_w_div_2() {
        assert_eq!(Mask::Left.grid(1, 3), [1.0, 0.0, 0.0]);
        assert_eq!(Mask::Right.grid(1, 3), [0.0, 1.0, 1.0]);
        assert_eq!(Mask::Top.grid(3, 1), [1.0, 0.0, 0.0]);
        assert_eq!(Mask::Bottom.grid(2, 2), [0.0, 0.0, 1.0, 1.0]);
        assert!(Mask::Full.grid(2, 3).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn image_masks_resize_and_reject_black() {
        let m = Mask::Image {
            width: 4,
            height: 2,
            values: vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        };
        // The antialiasing filter blends across the edge a little, as for pixels.
        let g = m.grid(1, 2);
        assert!(g[0] > 0.8 && g[1] < 0.2, "{g:?}");
        assert_eq!(
            m.grid(2, 4),
            [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
            "same size is the identity"
        );
        let black = Mask::Image {
            width: 2,
            height: 1,
            values: vec![0.0, 0.0],
        };
        assert!(black.validate().is_err());
    }
}
