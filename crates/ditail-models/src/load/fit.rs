//! Checks, at plan time (headers only), that a model is one Ditail can run and that its
//! tensors fit the networks its configuration builds, so that no model reaches a forward
//! with shapes that disagree (a convolution given other channels than its weights panics
//! inside the backend).
//!
//! - The U-Net must read and write latents of the VAE's width: inpainting U-Nets take 9
//!   channels (latents, mask, masked image), instruct-pix2pix 8 (latents, image), depth 5
//!   (latents, depth); the method inverts and samples plain latents only.
//! - Every U-Net and VAE tensor must have the shape the configuration gives its parameter.
//!   The expected shapes come from the networks built lazily (burn allocates a parameter
//!   on first use, so nothing is allocated here), in the files' PyTorch layout: linear
//!   weights `[out, in]`, norms' `weight`/`bias` (what burn-store's `PyTorchToBurnAdapter`
//!   maps onto `gamma`/`beta`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use super::{Component, Source};
use crate::error::{ModelError, Result};
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;

/// What a U-Net with `in_channels` inputs is, for messages.
fn kind_of(in_channels: usize) -> String {
    match in_channels {
        9 => "an inpainting model (U-Net in_channels 9: latents, mask and masked image)".into(),
        8 => "an instruct-pix2pix model (U-Net in_channels 8: latents and image)".into(),
        5 => "a depth-to-image model (U-Net in_channels 5: latents and depth)".into(),
        c => format!("a U-Net with {c} input channels"),
    }
}

/// Fails unless the U-Net reads and writes the VAE's latents; `path` names the model.
pub(crate) fn check_latent_channels(path: &Path, unet: &UNetConfig, vae: &VaeConfig) -> Result<()> {
    let latent = vae.latent_channels;
    if unet.in_channels != latent {
        return Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: format!(
                "{}, while its VAE's latents have {latent} channels: Ditail inverts and samples \
                 plain latents",
                kind_of(unet.in_channels)
            ),
        });
    }
    if unet.out_channels != latent {
        return Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: format!(
                "a U-Net predicting {} channels (out_channels), while its VAE's latents have \
                 {latent}",
                unet.out_channels
            ),
        });
    }
    Ok(())
}

/// The parameters' shapes of a module, keyed as the files key them.
#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    containers: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        // As `load_sources` applies (enum variants are not part of a path).
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut shape = param.lazy_shape().to_vec();
        let mut path = self.path.clone();
        // The innermost container owns the parameter (the parameter itself enters none):
        // `weight` of a `Struct:Linear`, `gamma` of a `Struct:GroupNorm`.
        let owner = self.containers.last().map(String::as_str).unwrap_or("");
        let leaf = path.last().map(String::as_str).unwrap_or("");
        let is_norm = owner.ends_with("Norm");
        match (owner, leaf) {
            ("Struct:Linear", "weight") if shape.len() == 2 => shape.reverse(),
            (_, "gamma") if is_norm => *path.last_mut().expect("leaf") = "weight".into(),
            (_, "beta") if is_norm => *path.last_mut().expect("leaf") = "bias".into(),
            _ => {}
        }
        self.out.insert(path.join("."), shape);
    }
}

/// Fails, naming the file and tensor, when a tensor of `sources` has another shape than
/// `module`'s parameter of that name (tensors the module lacks are reported at load, with
/// every other mismatch, by `load_sources`).
pub(crate) fn check_shapes<M: Module>(
    module: &M,
    component: Component,
    sources: &[(String, Source)],
) -> Result<()> {
    let mut shapes = Shapes::default();
    module.visit(&mut shapes);
    for (key, source) in sources {
        let found = source.shape();
        for (name, rows) in component.model_keys(key, &found) {
            if rows.is_some() || source.rows.is_some() {
                continue;
            }
            let Some(expected) = shapes.out.get(&name) else {
                continue;
            };
            if *expected != found {
                return Err(ModelError::WeightShape {
                    path: source.file.path().to_path_buf(),
                    component: component.name(),
                    key: key.clone(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
    }
    Ok(())
}

/// A device to build networks on lazily (nothing is allocated on it): the CPU's where it
/// is compiled in; `None` in a build without any backend, which cannot run a model anyway.
fn lazy_device() -> Option<Device> {
    #[cfg(feature = "flex")]
    {
        Some(Device::flex())
    }
    #[cfg(not(feature = "flex"))]
    {
        cfg!(any(feature = "wgpu", feature = "cuda", feature = "ndarray")).then(Device::default)
    }
}

/// [`check_shapes`] for a U-Net of `config`, built lazily.
pub(crate) fn check_unet(config: &UNetConfig, sources: &[(String, Source)]) -> Result<()> {
    match lazy_device() {
        Some(device) => check_shapes(&config.init(&device), Component::Unet, sources),
        None => Ok(()),
    }
}

/// [`check_shapes`] for a VAE of `config`, built lazily.
pub(crate) fn check_vae(config: &VaeConfig, sources: &[(String, Source)]) -> Result<()> {
    match lazy_device() {
        Some(device) => check_shapes(&config.init(&device), Component::Vae, sources),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_kinds_are_named() {
        assert!(kind_of(9).starts_with("an inpainting model"));
        assert!(kind_of(8).starts_with("an instruct-pix2pix model"));
        assert!(kind_of(5).starts_with("a depth-to-image model"));
        assert_eq!(kind_of(6), "a U-Net with 6 input channels");
    }

    #[test]
    fn shapes_are_keyed_as_the_files_key_them() {
        let Some(device) = lazy_device() else {
            return;
        };
        let unet = UNetConfig::sd15().init(&device);
        let mut shapes = Shapes::default();
        unet.visit(&mut shapes);
        let conv_in = &shapes.out["conv_in.weight"];
        assert_eq!(conv_in[1], 4, "{conv_in:?}");
        // A GroupNorm's affine under PyTorch's names; a linear weight as [out, in].
        assert!(shapes.out.contains_key("conv_norm_out.weight"));
        assert!(!shapes.out.keys().any(|k| k.ends_with(".gamma")));
        assert_eq!(shapes.out["time_embedding.linear_1.weight"], [1280, 320]);
    }
}
