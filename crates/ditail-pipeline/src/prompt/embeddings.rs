//! Textual-inversion embeddings ("negative embeddings" such as EasyNegative, style and
//! character embeddings), written in a prompt by name as AUTOMATIC1111 takes them
//! ([`modules/textual_inversion/textual_inversion.py`](https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/82a973c04367123ae98bd9abdf80d9eda9b910e2/modules/textual_inversion/textual_inversion.py)):
//! a folder of files, each named as its file without extension; wherever a prompt's tokens
//! spell a name (case does not matter: CLIP lower-cases), its vectors take the place of
//! those tokens, one position each. ComfyUI's `embedding:name` is read the same way.
//!
//! Files: `.safetensors` with `emb_params` (A1111, SD1.x), `clip_l` and `clip_g` (SDXL),
//! `string_to_param.*` (A1111's `.pt` layout, converted), or a single tensor (diffusers'
//! `learned_embeds.safetensors`). A1111's `.pt` files are pickles, never unpickled: the
//! error gives the one-line conversion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::error::{PipelineError, Result};

/// One embedding file.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The name prompts use: the file name without extension.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The first 12 hex digits of the file's SHA-256 (A1111's `TI hashes` in PNG records).
    pub short_hash: String,
    /// The vectors per text encoder, `[count, width]` row-major: one matrix (SD1.x), or
    /// `clip_l` and `clip_g` (SDXL).
    pub vectors: Vec<(Vec<f32>, [usize; 2])>,
}

impl Embedding {
    /// How many token positions it takes.
    pub fn len(&self) -> usize {
        self.vectors.first().map_or(0, |(_, [n, _])| *n)
    }

    /// Whether it has no vectors (never, for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its widths, one per text encoder.
    pub fn widths(&self) -> Vec<usize> {
        self.vectors.iter().map(|(_, [_, w])| *w).collect()
    }

    fn error(&self, reason: String) -> PipelineError {
        PipelineError::Embedding {
            name: self.name.clone(),
            path: self.path.clone(),
            reason,
        }
    }

    /// Refuses the embedding unless it has one matrix per text encoder of the given widths
    /// (SD1.x: one; SDXL: two).
    pub fn check_fits(&self, widths: &[usize]) -> Result<()> {
        let family = |w: &[usize]| match w.len() {
            1 => "an SD1.x embedding",
            _ => "an SDXL embedding",
        };
        if self.widths() != widths {
            return Err(self.error(format!(
                "its vectors are {:?} wide ({}), the model's text encoders {widths:?} ({}): \
                 use an embedding trained for this model's family",
                self.widths(),
                family(&self.widths()),
                family(widths)
                    .replace("an ", "a model for ")
                    .replace(" embedding", "")
            )));
        }
        if self.len() > super::CHUNK_TOKENS {
            return Err(self.error(format!(
                "it has {} vectors, more than a chunk's {} tokens",
                self.len(),
                super::CHUNK_TOKENS
            )));
        }
        Ok(())
    }

    /// Its vectors for text encoder `encoder` as a `[count, width]` tensor.
    pub fn tensor(&self, encoder: usize, device: &Device) -> Tensor<2> {
        let (values, shape) = &self.vectors[encoder];
        Tensor::from_data(TensorData::new(values.clone(), *shape), device)
    }

