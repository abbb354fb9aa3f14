//! Stable Diffusion 1.x's and XL's networks in burn, with Ditail's hook sites.
//!
//! - [`family`]: which of the two a model is;
//! - [`clip`]: the CLIP text encoders (ViT-L/14; SDXL's second, ViT-bigG/14, projected),
//!   [`tokenizer`]: their BPE tokenizer;
//! - [`vae`]: the VAE (posterior mean and decoder);
//! - [`unet`]: the U-Net, whose forward takes a [`hook::Controller`] called at every ResNet
//!   and self-attention [`hook::Site`]; [`cross_kv`]: its cross-attention's keys and values,
//!   projected once a run;
//! - [`kernels`]: attention with Ditail's q/k injection fused in (a WGSL kernel where wgpu
//!   compiles WGSL, burn-cubecl's flash attention on SPIR-V, MSL and CUDA);
//! - [`device`]: choosing the backend, device and float type at run time; [`gpu`]: the GPU
//!   backends' kernel-tuning cache and what a GPU device offers (compiler, f16, tensor cores);
//! - [`load`]: diffusers folders and safetensors files, converted to the model's float type
//!   tensor by tensor.
//!
//! Every public type is named after, and every parameter keyed like, its diffusers or
//! transformers counterpart, so that the models are their own key maps.

// Unsafe code lives in `ditail-kernels`; here only the weight files' memory map (two
// functions of `load::safetensors`) and a read of a Vulkan adapter's extension list
// (`device::takes_spirv`), each allowed and explained where it is.
#![deny(unsafe_code)]

pub mod attention;
pub mod cast;
pub mod clip;
pub mod cross_kv;
pub mod device;
pub mod error;
pub mod family;
pub mod gpu;
pub mod hook;
pub mod json;
// The kernels are their own crate (all of the networks' `unsafe` code); this path stays.
pub use ditail_kernels as kernels;
pub mod load;
pub mod ops;
pub mod resnet;
pub mod tensor_file;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use clip::{ClipTextConfig, ClipTextModel};
pub use error::{ModelError, Result};
pub use family::Family;
pub use hook::{Captured, Controller, NoControl, QkInjection, Recorder, SelfAttnQk, Site, Stage};
pub use load::{LoadOptions, StableDiffusion};
pub use tokenizer::ClipTokenizer;
pub use unet::{
    AddedConditioning, Conditioning, PreparedConditioning, UNet2DConditionModel, UNetConfig,
};
pub use vae::{AutoencoderKl, VaeConfig};
