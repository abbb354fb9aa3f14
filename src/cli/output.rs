//! Output files: checked for writability before any work starts, written to a temporary
//! file beside the destination and renamed into place, so that an interrupted or failed run
//! never leaves a partial output. PNGs carry their settings in text chunks.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use image::RgbImage;

/// The folder a file will be written into (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fails unless `path` can be created: its folder exists and is writable, it is not a
/// folder, and (when `ext` is given) it has that extension.
pub fn check_output_file(path: &Path, what: &str, ext: Option<&str>) -> Result<()> {
    if let Some(ext) = ext {
        let ok = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case(ext));
        if !ok {
            bail!(
                "{what} {}: the file name must end in .{ext}",
                path.display()
            );
        }
    }
    if path.is_dir() {
        bail!("{what} {} is a folder, not a file", path.display());
    }
    let dir = parent_of(path);
    if !dir.is_dir() {
        bail!(
            "{what} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".ditail-check")
        .tempfile_in(&dir)
        .with_context(|| {
            format!(
                "{what} {}: cannot write in {}",
                path.display(),
                dir.display()
            )
        })?;
    Ok(())
}

/// Creates `dir` if needed and fails unless files can be written in it.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".ditail-check")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in the output folder {}", dir.display()))?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
///
/// The file gets the permissions a plainly created file would: on Unix, 0666 less the
/// umask for a new file (not the temporary file's private 0600), or the mode of the file it
/// replaces.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = parent_of(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".ditail-").suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Created with open(2)'s mode 0666, which the kernel reduces by the umask.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    #[cfg(unix)]
    if let Ok(existing) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        // fchmod is not reduced by the umask: the replaced file's mode exactly.
        let mode = existing.permissions().mode() & 0o7777;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot give {} its mode {mode:o}", path.display()))?;
    }
    {
        let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut buf)?;
        buf.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes an RGB PNG with text chunks: each `(keyword, text)` as an iTXt chunk (UTF-8),
/// except `parameters`, which A1111 and most viewers read as tEXt (Latin-1: other
/// characters are then also in the iTXt `ditail` chunk).
pub fn write_png(path: &Path, img: &RgbImage, chunks: &[(&str, String)]) -> Result<()> {
    write_atomic(path, |w| {
        let mut enc = png::Encoder::new(w, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (key, text) in chunks {
            if text.chars().all(|c| (c as u32) < 256 && c != '\0') && *key == "parameters" {
                enc.add_text_chunk(key.to_string(), text.clone())?;
            } else {
                enc.add_itxt_chunk(key.to_string(), text.clone())?;
            }
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(img.as_raw())?;
        writer.finish()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// The text chunks of a PNG (tEXt, zTXt and iTXt), keyword -> text.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path)?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder.read_info()?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.utf8_text {
        out.push((c.keyword.clone(), c.get_text()?));
    }
    for c in &info.compressed_latin1_text {
        out.push((c.keyword.clone(), c.get_text()?));
    }
    Ok(out)
}

/// An image tensor `[1, 3, H, W]` in [0, 1] as 8-bit RGB (rounded, as diffusers does).
pub fn to_rgb(image: Tensor<4>) -> Result<RgbImage> {
    let [_, c, h, w] = image.dims();
    if c != 3 {
        bail!("expected 3 channels, got {c}");
    }
    let values: Vec<f32> = image
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the image back: {e:?}"))?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, p) in img.pixels_mut().enumerate() {
        for ch in 0..3 {
            p.0[ch] = (values[ch * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(img)
}
