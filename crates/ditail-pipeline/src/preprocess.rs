//! Image preprocessing (METHOD.md stage 1, step 1): shorter side to the working size with
//! antialiased bilinear resampling, center crop to multiples of 8, [0, 255] to [-1, 1].
//!
//! The resampler reproduces Pillow's `Image.resize(size, Image.BILINEAR)` on 8-bit RGB
//! ([`crate::resample`]), so that ditail sees the pixels the reference implementation sees.

use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

use crate::error::{PipelineError, Result};
use crate::resample::{self, Filter};

/// Resamples an 8-bit RGB image to `width` x `height` exactly as Pillow's bilinear resize.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resample::resize_u8(img, width, height, Filter::Bilinear)
}

/// The size an image of `width` x `height` is resized to: the shorter side becomes `size`,
/// the longer keeps the aspect ratio (rounded half away from zero).
pub fn resized_dims(width: u32, height: u32, size: u32) -> (u32, u32) {
    let scale =
        |long: u32, short: u32| ((long as f64 * size as f64 / short as f64).round() as u32).max(1);
    if width <= height {
        (size, scale(height, width))
    } else {
        (scale(width, height), size)
    }
}

/// The most pixels an image file may have: 2^26 (67 megapixels, e.g. 8192 x 8192). Images
/// are refused beyond it from their header, before a pixel buffer is allocated, so that a
/// "decompression bomb" (a small file claiming, say, 30000 x 30000) cannot exhaust memory.
/// The largest decoded buffer is then 2^26 pixels of 16-bit RGBA, 512 MiB.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

fn image_error(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Fails when `width` x `height` exceeds [`MAX_IMAGE_PIXELS`].
fn check_pixels(path: &Path, width: u32, height: u32) -> Result<()> {
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(PipelineError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            max: MAX_IMAGE_PIXELS,
        });
    }
    Ok(())
}

/// The dimensions in a PNG file's IHDR chunk, if `path` starts like a PNG. The PNG decoder
/// reads on to the first image data before it answers, so a header alone is checked here.
fn png_header_dims(path: &Path) -> Result<Option<(u32, u32)>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(24);
    std::fs::File::open(path)
        .and_then(|f| f.take(24).read_to_end(&mut head))
        .map_err(|e| image_error(path, e))?;
    if head.len() < 24 || head[..8] != *b"\x89PNG\r\n\x1a\n" || head[12..16] != *b"IHDR" {
        return Ok(None);
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(Some((be(&head[16..20]), be(&head[20..24]))))
}

/// Decodes an image file: its size is checked against [`MAX_IMAGE_PIXELS`] from the header
/// before any pixel is decoded, and its EXIF orientation is applied (as diffusers'
/// `load_image` and the web UIs do), so a portrait phone photo comes out upright. JPEGs are
/// decoded as Pillow decodes them ([`crate::jpeg`]), other formats by the image crate.
pub fn decode_image(path: &Path) -> Result<image::DynamicImage> {
    if let Some((w, h)) = png_header_dims(path)? {
        check_pixels(path, w, h)?;
    }
    let file = std::fs::File::open(path).map_err(|e| image_error(path, e))?;
    let mut file = std::io::BufReader::new(file);
    let is_jpeg = std::io::BufRead::fill_buf(&mut file)
        .map_err(|e| image_error(path, e))?
        .starts_with(&[0xff, 0xd8, 0xff]);
    if is_jpeg {
        // The JPEG decoder reads the whole file before its header anyway.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| image_error(path, e))?;
        if jpeg_truncated(&bytes) {
            return Err(image_error(
                path,
                "the JPEG ends before its image data does (a truncated download or copy?)",
            ));
        }
        let decoded =
            crate::jpeg::decode(&bytes, |w, h| check_pixels(path, w, h)).map_err(|e| match e {
                crate::jpeg::JpegError::Size(e) => e,
                crate::jpeg::JpegError::Decode(reason) => image_error(path, reason),
            })?;
        let mut img = decoded.image;
        img.apply_orientation(decoded.orientation);
        Ok(img)
    } else {
        decode_from(path, image::ImageReader::new(file))
    }
}

