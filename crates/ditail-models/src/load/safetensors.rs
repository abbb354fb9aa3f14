//! Memory-mapped safetensors files whose tensors are converted to the model's float type
//! one at a time, as burn-store asks for them: a checkpoint is never held twice in RAM.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Bytes, DType, FloatDType};
use burn_store::burn_pack::{Error as PackError, Tensor as PackTensor};
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
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| invalid(describe(e, map.len())))?;
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
    fn release(&self, entry: &TensorEntry) {
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

fn describe(e: safetensors::SafeTensorError, file_len: usize) -> String {
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
            format!(
                "the header describes more data than the file's {file_len} bytes (truncated download?)"
            )
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
    match dtype {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => unreachable!("decode_f32 called on {other:?}, which float_size rejects"),
    }
}

fn encode(values: Vec<f32>, target: FloatDType) -> Bytes {
    match target {
        FloatDType::F16 => Bytes::from_elems(
            values
                .into_iter()
                .map(|v| half::f16::from_f32(v).to_bits())
                .collect::<Vec<u16>>(),
        ),
        FloatDType::BF16 => Bytes::from_elems(
            values
                .into_iter()
                .map(|v| half::bf16::from_f32(v).to_bits())
                .collect::<Vec<u16>>(),
        ),
        FloatDType::F64 => {
            Bytes::from_elems(values.into_iter().map(f64::from).collect::<Vec<f64>>())
        }
        FloatDType::F32 | FloatDType::Flex32 => Bytes::from_elems(values),
    }
}

/// A request for (part of) a file tensor under the name the model gives it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file holding the tensor.
    pub file: Arc<WeightFile>,
    /// Its header entry.
    pub entry: TensorEntry,
    /// A range of rows (first dimension) to take instead of the whole tensor.
    pub rows: Option<Range<usize>>,
    /// A shape to deliver the data in (same element count), e.g. a 1x1 convolution's
    /// weight as a linear one.
    pub reshape: Option<Vec<usize>>,
    /// LoRA updates added to the tensor as it is converted.
    pub lora: Vec<super::lora::LoraTerm>,
}

impl Source {
    /// The whole tensor.
    pub fn whole(file: &Arc<WeightFile>, entry: &TensorEntry) -> Self {
        Self {
            file: file.clone(),
            entry: entry.clone(),
            rows: None,
            reshape: None,
            lora: Vec::new(),
        }
    }

    /// The shape that will be delivered.
    pub fn shape(&self) -> Vec<usize> {
        if let Some(shape) = &self.reshape {
            return shape.clone();
        }
        let mut shape = self.entry.shape.clone();
        if let Some(r) = &self.rows {
            shape[0] = r.len();
        }
        shape
    }

    /// A burn-store tensor named `name` whose bytes are read and converted to `target` only
    /// when the model asks for them.
    pub fn into_pack(self, name: String, target: FloatDType) -> Result<PackTensor> {
        let size = float_size(self.entry.dtype).ok_or_else(|| ModelError::UnsupportedDtype {
            path: self.file.path().to_path_buf(),
            key: self.entry.name.clone(),
            dtype: format!("{:?}", self.entry.dtype),
        })?;
        let shape = self.shape();
        let numel: usize = shape.iter().product();
        let row_bytes = size * self.entry.shape.iter().skip(1).product::<usize>();
        let dtype: DType = target.into();
        let byte_len = numel * dtype.size();
        let provider = move || {
            let raw = self.file.raw(&self.entry);
            let raw = match &self.rows {
                Some(r) => raw
                    .get(r.start * row_bytes..r.end * row_bytes)
                    .ok_or_else(|| {
                        PackError::ValidationError(format!(
                            "rows {r:?} out of range for `{}`",
                            self.entry.name
                        ))
                    })?,
                None => raw,
            };
            let mut values = decode_f32(raw, self.entry.dtype);
            self.file.release(&self.entry);
            for term in &self.lora {
                term.apply(&mut values);
            }
            Ok(encode(values, target))
        };
        Ok(PackTensor::deferred(
            name, dtype, shape, None, byte_len, provider,
        ))
    }
}
