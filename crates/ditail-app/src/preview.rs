//! Live previews without a VAE call: each latent pixel's 4 channels are projected to RGB
//! by a fixed 4x3 matrix fitted to SD1.5's VAE (the factors ComfyUI's
//! `comfy/latent_formats.py` `SD15.latent_rgb_factors` and InvokeAI publish), then
//! `(x + 1) / 2` is clamped to [0, 1], as their previewers do. The image is 1/8 of the
//! output's size (the web app sends it as a PNG data URL; Python hands it to a callback).

use burn::prelude::*;

use crate::{Result, refuse};

/// Rows: latent channels 0-3; columns: R, G, B.
const SD15_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// Projects latents `[1, 4, h, w]` (scaled, as the U-Net sees them) to an RGB image.
pub fn latents_to_rgb(latents: &Tensor<4>) -> Result<image::RgbImage> {
    let [_, c, h, w] = latents.dims();
    if c != 4 {
        refuse!("a preview needs 4 latent channels, got {c}");
    }
    let values: Vec<f32> = latents
        .clone()
        .narrow(0, 0, 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| crate::AppError::Invalid(format!("reading latents back: {e:?}")))?;
    Ok(project(&values, h, w))
}

fn project(values: &[f32], h: usize, w: usize) -> image::RgbImage {
    let plane = h * w;
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (i, p) in img.pixels_mut().enumerate() {
        for (ch, out) in p.0.iter_mut().enumerate() {
            let v: f32 = (0..4)
                .map(|c| values[c * plane + i] * SD15_LATENT_RGB[c][ch])
                .sum();
            *out = (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_uses_each_channel_row() {
        // One pixel with only channel 3 set to 1: RGB = ((row 3) + 1) / 2.
        let img = project(&[0.0, 0.0, 0.0, 1.0], 1, 1);
        let expected = SD15_LATENT_RGB[3].map(|v| (((v + 1.0) / 2.0) * 255.0).round() as u8);
        assert_eq!(img.get_pixel(0, 0).0, expected);
    }
}