fn decode_from<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: image::ImageReader<R>,
) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| image_error(path, e))?;
    // Reads the header (and for JPEG, the file's bytes), no pixels yet.
    let mut decoder = reader.into_decoder().map_err(|e| image_error(path, e))?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, w, h)?;
    // A malformed EXIF block is no reason to refuse the picture: it is then left as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| image_error(path, e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether a JPEG file ends before its end-of-image marker. JPEG decoders fill a missing
/// end with gray (and only warn), where Pillow refuses ("image file is truncated"); a
/// half-downloaded photo would otherwise be transferred half gray. The walk follows the
/// segment lengths and, after each scan header, the entropy-coded data to the next marker
/// (where `FF 00` is a stuffed byte and `FF D0`..`FF D7` are restarts). Anything it does not
/// understand is left to the decoder.
fn jpeg_truncated(b: &[u8]) -> bool {
    let mut i = 2;
    loop {
        while b.get(i) == Some(&0xff) && b.get(i + 1) == Some(&0xff) {
            i += 1; // fill bytes before a marker
        }
        let marker = match b.get(i..i + 2) {
            None => return true,
            Some(&[0xff, m]) => m,
            Some(_) => return false,
        };
        i += 2;
        match marker {
            0xd9 => return false,
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let Some(len) = b.get(i..i + 2) else {
            return true;
        };
        i += usize::from(u16::from_be_bytes([len[0], len[1]]));
        if marker == 0xda {
            loop {
                match b.get(i..i + 2) {
                    None => return true,
                    Some(&[0xff, n]) if n != 0x00 && n != 0xff && !(0xd0..=0xd7).contains(&n) => {
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// Reads an image file as 8-bit RGB (alpha is dropped, as Pillow's `convert("RGB")` does),
/// upright by its EXIF orientation, refusing more than [`MAX_IMAGE_PIXELS`] (see
/// [`decode_image`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode_image(path)?.to_rgb8())
}

/// The most pixels the working image (the content resized to the working size) may have:
/// 2^22, e.g. 2048 x 2048, or 8192 x 512 for a 16:1 panorama at 512. Beyond it the U-Net's
/// activations alone would take tens of GB; a very narrow image (1 x 10000 pixels, small as
/// a file) or a huge working size would get there.
pub const MAX_WORKING_PIXELS: u64 = 1 << 22;

/// The size an image of `width` x `height` is worked at with working size `size`: shorter
/// side resized to `size`, then cropped to multiples of 8. Fails when that is empty or more
/// than [`MAX_WORKING_PIXELS`], before anything is allocated.
pub fn working_dims(width: u32, height: u32, size: u32) -> Result<(u32, u32)> {
    if size < 8 {
        return Err(PipelineError::Settings(format!(
            "working size {size} is below 8 pixels"
        )));
    }
    if width == 0 || height == 0 {
        return Err(PipelineError::Settings("the image is empty".into()));
    }
    let (w, h) = resized_dims(width, height, size);
    let (w8, h8) = (w / 8 * 8, h / 8 * 8);
    if u64::from(w8) * u64::from(h8) > MAX_WORKING_PIXELS {
        return Err(PipelineError::Settings(format!(
            "an image of {width} x {height} at working size {size} would be worked at {w8} x {h8} \
             pixels, more than {MAX_WORKING_PIXELS}: use a smaller size, or crop the image to a \
             less extreme aspect ratio"
        )));
    }
    Ok((w8, h8))
}

/// Resizes (shorter side to `size`), center-crops to multiples of 8, and returns the image
/// as a `[1, 3, H, W]` tensor in [-1, 1]; see [`working_dims`] for what is refused.
pub fn preprocess(img: &RgbImage, size: u32, device: &Device) -> Result<Tensor<4>> {
    let (w0, h0) = img.dimensions();
    working_dims(w0, h0, size)?;
    let (w, h) = resized_dims(w0, h0, size);
    let resized = resize_bilinear(img, w, h);
    let (w8, h8) = (w / 8 * 8, h / 8 * 8);
    let (left, top) = ((w - w8) / 2, (h - h8) / 2);
    let mut values = vec![0f32; 3 * (w8 * h8) as usize];
    let plane = (w8 * h8) as usize;
    for y in 0..h8 {
        for x in 0..w8 {
            let p = resized.get_pixel(left + x, top + y);
            for c in 0..3 {
                values[c * plane + (y * w8 + x) as usize] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [1, 3, h8 as usize, w8 as usize]),
        device,
    ))
}
