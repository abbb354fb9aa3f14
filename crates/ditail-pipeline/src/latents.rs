//! The latents file (what `--save-latents` writes and `--from-latents` reads): safetensors,
//! f32, keys `z0` `[1,4,h,w]`, `inverted.{t}` for every inversion timestep (e.g.
//! `inverted.981`), and `final` `[1,4,h,w]` when a sampling result is included. The header's
//! metadata `ditail_inversion` holds the [`InversionMeta`] as JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
use ditail_models::tensor_file::{parse_tensors, write_tensors};

use crate::error::{PipelineError, Result};
use crate::inversion::{Inversion, InversionMeta};

const META_KEY: &str = "ditail_inversion";

/// Writes an inversion (and optionally the final latents) atomically.
pub fn save(path: &Path, inv: &Inversion, final_latents: Option<&Tensor<4>>) -> Result<()> {
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "z0".to_string(),
        inv.z0().clone().into_data().convert::<f32>(),
    );
    for (t, z) in inv.latents() {
        tensors.insert(
            format!("inverted.{t}"),
            z.clone().into_data().convert::<f32>(),
        );
    }
    if let Some(f) = final_latents {
        tensors.insert("final".to_string(), f.clone().into_data().convert::<f32>());
    }
    let meta = serde_json::to_string(inv.meta()).expect("inversion metadata serialises");
    let metadata = HashMap::from([(META_KEY.to_string(), meta)]);
    write_tensors(path, &tensors, Some(metadata))?;
    Ok(())
}

/// Reads an inversion written by [`save`]; also returns `final` when present.
pub fn load(path: &Path, device: &Device) -> Result<(Inversion, Option<Tensor<4>>)> {
    let err = |reason: String| PipelineError::LatentsFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY).cloned())
        .ok_or_else(|| {
            err(format!(
                "no `{META_KEY}` metadata: not a ditail latents file"
            ))
        })?;
    let meta: InversionMeta = serde_json::from_str(&meta_json)
        .map_err(|e| err(format!("bad `{META_KEY}` metadata: {e}")))?;
    let tensors = parse_tensors(path, &bytes)?;
    let first_shape = tensors.values().next().map(|d| d.shape().clone());
    let to_tensor = |name: &str, data: &TensorData| -> Result<Tensor<4>> {
        let shape = data.shape().as_slice();
        if shape.len() != 4 || shape[0] != 1 || shape.contains(&0) {
            return Err(err(format!(
                "`{name}` has shape {shape:?}, expected [1, C, h, w]"
            )));
        }
        if Some(shape) != first_shape.as_ref().map(|s| s.as_slice()) {
            return Err(err(format!(
                "`{name}` has shape {shape:?}, unlike the file's other latents ({:?})",
                first_shape
                    .as_ref()
                    .map(|s| s.as_slice())
                    .unwrap_or_default()
            )));
        }
        let values = data
            .as_slice::<f32>()
            .map_err(|e| err(format!("`{name}` is not a float tensor: {e:?}")))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(err(format!(
                "`{name}` holds {} at element {i}: the file is damaged, or was saved from a run \
                 that overflowed",
                values[i]
            )));
        }
        Ok(Tensor::from_data(data.clone(), device))
    };
    let mut z0 = None;
    let mut final_latents = None;
    let mut latents = BTreeMap::new();
    for (name, data) in &tensors {
        match name.as_str() {
            "z0" => z0 = Some(to_tensor(name, data)?),
            "final" => final_latents = Some(to_tensor(name, data)?),
            other => {
                let t = other
                    .strip_prefix("inverted.")
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| err(format!("unexpected tensor `{other}`")))?;
                latents.insert(t, to_tensor(name, data)?);
            }
        }
    }
    let z0 = z0.ok_or_else(|| err("no `z0`".into()))?;
    if latents.len() != meta.settings.steps {
        return Err(err(format!(
            "{} `inverted.*` tensors for {} inversion steps",
            latents.len(),
            meta.settings.steps
        )));
    }
    let inv = Inversion::new(z0, latents, meta).map_err(|e| err(e.to_string()))?;
    Ok((inv, final_latents))
}
