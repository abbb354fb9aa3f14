//! Memory-mapped safetensors files whose tensors are converted to the model's float type
//! one at a time, as burn-store asks for them: a checkpoint is never held twice in RAM.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// A safetensors file, memory-mapped, with its header parsed and checked.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: Vec<TensorEntry>,
}

/// One tensor's header entry.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    /// The key in the file.
    pub name: String,
    /// Its dtype as stored.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub bytes: Range<usize>,
}

impl WeightFile {
    /// Opens and validates `path` (header, offsets and sizes; no tensor data is read).
    // Mapping a file is the one unsafe operation outside the kernels' crate.
    #[allow(unsafe_code)]
    pub fn open(path: &Path) -> Result<Arc<Self>> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; a file changed underneath by another process
        // could change the weights read, which is no worse than reading it in parts.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| ModelError::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let header = header_text(&map);
        if let Some(key) = header.and_then(duplicate_key) {
            return Err(invalid(format!(
                "the header lists tensor `{key}` more than once (which one is meant?)"
            )));
        }
        let (header_len, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| invalid(describe(e, map.len(), header)))?;
        let mut tensors: Vec<TensorEntry> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                bytes: info.data_offsets.0..info.data_offsets.1,
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            tensors,
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors in the file, sorted by key.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The raw bytes of a tensor as stored.
    pub fn raw(&self, entry: &TensorEntry) -> &[u8] {
        &self.map[self.data_start + entry.bytes.start..self.data_start + entry.bytes.end]
    }

    /// Drops a converted tensor's pages from this process's resident memory, so that the
    /// mapped file does not add its own size to the peak while a model is built from it
    /// (measured by `examples/bench_load.rs`). The pages stay in the page cache.
    #[allow(unsafe_code)]
    pub(super) fn release(&self, entry: &TensorEntry) {
        #[cfg(unix)]
        {
            let offset = self.data_start + entry.bytes.start;
            // SAFETY: the map is a read-only, shared file mapping: MADV_DONTNEED only
            // unmaps its pages from this process, and any later read (another tensor on
            // a shared boundary page, or the same tensor again) faults them back in from
            // the file with the same contents. No `&[u8]` into the range is held here.
            // Failure only means the pages stay resident.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    offset,
                    entry.bytes.len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = entry;
    }
}

/// The header's JSON text, when the length prefix fits the file and the text is UTF-8.
fn header_text(file: &[u8]) -> Option<&str> {
    let len = u64::from_le_bytes(file.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    std::str::from_utf8(file.get(8..end)?).ok()
}

/// The first key a JSON object holds twice (serde_json, and so the safetensors crate, keeps
/// the last silently); `None` also when the text is no JSON object.
fn duplicate_key(header: &str) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Ok(Some(key));
                }
            }
            Ok(None)
        }
    }
    serde_json::Deserializer::from_str(header)
        .deserialize_map(Keys)
        .ok()
        .flatten()
}

