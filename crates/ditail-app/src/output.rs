//! Output files: checked for writability before any work starts, written to a temporary
//! file beside the destination and renamed into place, so that an interrupted or failed run
//! never leaves a partial output. PNGs carry their settings in text chunks.
//!
//! Processes that share an output folder coordinate through kernel file locks (`flock`),
//! which the kernel drops when a process ends however it ends (even `kill -9`): a temporary
//! file is locked while it is written, so [`clean_stale`] removes only those whose writer
//! is gone; and [`claim`] takes an output for one process (a `.ditail-<name>.lock` file
//! beside it), so that two batches on the same rows never write one output twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{Context, Result, refuse};
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
            refuse!(
                "{what} {}: the file name must end in .{ext}",
                path.display()
            );
        }
    }
    if path.is_dir() {
        refuse!("{what} {} is a folder, not a file", path.display());
    }
    let dir = parent_of(path);
    if !dir.is_dir() {
        refuse!(
            "{what} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    // An unnamed file where the system has them (O_TMPFILE): nothing is left behind even if
    // the process is killed here.
    tempfile::tempfile_in(&dir).with_context(|| {
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
    tempfile::tempfile_in(dir)
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
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Created with open(2)'s mode 0666, which the kernel reduces by the umask.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // Locked while it is written, so that `clean_stale` leaves it alone; the kernel drops
    // the lock when the process ends. Where the file system has no locks, it goes without.
    #[cfg(unix)]
    let _ = tmp.as_file().try_lock();
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
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Temporary files of [`write_atomic`]: `.ditail-XXXXXX.part`.
const TEMP_PREFIX: &str = ".ditail-";
const TEMP_SUFFIX: &str = ".part";
/// Claims of [`claim`]: `.ditail-<output name>.lock`.
const LOCK_SUFFIX: &str = ".lock";
/// Writability checks of earlier versions (named temporary files).
const OLD_CHECK_PREFIX: &str = ".ditail-check";
/// Age past which a temporary file is stale even where its lock cannot be asked (a file
/// system without locks): writing one output takes seconds.
const UNLOCKABLE_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Whether `file` is still the file at `path` (it may have been removed, and another
/// created there, since it was opened).
fn is_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// An output this process has claimed: it holds the kernel lock on the output's lock file.
/// Dropping it removes the lock file (while still holding the lock) and then releases it.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Still locked here (`_file` closes after this), so nobody can have claimed it; one
        // who opened it before the removal sees that it is gone and makes a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// This process has the output until the lock is dropped.
    Mine(OutputLock),
    /// Another live process holds it.
    Busy,
    /// The file system has no locks: the output is written without one (the rename still
    /// keeps every file whole, but two processes may both compute it).
    NoLocking(std::io::Error),
}

/// The lock file of `output`: `.ditail-<name>.lock` beside it.
pub fn lock_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(output).join(format!("{TEMP_PREFIX}{name}{LOCK_SUFFIX}"))
}

/// Takes the lock file at `path` (creating it when `create`): `Mine` once this process
/// holds the kernel lock on the file that is at `path` now; `Busy` when another process
/// holds it, or (without `create`) when it is gone.
fn lock_file(path: &Path, create: bool) -> std::io::Result<Claim> {
    // A file replaced under us more than a few times means a file system whose file ids
    // are not stable: treat it as one without locks rather than loop.
    for _ in 0..16 {
        // Opened for writing: NFS's emulation of flock takes exclusive locks only on those.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Claim::Busy),
            Err(TryLockError::Error(e)) => return Ok(Claim::NoLocking(e)),
        }
        // Between our open and our lock, its holder may have finished and removed it: then
        // the lock we hold is on a file nobody else will see, so start again.
        if is_at(&file, path) {
            return Ok(Claim::Mine(OutputLock {
                path: path.to_path_buf(),
                _file: file,
            }));
        }
        if !create {
            return Ok(Claim::Busy);
        }
    }
    Ok(Claim::NoLocking(std::io::Error::other(format!(
        "{} keeps being replaced",
        path.display()
    ))))
}

/// Claims `output` for this process, so that no other process (that claims it too) writes
/// it meanwhile; a lock left by a killed process is free again (the kernel dropped it).
/// Fails only when the lock file cannot be created (the folder is read-only, say).
pub fn claim(output: &Path) -> Result<Claim> {
    let path = lock_path(output);
    lock_file(&path, true).with_context(|| format!("cannot create {}", path.display()))
}

/// Removes what interrupted runs left in `dir`: temporary files (`.ditail-*.part`) whose
/// writer is gone (no process holds their lock) and that are older than `started`, and lock
/// files (`.ditail-*.lock`) that no process holds. Another live process's files are never
/// touched. Returns the names removed.
pub fn clean_stale(dir: &Path, started: SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let older = |age: Duration| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t + age < started)
        };
        let gone = if name.ends_with(LOCK_SUFFIX) {
            // Holding its lock, remove it as its owner would (see `OutputLock`).
            matches!(lock_file(&path, false), Ok(Claim::Mine(_)))
        } else if name.ends_with(TEMP_SUFFIX) {
            // Its writer locks it just after creating it: a file from before this run that
            // nobody holds is one whose writer died. (Writers lock them on Unix only.)
            #[cfg(not(unix))]
            let gone = older(UNLOCKABLE_STALE_AFTER) && std::fs::remove_file(&path).is_ok();
            #[cfg(unix)]
            let gone = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => match f.try_lock() {
                    // Removed while locked (no other cleaner can be at it).
                    Ok(()) => older(Duration::ZERO) && std::fs::remove_file(&path).is_ok(),
                    Err(TryLockError::WouldBlock) => false,
                    Err(TryLockError::Error(_)) => {
                        older(UNLOCKABLE_STALE_AFTER) && std::fs::remove_file(&path).is_ok()
                    }
                },
                Err(_) => false,
            };
            gone
        } else if name.starts_with(OLD_CHECK_PREFIX) {
            older(Duration::ZERO) && std::fs::remove_file(&path).is_ok()
        } else {
            false
        };
        if gone {
            removed.push(name);
        }
    }
    removed.sort();
    removed
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