    /// Reads one embedding file.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let error = |reason: String| PipelineError::Embedding {
            name: name.clone(),
            path: path.to_path_buf(),
            reason,
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if matches!(ext.as_str(), "pt" | "bin" | "ckpt") {
            return Err(error(format!(
                "a PyTorch pickle, which ditail does not load (unpickling can run arbitrary \
                 code); convert it once with: python -c \"import torch, safetensors.torch as s; \
                 d = torch.load('{p}', map_location='cpu', weights_only=True); \
                 s.save_file({{'emb_params': next(iter(d['string_to_param'].values())).contiguous()}}, \
                 '{p}.safetensors')\"",
                p = path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let tensors = ditail_models::tensor_file::parse_tensors(path, &bytes)
            .map_err(|e| error(e.to_string()))?;
        let matrix = |key: &str, data: &TensorData| -> Result<(Vec<f32>, [usize; 2])> {
            let shape = data.shape().to_vec();
            let dims = match shape.as_slice() {
                [w] => [1, *w],
                [n, w] => [*n, *w],
                _ => {
                    return Err(error(format!(
                        "tensor {key} has shape {shape:?}, not [vectors, width]"
                    )));
                }
            };
            let values: Vec<f32> = data
                .clone()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|_| error(format!("tensor {key} is not floating point")))?;
            if dims[0] == 0 || values.iter().any(|v| !v.is_finite()) {
                return Err(error(format!("tensor {key} is empty or not finite")));
            }
            Ok((values, dims))
        };
        let keys: Vec<&String> = tensors.keys().collect();
        let vectors = if let (Some(l), Some(g)) = (tensors.get("clip_l"), tensors.get("clip_g")) {
            let (l, g) = (matrix("clip_l", l)?, matrix("clip_g", g)?);
            if l.1[0] != g.1[0] {
                return Err(error(format!(
                    "clip_l has {} vectors, clip_g {}",
                    l.1[0], g.1[0]
                )));
            }
            vec![l, g]
        } else if let Some(t) = tensors.get("emb_params") {
            vec![matrix("emb_params", t)?]
        } else if let [key] = keys.as_slice() {
            vec![matrix(key, &tensors[*key])?]
        } else if let Some((key, t)) = tensors
            .iter()
            .find(|(k, _)| k.starts_with("string_to_param."))
        {
            vec![matrix(key, t)?]
        } else {
            return Err(error(format!(
                "no embedding in it: expected emb_params, clip_l and clip_g, or one tensor; \
                 found {keys:?}"
            )));
        };
        let hash = hex(&Sha256::digest(&bytes));
        Ok(Self {
            name,
            path: path.to_path_buf(),
            short_hash: hash[..12].to_string(),
            vectors,
        })
    }
}

/// The embeddings of a folder, by name.
#[derive(Clone, Debug, Default)]
pub struct Embeddings {
    /// Readable files, by name.
    pub by_name: BTreeMap<String, Embedding>,
    /// Files that could not be read, with why (a prompt naming one is refused with it).
    pub unreadable: BTreeMap<String, String>,
}

impl Embeddings {
    /// Every `.safetensors` (and, to explain them, `.pt` / `.bin`) file directly in `dir`,
    /// and in its subfolders as A1111 reads them.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        Self::read_dirs(&[dir.to_path_buf()])
    }

    /// [`Embeddings::read_dir`] of several folders; a name found twice is the first one's.
    pub fn read_dirs(dirs: &[PathBuf]) -> Result<Self> {
        let mut out = Self::default();
        for dir in dirs {
            out.read_into(dir)?;
        }
        Ok(out)
    }

    fn read_into(&mut self, dir: &Path) -> Result<()> {
        let out = self;
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| PipelineError::Embedding {
                name: String::new(),
                path: d.clone(),
                reason: format!("cannot list the embeddings folder: {e}"),
            })?;
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                if !matches!(ext.as_str(), "safetensors" | "pt" | "bin") {
                    continue;
                }
                match Embedding::read(&path) {
                    Ok(e) => {
                        out.by_name.entry(e.name.clone()).or_insert(e);
                    }
                    Err(e) => {
                        let name = path.file_stem().unwrap_or_default().to_string_lossy();
                        out.unreadable
                            .entry(name.into_owned())
                            .or_insert(e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.unreadable.is_empty()
    }

    /// The names a prompt refers to with ComfyUI's `embedding:name` that are not here (kept
    /// as text; worth a warning).
    pub fn unknown_references(&self, prompt: &str) -> Vec<String> {
        references(prompt)
            .filter(|n| !self.by_name.contains_key(*n) && !self.unreadable.contains_key(*n))
            .map(str::to_string)
            .collect()
    }
}

/// The names after `embedding:` in a prompt.
fn references(prompt: &str) -> impl Iterator<Item = &str> {
    prompt.match_indices("embedding:").map(move |(at, m)| {
        let rest = &prompt[at + m.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | '[' | ']' | ':'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// `embedding:name` as the bare name (ComfyUI's syntax read as A1111's).
pub fn strip_comfy_syntax(text: &str) -> String {
    text.replace("embedding:", "")
}