/// The first tensor whose declared size is wrong (its shape times its dtype overflows, or
/// differs from its byte range), in words; the safetensors crate does not name it.
fn bad_entry(header: &str) -> Option<String> {
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header).ok()?;
    for (key, v) in entries.iter().filter(|(k, _)| *k != "__metadata__") {
        let shape: Vec<u64> = serde_json::from_value(v.get("shape")?.clone()).ok()?;
        let dtype: Dtype = serde_json::from_value(v.get("dtype")?.clone()).ok()?;
        let offsets: (u64, u64) = serde_json::from_value(v.get("data_offsets")?.clone()).ok()?;
        let bits = (shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)))
            .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
            .filter(|&b| usize::try_from(b).is_ok());
        match bits {
            None => {
                return Some(format!(
                    "tensor `{key}` has shape {shape:?}, whose size in bytes overflows"
                ));
            }
            Some(bits) if Some(bits / 8) != offsets.1.checked_sub(offsets.0) => {
                return Some(format!(
                    "tensor `{key}` has shape {shape:?} of {dtype:?} ({} bytes) but data_offsets \
                     [{}, {}]",
                    bits / 8,
                    offsets.0,
                    offsets.1
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// Where the header's last tensor ends, counted from the start of the data section.
fn data_end(header: &str) -> Option<u64> {
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header).ok()?;
    entries
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .try_fold(0u64, |end, e| Some(end.max(e?)))
}

fn describe(e: safetensors::SafeTensorError, file_len: usize, header: Option<&str>) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::HeaderTooLarge | E::InvalidHeaderLength => {
            format!(
                "the file ({file_len} bytes) is too short or does not start with a safetensors header ({e})"
            )
        }
        E::InvalidHeader(_) | E::InvalidHeaderStart | E::InvalidHeaderDeserialization(_) => {
            format!(
                "the header is not valid safetensors JSON ({e}); is this really a .safetensors file?"
            )
        }
        E::MetadataIncompleteBuffer => {
            let data = header.map(|h| file_len.saturating_sub(8 + h.len()));
            match (header.and_then(data_end), data) {
                (Some(end), Some(data)) if end < data as u64 => format!(
                    "the file has {} bytes after its last tensor's data (a damaged or \
                     concatenated file?)",
                    data as u64 - end
                ),
                _ => format!(
                    "the header describes more data than the file's {file_len} bytes (truncated \
                     download?)"
                ),
            }
        }
        E::InvalidOffset(key) => format!(
            "tensor `{key}`'s data_offsets do not start where the previous tensor's end \
             (overlapping, reversed or with a gap)"
        ),
        E::TensorInvalidInfo | E::ValidationOverflow | E::MisalignedSlice => {
            header.and_then(bad_entry).unwrap_or_else(|| e.to_string())
        }
        other => other.to_string(),
    }
}

/// Bytes per element of a float dtype, or `None` for dtypes that cannot be weights.
fn float_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F64 => Some(8),
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// Decodes little-endian floats of `dtype` to f32.
pub fn decode_f32(raw: &[u8], dtype: Dtype) -> Vec<f32> {
    decode_f32_checked(raw, dtype).0
}

/// [`decode_f32`], also saying whether every value is finite (checked in the same pass).
pub(crate) fn decode_f32_checked(raw: &[u8], dtype: Dtype) -> (Vec<f32>, bool) {
    fn each<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> (Vec<f32>, bool) {
        let mut finite = true;
        let values = raw
            .chunks_exact(N)
            .map(|b| {
                let v = f(b.try_into().expect("chunks of N bytes"));
                finite &= v.is_finite();
                v
            })
            .collect();
        (values, finite)
    }
    match dtype {
        Dtype::F32 => each(raw, f32::from_le_bytes),
        Dtype::F16 => each(raw, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => each(raw, |b| half::bf16::from_le_bytes(b).to_f32()),
        Dtype::F64 => each(raw, |b| f64::from_le_bytes(b) as f32),
        other => unreachable!("decode_f32 called on {other:?}, which float_size rejects"),
    }
}

/// Whether a tensor of `dtype` can become weights (a float type), else the error naming it.
pub(super) fn check_float(path: &Path, entry: &TensorEntry) -> Result<usize> {
    float_size(entry.dtype).ok_or_else(|| ModelError::UnsupportedDtype {
        path: path.to_path_buf(),
        key: entry.name.clone(),
        dtype: format!("{:?}", entry.dtype),
    })
}

/// The error for the first value of `values` that `bad` flags (one is known to be).
/// `first` is the element index of `values[0]` in the tensor (a part of it may be converted).
pub(super) fn non_finite(
    path: &Path,
    entry: &TensorEntry,
    values: &[f32],
    first: usize,
    bad: impl Fn(f32) -> bool,
    why: &str,
) -> ModelError {
    let at = values.iter().position(|&v| bad(v)).unwrap_or(0);
    let value = values.get(at).copied().unwrap_or(f32::NAN);
    let index = first + at;
    ModelError::NonFiniteWeight {
        path: path.to_path_buf(),
        key: entry.name.clone(),
        problem: format!(
            "holds {value} at element {index} of {:?}: {why}",
            entry.shape
        ),
    }
}

/// Why a file's own values are NaN or infinite.
pub(super) const DAMAGED: &str = "NaN or infinite weights make every image black; the file is damaged or was saved \
     from a training run that diverged";
