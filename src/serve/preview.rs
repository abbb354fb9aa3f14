//! Live previews without a VAE call: each latent pixel's 4 channels are projected to RGB
//! by a fixed 4x3 matrix fitted to SD1.5's VAE (the factors ComfyUI's
//! `comfy/latent_formats.py` `SD15.latent_rgb_factors` and InvokeAI publish), then
//! `(x + 1) / 2` is clamped to [0, 1], as their previewers do. The image is 1/8 of the
//! output's size, sent as a PNG data URL.

use anyhow::{Result, anyhow};
use burn::prelude::*;

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
        return Err(anyhow!("a preview needs 4 latent channels, got {c}"));
    }
    let values: Vec<f32> = latents
        .clone()
        .narrow(0, 0, 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow!("reading latents back: {e:?}"))?;
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

/// A PNG of `img` as a `data:` URL.
pub fn data_url(img: &image::RgbImage) -> Result<String> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(format!("data:image/png;base64,{}", base64(&png)))
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn projection_uses_each_channel_row() {
        // One pixel with only channel 3 set to 1: RGB = ((row 3) + 1) / 2.
        let img = project(&[0.0, 0.0, 0.0, 1.0], 1, 1);
        let expected = SD15_LATENT_RGB[3].map(|v| (((v + 1.0) / 2.0) * 255.0).round() as u8);
        assert_eq!(img.get_pixel(0, 0).0, expected);
    }
}
