//! JPEG decoding as Pillow does it, so that a JPEG content image (the paper's COCO photos,
//! every phone picture) starts from the pixels the reference implementation sees.
//!
//! Pillow decodes with libjpeg-turbo at its defaults: the accurate integer IDCT
//! (`JDCT_ISLOW`) and "fancy" (triangular) chroma upsampling, YCbCr to RGB inside libjpeg
//! ([Pillow's `JpegDecode.c`](https://github.com/python-pillow/Pillow/blob/13.0.0/src/libImaging/JpegDecode.c)).
//! The image crate's decoder (zune-jpeg) upsamples and rounds differently: up to 5 levels
//! apart on quality-90 photos. MozJPEG's decoder is libjpeg-turbo's, built here from its
//! vendored C sources; libjpeg-turbo's SIMD code gives the same pixels as its C code for
//! these settings, so no assembler is needed.
//!
//! Colour models, as Pillow's `Image.open(p).convert("RGB")`:
//! - YCbCr and RGB JPEGs: libjpeg's RGB output;
//! - grayscale: one channel (the caller's `to_rgb8` repeats it, as `convert("RGB")` does);
//! - CMYK and YCCK: libjpeg's CMYK output, which is inverted as Adobe writes it (Pillow's
//!   `CMYK;I` raw mode, it assumes Adobe's convention for every CMYK JPEG), then Pillow's
//!   `cmyk2rgb` ([`Convert.c`](https://github.com/python-pillow/Pillow/blob/13.0.0/src/libImaging/Convert.c)).
//!
//! The EXIF orientation is returned, not applied: [`crate::preprocess::decode_image`]
//! applies it for every format.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{Decompress, Format, Marker};

/// A decoded JPEG and its EXIF orientation.
pub struct Decoded {
    /// The pixels: 8-bit RGB, or 8-bit gray for a grayscale JPEG.
    pub image: DynamicImage,
    /// From the EXIF block (APP1); [`Orientation::NoTransforms`] without one or when it is
    /// malformed (no reason to refuse the picture).
    pub orientation: Orientation,
}

/// Decodes a whole JPEG file held in `bytes`. `check_size(width, height)` sees the header's
/// dimensions before any pixel is decoded, and its error is returned as it is. Any other
/// failure is a message saying what libjpeg refused.
pub fn decode<E>(
    bytes: &[u8],
    check_size: impl FnOnce(u32, u32) -> Result<(), E>,
) -> Result<Decoded, JpegError<E>> {
    // libjpeg reports a fatal error by calling back into Rust, which unwinds (mozjpeg's
    // error manager, without the panic hook); it is caught here and becomes a message.
    match catch_unwind(AssertUnwindSafe(|| decode_unwinding(bytes, check_size))) {
        Ok(result) => result,
        Err(payload) => Err(JpegError::Decode(
            payload
                .downcast_ref::<String>()
                .map(|s| s.trim_start_matches("libjpeg fatal error: ").to_string())
                .unwrap_or_else(|| "libjpeg failed".to_string()),
        )),
    }
}

/// Why [`decode`] failed.
#[derive(Debug)]
pub enum JpegError<E> {
    /// The size check refused the header's dimensions.
    Size(E),
    /// libjpeg refused the data.
    Decode(String),
}

fn decode_unwinding<E>(
    bytes: &[u8],
    check_size: impl FnOnce(u32, u32) -> Result<(), E>,
) -> Result<Decoded, JpegError<E>> {
    let io = |e: std::io::Error| JpegError::Decode(e.to_string());
    let dec = Decompress::with_markers(&[Marker::APP(1)])
        .from_mem(bytes)
        .map_err(io)?;
    let (w, h) = dec.size();
    let (w, h) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    check_size(w, h).map_err(JpegError::Size)?;
    let orientation = dec
        .markers()
        .filter(|m| m.marker == Marker::APP(1))
        .find_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let image = match dec.image().map_err(io)? {
        Format::RGB(mut started) => {
            let pixels: Vec<u8> = started.read_scanlines().map_err(io)?;
            finish(started);
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        Format::Gray(mut started) => {
            let pixels: Vec<u8> = started.read_scanlines().map_err(io)?;
            finish(started);
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        Format::CMYK(mut started) => {
            let cmyk: Vec<[u8; 4]> = started.read_scanlines().map_err(io)?;
            finish(started);
            let rgb = cmyk.into_iter().flat_map(adobe_cmyk_to_rgb).collect();
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, rgb).ok_or_else(short)?)
        }
    };
    Ok(Decoded { image, orientation })
}

/// Ends the decompression. Every pixel is read by now; what libjpeg might still complain
/// about (bytes after the image) does not change them, and Pillow ignores it too.
fn finish(started: mozjpeg::decompress::DecompressStarted<&[u8]>) {
    let _ = started.finish();
}

fn short<E>() -> JpegError<E> {
    JpegError::Decode("libjpeg returned fewer pixels than the header announced".into())
}

/// One pixel of libjpeg's CMYK output (inverted, as Adobe stores it) to RGB as Pillow's
/// `CMYK;I` unpacking followed by `cmyk2rgb`: with `c = 255 - stored` and `nk = 255 - k`,
/// each channel is `nk - c * nk / 255` (Pillow's rounded `MULDIV255`).
fn adobe_cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = u32::from(k); // 255 - (255 - k)
    let channel = |stored: u8| {
        let ink = 255 - u32::from(stored);
        let t = ink * nk + 128;
        (nk - ((t >> 8) + t) / 256) as u8
    };
    [channel(c), channel(m), channel(y)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_without_ink_is_white_and_full_black_is_black() {
        // Stored inverted: 255 is no ink.
        assert_eq!(adobe_cmyk_to_rgb([255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(adobe_cmyk_to_rgb([255, 255, 255, 0]), [0, 0, 0]);
        // Full cyan, no black: red gone.
        assert_eq!(adobe_cmyk_to_rgb([0, 255, 255, 255]), [0, 255, 255]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 2, 1, 2, 3], |_, _| {
            Ok::<(), ()>(())
        })
        .err()
        .expect("refused");
        assert!(matches!(err, JpegError::Decode(_)), "{err:?}");
    }
}
