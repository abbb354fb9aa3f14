//! Reading and writing safetensors files of plain tensors (inputs, outputs, latents), as
//! opposed to model weights. Writes go to a temporary file that is renamed into place, so
//! an interrupted write never leaves a partial file.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};
use crate::load::decode_f32;

/// Reads every tensor of a safetensors file as [`TensorData`]: floats become f32, integers
/// (i64, i32, u8) i64.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tensors(path, &bytes)
}

/// [`read_tensors`] on a file's bytes already in memory; `path` names it in errors.
pub fn parse_tensors(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorData>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {
                TensorData::new(decode_f32(raw, view.dtype()), shape)
            }
            Dtype::I64 => TensorData::new(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect::<Vec<_>>(),
                shape,
            ),
            Dtype::U8 => TensorData::new(raw.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape),
            Dtype::I32 => TensorData::new(
                raw.chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                    .collect::<Vec<_>>(),
                shape,
            ),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        out.insert(name, data);
    }
    Ok(out)
}

/// Writes f32 or i64 tensors to a safetensors file, atomically (temp file + rename), with
/// optional string metadata.
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, TensorData>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let invalid = |name: &str, reason: String| ModelError::InvalidInput {
        name: name.to_string(),
        reason,
    };
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let (dtype, bytes) = match data.dtype() {
            DType::F32 => (
                Dtype::F32,
                data.as_slice::<f32>()
                    .map_err(|e| invalid(name, format!("{e:?}")))?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
            DType::I64 => (
                Dtype::I64,
                data.as_slice::<i64>()
                    .map_err(|e| invalid(name, format!("{e:?}")))?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            _ => (
                Dtype::F32,
                data.clone()
                    .convert::<f32>()
                    .as_slice::<f32>()
                    .map_err(|e| invalid(name, format!("{e:?}")))?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        };
        buffers.push((name.clone(), dtype, data.shape().to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| invalid(name, e.to_string()))
        })
        .collect::<Result<_>>()?;
    let serialized =
        safetensors::serialize(views, metadata).map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &serialized)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    // A new file has the umask's mode (as `fs::write` made it); a replaced one keeps its own.
    #[cfg(unix)]
    if let Ok(existing) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(existing.permissions().mode() & 0o7777);
        if let Err(e) = std::fs::set_permissions(&tmp, mode) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
