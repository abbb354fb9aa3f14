//! An inversion: the content image's latents `Z[t]` at every inversion timestep (METHOD.md
//! stage 1), made once by [`crate::invert`] and reused by any number of targets.

use std::borrow::Cow;
use std::collections::BTreeMap;

use burn::prelude::*;

use crate::error::{PipelineError, Result};
use crate::settings::InversionSettings;

/// What produced an inversion; saved with it and checked when it is reused.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InversionMeta {
    /// The source model's name.
    pub source: String,
    /// The inversion's prompts and numbers.
    pub settings: InversionSettings,
    /// SHA-256 of the decoded RGB pixels of the content image, hex.
    pub image_sha256: String,
    /// The source's family, whose latent space the inversion is in (absent in files written
    /// before SDXL support: SD1.x).
    #[serde(default)]
    pub family: Option<ditail_models::Family>,
}

/// The result of inverting one content image: every `Z[t]`, reusable for any target. Its
/// parts are consistent by construction ([`Inversion::new`] checks them).
#[derive(Clone, Debug)]
pub struct Inversion {
    z0: Tensor<4>,
    latents: BTreeMap<i64, Tensor<4>>,
    meta: InversionMeta,
}

impl Inversion {
    /// An inversion from its parts: `z0` `[1, c, h, w]` and one latent of the same shape
    /// for each of the `meta.settings.steps` inversion timesteps.
    pub fn new(
        z0: Tensor<4>,
        latents: BTreeMap<i64, Tensor<4>>,
        meta: InversionMeta,
    ) -> Result<Self> {
        let mismatch = |reason: String| PipelineError::InversionMismatch {
            what: "latents",
            reason,
        };
        if z0.dims()[0] != 1 {
            return Err(mismatch(format!(
                "z0 has shape {:?}, expected batch 1",
                z0.dims()
            )));
        }
        if latents.len() != meta.settings.steps || latents.is_empty() {
            return Err(mismatch(format!(
                "{} latents for {} inversion steps",
                latents.len(),
                meta.settings.steps
            )));
        }
        if let Some((t, z)) = latents.iter().find(|(_, z)| z.dims() != z0.dims()) {
            return Err(mismatch(format!(
                "Z[{t}] has shape {:?}, z0 {:?}",
                z.dims(),
                z0.dims()
            )));
        }
        Ok(Self { z0, latents, meta })
    }

    /// `z0 = scaling_factor · E(image)`.
    ///
    /// # Shapes
    /// - `[1, 4, h, w]` (the content's working size divided by 8)
    pub fn z0(&self) -> &Tensor<4> {
        &self.z0
    }

    /// `Z[t]` for every inversion timestep, by timestep.
    pub fn latents(&self) -> &BTreeMap<i64, Tensor<4>> {
        &self.latents
    }

    /// How it was made.
    pub fn meta(&self) -> &InversionMeta {
        &self.meta
    }

    /// The content's working size in pixels, `(width, height)`.
    pub fn pixel_size(&self) -> (u32, u32) {
        let [_, _, h, w] = self.z0.dims();
        (8 * w as u32, 8 * h as u32)
    }

    /// The noisiest latent, where sampling starts.
    pub fn start(&self) -> &Tensor<4> {
        self.latents
            .values()
            .next_back()
            .expect("Inversion::new checks there is at least one step")
    }

    /// The same inversion with its tensors on `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            z0: self.z0.clone().to_device(device),
            latents: self
                .latents
                .iter()
                .map(|(t, z)| (*t, z.clone().to_device(device)))
                .collect(),
            meta: self.meta.clone(),
        }
    }

    /// This inversion on `device`: itself when it is there already, else a copy moved there
    /// (an inversion made or loaded on one device serves targets on another).
    pub fn on_device(&self, device: &Device) -> Cow<'_, Self> {
        if self.z0.device() == *device {
            Cow::Borrowed(self)
        } else {
            Cow::Owned(self.to_device(device))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(steps: usize) -> InversionMeta {
        InversionMeta {
            source: "m".into(),
            settings: InversionSettings {
                steps,
                ..InversionSettings::new("p")
            },
            image_sha256: String::new(),
            family: None,
        }
    }

    #[test]
    fn parts_that_do_not_fit_are_refused() {
        let device = Device::default();
        let z = |h| Tensor::<4>::zeros([1, 4, h, 8], &device);
        let two = BTreeMap::from([(1, z(8)), (501, z(8))]);
        let inv = Inversion::new(z(8), two.clone(), meta(2)).unwrap();
        assert_eq!(inv.pixel_size(), (64, 64));
        assert_eq!(inv.start().dims(), [1, 4, 8, 8]);
        let err = |r: Result<Inversion>| r.unwrap_err().to_string();
        assert!(err(Inversion::new(z(8), two.clone(), meta(3))).contains("2 latents for 3"));
        assert!(err(Inversion::new(z(8), BTreeMap::new(), meta(0))).contains("0 latents"));
        let mixed = BTreeMap::from([(1, z(8)), (501, z(16))]);
        assert!(err(Inversion::new(z(8), mixed, meta(2))).contains("Z[501]"));
        let batch = Tensor::<4>::zeros([2, 4, 8, 8], &device);
        assert!(err(Inversion::new(batch, two, meta(2))).contains("batch 1"));
    }
}
