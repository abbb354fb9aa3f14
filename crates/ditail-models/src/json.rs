//! Reading diffusers `config.json` files: typed values with defaults, and errors that name
//! the file, the key and the value.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ModelError, Result};

/// A parsed JSON config object and where it came from.
#[derive(Clone, Debug)]
pub struct JsonConfig {
    path: PathBuf,
    value: serde_json::Map<String, Value>,
}

impl JsonConfig {
    /// Reads and parses `path`, which must hold a JSON object.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let err = |reason: String| ModelError::Config {
            path: path.to_path_buf(),
            reason,
        };
        match serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))? {
            Value::Object(value) => Ok(Self {
                path: path.to_path_buf(),
                value,
            }),
            _ => Err(err("expected a JSON object".into())),
        }
    }

    /// An error about this config.
    pub fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The raw value of `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// The nested object under `key` (as `text_config` in a transformers `CLIPConfig`), or
    /// an empty one when absent: its keys then all take their defaults.
    pub fn child(&self, key: &str) -> Result<Self> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(Self {
                path: self.path.clone(),
                value: Default::default(),
            }),
            Some(Value::Object(value)) => Ok(Self {
                path: self.path.clone(),
                value: value.clone(),
            }),
            Some(v) => Err(self.error(format!("key `{key}` has value {v}, expected an object"))),
        }
    }

    /// The value of `key` as `T`, or `default` when absent or null.
    pub fn get<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| self.error(format!("key `{key}` has value {v}: {e}"))),
        }
    }

    /// A per-block integer that may be written once (applies to all `n` blocks) or as a list.
    pub fn per_block(&self, key: &str, n: usize) -> Result<Vec<usize>> {
        match self.value.get(key) {
            Some(Value::Array(_)) => {
                let v: Vec<usize> = self.get(key, vec![])?;
                if v.len() != n {
                    return Err(self.error(format!(
                        "key `{key}` lists {} values for {n} blocks",
                        v.len()
                    )));
                }
                Ok(v)
            }
            _ => Ok(vec![self.get(key, 0usize)?; n]),
        }
    }

    /// Fails unless a transformer's sizes fit together: `hidden` divisible by `heads`, at
    /// least one layer, and for a vision transformer (`patches`: image side, patch side)
    /// a whole number of patches.
    pub fn check_transformer(
        &self,
        hidden: usize,
        heads: usize,
        layers: usize,
        patches: Option<(usize, usize)>,
    ) -> Result<()> {
        let heads_ok = heads > 0 && hidden.is_multiple_of(heads) && layers > 0;
        let patches_ok =
            patches.is_none_or(|(image, patch)| patch > 0 && image.is_multiple_of(patch));
        if heads_ok && patches_ok {
            return Ok(());
        }
        let mut reason = format!(
            "hidden_size {hidden} must be divisible by num_attention_heads {heads}, with at \
             least one layer (num_hidden_layers {layers})"
        );
        if let Some((image, patch)) = patches {
            reason += &format!(", and image_size {image} by patch_size {patch}");
        }
        Err(self.error(reason))
    }

    /// Fails unless `key` is absent or equal to `supported` (numbers compare by value).
    pub fn expect(&self, key: &str, supported: Value) -> Result<()> {
        let Some(found) = self.value.get(key) else {
            return Ok(());
        };
        let same = match (found, &supported) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if same {
            Ok(())
        } else {
            Err(self.error(format!(
                "unsupported `{key}` = {found}: ditail implements the value Stable Diffusion 1.x and XL use, {supported}"
            )))
        }
    }
}
