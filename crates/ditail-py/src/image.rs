//! Images across the boundary: a content arrives as a path (read by ditail's own decoder, as
//! the command line reads it, so that both see the same pixels) or as packed RGB bytes with
//! a width and height (what the package makes of a PIL image or a numpy array); results
//! leave as packed RGB bytes with their size.

use std::path::PathBuf;

use ditail_pipeline::preprocess::{MAX_IMAGE_PIXELS, load_rgb};
use image::RgbImage;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors::{IntoPy, invalid};

/// An image as Python gets it back: `(rgb_bytes, width, height)`.
pub type Pixels<'py> = (Bound<'py, PyBytes>, u32, u32);

/// `img` as `(rgb_bytes, width, height)`.
pub fn to_python<'py>(py: Python<'py>, img: &RgbImage) -> Pixels<'py> {
    (PyBytes::new(py, img.as_raw()), img.width(), img.height())
}

/// Reads an image file (PNG, JPEG, WebP; EXIF orientation and alpha as the command line
/// handles them) as `(rgb_bytes, width, height)`.
#[pyfunction]
pub fn read_image(py: Python<'_>, path: PathBuf) -> PyResult<Pixels<'_>> {
    let img = py.detach(|| load_rgb(&path)).py()?;
    Ok(to_python(py, &img))
}

/// A content image from a path or from `(rgb_bytes, width, height)`.
pub fn from_python(image: &Bound<'_, PyAny>) -> PyResult<RgbImage> {
    let py = image.py();
    if let Ok(tuple) = image.cast::<PyTuple>() {
        let (data, width, height): (Bound<'_, PyBytes>, u32, u32) = tuple
            .extract()
            .map_err(|_| PyTypeError::new_err("an image tuple is (rgb_bytes, width, height)"))?;
        let data = data.as_bytes();
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0 || pixels > MAX_IMAGE_PIXELS {
            return Err(invalid(
                py,
                &format!(
                    "the image is {width} x {height} pixels: it must have between 1 and \
                     {MAX_IMAGE_PIXELS}"
                ),
            ));
        }
        if data.len() as u64 != pixels * 3 {
            return Err(invalid(
                py,
                &format!(
                    "a {width} x {height} RGB image has {} bytes, not {}",
                    pixels * 3,
                    data.len()
                ),
            ));
        }
        return Ok(
            RgbImage::from_raw(width, height, data.to_vec()).expect("the length was checked")
        );
    }
    let path: PathBuf = image
        .extract()
        .map_err(|_| PyTypeError::new_err("an image is a path or (rgb_bytes, width, height)"))?;
    py.detach(|| load_rgb(&path)).py()
}
