//! The models crate's error type: every variant names the file, key or value at fault.

use std::path::PathBuf;

/// Errors raised while configuring, loading or running the Stable Diffusion networks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file that should be a safetensors file is not one (truncated, wrong header, ...).
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor in a weights file has a dtype that cannot become model weights.
    #[error(
        "{path}: tensor `{key}` has dtype {dtype}, expected a float type (f32, f16, bf16, f64)"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// Its dtype as the file declares it.
        dtype: String,
    },
    /// A weight tensor holds NaN or infinity, or a value the model's float type cannot hold
    /// (found while the tensor is converted at load).
    #[error("{path}: tensor `{key}` {problem}")]
    NonFiniteWeight {
        /// The file (a checkpoint, or the LoRA the value came from).
        path: PathBuf,
        /// The tensor's key in that file.
        key: String,
        /// The value, where it is and what made it non-finite.
        problem: String,
    },
    /// A `config.json` (or similar) could not be parsed or holds an unsupported value.
    #[error("{path}: {reason}")]
    Config {
        /// The config file (or a description of where the config came from).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A diffusers model folder lacks a file it needs.
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    MissingFile {
        /// The folder searched.
        dir: PathBuf,
        /// What was being looked for, e.g. "U-Net weights".
        what: &'static str,
        /// The file names tried.
        looked_for: String,
    },
    /// The weights do not fit the model: missing keys, unused keys, or shape mismatches.
    #[error("{component} weights from {source_desc} do not fit the model:{details}")]
    WeightsMismatch {
        /// Which network, e.g. "unet".
        component: &'static str,
        /// The files the weights came from.
        source_desc: String,
        /// One line per problem, each naming the key.
        details: String,
    },
    /// A PyTorch pickle, which ditail never unpickles (it could run arbitrary code).
    #[error(
        "{path} is a PyTorch pickle, which ditail does not load (unpickling can run arbitrary code); \
         convert it once with: python -c \"import torch, safetensors.torch as s; \
         sd = torch.load('{path}', map_location='cpu', weights_only=True); \
         s.save_file({{k: v.contiguous() for k, v in sd.get('state_dict', sd).items()}}, '{path}.safetensors')\""
    )]
    Pickle {
        /// The file.
        path: PathBuf,
    },
    /// A Hugging Face hub model could not be found or fetched.
    #[error("hub model `{id}`: {reason}")]
    Hub {
        /// The repo id as given (`org/name[@revision]`).
        id: String,
        /// What is missing and where it looked.
        reason: String,
    },
    /// A LoRA file cannot be merged.
    #[error("LoRA {path}: {reason}")]
    Lora {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint is neither an SD1.x nor an SDXL base model.
    #[error(
        "{path}: unsupported architecture: {found} (ditail runs Stable Diffusion 1.x and SDXL base checkpoints)"
    )]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// What it looks like.
        found: String,
    },
    /// A weight's shape disagrees with the network its configuration builds.
    #[error(
        "{path}: {component} tensor `{key}` has shape {found:?}, but the configuration gives it {expected:?}"
    )]
    WeightShape {
        /// The file.
        path: PathBuf,
        /// The network.
        component: &'static str,
        /// The tensor's name in the file.
        key: String,
        /// The shape the configuration gives.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor passed to a network has the wrong shape or type.
    #[error("invalid input `{name}`: {reason}")]
    InvalidInput {
        /// The input's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model or VAE spec names nothing that exists locally and is no hub repo id.
    #[error(
        "`{spec}`: no such file or folder, and not a Hugging Face repo id (org/name[@revision]); expected {expected}"
    )]
    NotFound {
        /// The spec as given.
        spec: String,
        /// What it should have named.
        expected: &'static str,
    },
    /// The tokenizer could not be built or failed on a prompt.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A backend name that is not one of cpu, wgpu, cuda.
    #[error("unknown backend `{0}` (expected cpu, wgpu or cuda)")]
    UnknownBackend(String),
    /// The backend exists but this build does not include it.
    #[error(
        "this build of ditail does not include the {backend} backend (rebuild with the \
         `{backend}` feature)"
    )]
    BackendNotCompiled {
        /// The backend's name.
        backend: &'static str,
    },
    /// The backend is compiled in but finds no device.
    #[error("{backend}: {hint}")]
    NoDevice {
        /// The backend's name.
        backend: &'static str,
        /// What to install or check.
        hint: &'static str,
    },
    /// A SPIR-V build (`vulkan` feature) on a Vulkan adapter it would compile invalid
    /// shaders for (see [`crate::device::Adapter::takes_spirv`]).
    #[error(
        "wgpu adapter `{adapter}` lacks the Vulkan extension \
         VK_KHR_workgroup_memory_explicit_layout, without which this build's SPIR-V compiler \
         (cubecl 0.11, the `vulkan` feature) writes invalid shaders; use a build without \
         `vulkan` (WGSL), another adapter (--device, see `ditail devices`) or --backend cpu"
    )]
    SpirvUnsupported {
        /// The adapter's name.
        adapter: String,
    },
    /// A device index the backend does not have.
    #[error("{backend} has no device {index}: {found}")]
    NoSuchDevice {
        /// The backend's name.
        backend: &'static str,
        /// The index asked for.
        index: usize,
        /// What there is.
        found: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
