//! JPEG decoding against Pillow's (libjpeg-turbo): `tests/fixtures/jpeg/`, written by
//! `scripts/make_jpeg_fixtures.py`, holds JPEGs of every kind (4:2:0, 4:2:2, 4:4:4,
//! progressive, optimised with restart markers, grayscale, Adobe CMYK, EXIF-rotated) and the
//! RGB pixels Pillow decodes from each (`exif_transpose`, then `convert("RGB")`). ditail
//! must give the same pixels, every one: tolerance 0.

mod common;

use std::path::Path;

use common::fixtures;
use ditail::pipeline::PipelineError;
use ditail::pipeline::preprocess::load_rgb;
use serde_json::Value;

fn dir() -> std::path::PathBuf {
    fixtures().join("jpeg")
}

/// (name, largest difference in levels, values that differ) of ditail's decode vs Pillow's.
fn compare(name: &str) -> (u8, usize) {
    let ours = load_rgb(&dir().join(format!("{name}.jpg"))).unwrap();
    let pillow = image::open(dir().join(format!("{name}.png")))
        .unwrap()
        .to_rgb8();
    assert_eq!(ours.dimensions(), pillow.dimensions(), "{name}: size");
    let diffs = ours
        .as_raw()
        .iter()
        .zip(pillow.as_raw())
        .map(|(&a, &b)| a.abs_diff(b));
    diffs.fold((0, 0), |(max, n), d| (max.max(d), n + usize::from(d > 0)))
}

#[test]
fn every_jpeg_decodes_to_pillows_pixels() {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir().join("meta.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_object().unwrap();
    assert!(cases.len() >= 9, "the fixture set is incomplete");
    let mut failed = Vec::new();
    for (name, case) in cases {
        let (max, n) = compare(name);
        eprintln!(
            "{name} ({} opened, subsampling {}): max {max} levels, {n} values differ",
            case["mode_opened"], case["subsampling"]
        );
        if max > 0 {
            failed.push(format!("{name}: max {max} levels, {n} values"));
        }
    }
    assert!(failed.is_empty(), "not Pillow's pixels: {failed:?}");
}

#[test]
fn exif_rotated_jpeg_comes_out_upright() {
    let img = load_rgb(&dir().join("exif-rotated.jpg")).unwrap();
    // Stored 75 x 51 with orientation 6 (rotate 90 degrees clockwise).
    assert_eq!(img.dimensions(), (51, 75));
}

/// A JPEG libjpeg refuses is a clear error naming the file, not a panic.
#[test]
fn a_broken_jpeg_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(dir().join("q50-420.jpg")).unwrap();
    // The frame header's component count (SOF0: length, precision, height, width, count)
    // set to 0: libjpeg's "Bogus ... " fatal error.
    let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    bytes[sof + 9] = 0;
    let path = tmp.path().join("broken.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_rgb(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PipelineError::Image { ref path, .. } if path.ends_with("broken.jpg")),
        "{msg}"
    );
    assert!(msg.contains("broken.jpg"), "{msg}");
    assert!(!msg.contains("libjpeg fatal error"), "{msg}");
}

/// The header's size is checked before the pixels are decoded (a decompression bomb).
#[test]
fn a_jpeg_claiming_too_many_pixels_is_refused_from_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(dir().join("q50-420.jpg")).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]); // 60000 x 60000
    let path = tmp.path().join("bomb.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_rgb(Path::new(&path)).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::ImageTooLarge {
                width: 60000,
                height: 60000,
                ..
            }
        ),
        "{err}"
    );
}
