//! The settings structs C fills in, their defaults, and their conversion to the pipeline's
//! settings. Every struct starts with `struct_size`, so that it can grow: the library reads
//! the fields a caller's version of the struct has and takes defaults for the rest.

use std::ffi::{CStr, c_char};
use std::path::PathBuf;

use ditail_models::load::lora::LoraSpec;
use ditail_pipeline::settings::{DEFAULT_NEGATIVE, defaults};
use ditail_pipeline::{InversionSettings as PipelineInversion, Mask, ModelSpec as PipelineSpec};

use crate::backend::{Backend, Dtype};
use crate::error::{Error, Result};

/// How a context runs: `ditail_context_default_settings()`, then change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ContextSettings {
    /// `sizeof(ditail_context_settings)`, set by the defaults function.
    pub struct_size: usize,
    /// Where the networks run (default `DITAIL_BACKEND_AUTO`).
    pub backend: Backend,
    /// Float type (default `DITAIL_DTYPE_AUTO`: f32 on the CPU, f16 on GPUs).
    pub dtype: Dtype,
}

/// [`ContextSettings`] as read from C, with the enums as plain integers (a value C wrote
/// that is no enum member must be refused, not read as an enum).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawContextSettings {
    pub struct_size: usize,
    pub backend: i32,
    pub dtype: i32,
}

const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ContextSettings>() == size_of::<RawContextSettings>());
    assert!(align_of::<ContextSettings>() == align_of::<RawContextSettings>());
    assert!(offset_of!(ContextSettings, backend) == offset_of!(RawContextSettings, backend));
    assert!(offset_of!(ContextSettings, dtype) == offset_of!(RawContextSettings, dtype));
    assert!(size_of::<Backend>() == size_of::<i32>() && size_of::<Dtype>() == size_of::<i32>());
};

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            struct_size: size_of::<Self>(),
            backend: Backend::Auto,
            dtype: Dtype::Auto,
        }
    }
}

/// A LoRA merged into a model's weights at load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Lora {
    /// The LoRA's `.safetensors` file (kohya/A1111 incl. LoCon, PEFT or diffusers format).
    pub path: *const c_char,
    /// Its multiplier (0.7 is the usual choice).
    pub scale: f32,
}

/// A model as a user names it: `ditail_model_default_spec()`, then set `model`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec {
    /// `sizeof(ditail_model_spec)`, set by the defaults function.
    pub struct_size: usize,
    /// Required: a single-file `.safetensors` checkpoint (Civitai / A1111), a diffusers
    /// folder, or a Hugging Face repo id (`org/name` or `org/name@revision`, fetched into
    /// the standard cache unless `HF_HUB_OFFLINE=1`).
    pub model: *const c_char,
    /// `n_loras` LoRAs (may be NULL when `n_loras` is 0).
    pub loras: *const Lora,
    /// How many entries `loras` has.
    pub n_loras: usize,
    /// A VAE to use instead of the model's own (a VAE file, another checkpoint, a diffusers
    /// folder or a repo id), or NULL.
    pub vae: *const c_char,
    /// A1111's "Clip skip": 1 (or 0) uses the text encoder's last layer, 2 the one before.
    pub clip_skip: i32,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            struct_size: size_of::<Self>(),
            model: std::ptr::null(),
            loras: std::ptr::null(),
            n_loras: 0,
            vae: std::ptr::null(),
            clip_skip: 1,
        }
    }
}

/// How a content image is inverted with the source model (the defaults of the repository's
/// METHOD.md).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InversionSettings {
    /// `sizeof(ditail_inversion_settings)`, set by the defaults function.
    pub struct_size: usize,
    /// Required: what the content shows, e.g. "a photo of a cat" (usually the sampling
    /// prompt).
    pub prompt: *const c_char,
    /// NULL for the default "worst quality, blurry, NSFW"; "" for none.
    pub negative_prompt: *const c_char,
    /// Condition scaling α on the positive embedding (default 2).
    pub alpha: f64,
    /// Condition scaling β on the negative embedding (default 0.5).
    pub beta: f64,
    /// DDIM inversion steps (default 50).
    pub steps: u32,
    /// The image's shorter side is resized to this, then cropped to multiples of 8
    /// (default 0: the model's family's size, 512 for SD1.x, 1024 for SDXL).
    pub size: u32,
}

impl Default for InversionSettings {
    fn default() -> Self {
        let d = PipelineInversion::new("");
        Self {
            struct_size: size_of::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            alpha: d.alpha,
            beta: d.beta,
            steps: d.steps as u32,
            size: 0,
        }
    }
}

/// How the target model samples from an inversion (the defaults of the repository's
/// METHOD.md).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SamplingSettings {
    /// `sizeof(ditail_sampling_settings)`, set by the defaults function.
    pub struct_size: usize,
    /// Required: the prompt p+.
    pub prompt: *const c_char,
    /// NULL for the default "worst quality, blurry, NSFW"; "" for none.
    pub negative_prompt: *const c_char,
    /// Classifier-free guidance scale ω (default 15).
    pub omega: f64,
    /// Sampling steps (default 50); each must be an inversion timestep (equal counts, or
    /// e.g. 100 inversion steps for 50).
    pub steps: u32,
    /// Share of sampling steps that inject conv features (default 0.8).
    pub conv_ratio: f64,
    /// Share of sampling steps that inject self-attention q/k (default 0.5).
    pub attn_ratio: f64,
    /// Where to inject: NULL or "full" (default), "left", "right", "top", "bottom", or a
    /// grayscale PNG's path (white: inject), of the content's aspect ratio.
    pub mask: *const c_char,
    /// Skip the injection entirely (an ablation; default false).
    pub no_injection: bool,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        let d = ditail_pipeline::SamplingSettings::new("");
        Self {
            struct_size: size_of::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            omega: d.omega,
            steps: d.steps as u32,
            conv_ratio: d.conv_ratio,
            attn_ratio: d.attn_ratio,
            mask: std::ptr::null(),
            no_injection: false,
        }
    }
}

/// Text to image (the `ditail generate` command's defaults).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GenerationSettings {
    /// `sizeof(ditail_generation_settings)`, set by the defaults function.
    pub struct_size: usize,
    /// Required: the prompt.
    pub prompt: *const c_char,
    /// NULL for the default "worst quality, blurry, NSFW"; "" for none.
    pub negative_prompt: *const c_char,
    /// Classifier-free guidance scale (default 7.5).
    pub omega: f64,
    /// DDIM steps (default 50).
    pub steps: u32,
    /// Image width in pixels, a multiple of 8 (default 512).
    pub width: u32,
    /// Image height in pixels, a multiple of 8 (default 512).
    pub height: u32,
    /// The noise seed (default 0).
    pub seed: u64,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            struct_size: size_of::<Self>(),
            prompt: std::ptr::null(),
            negative_prompt: std::ptr::null(),
            omega: defaults::GENERATION_OMEGA,
            steps: defaults::STEPS as u32,
            width: defaults::SIZE,
            height: defaults::SIZE,
            seed: 0,
        }
    }
}

/// A settings struct C passes by pointer, with a leading `struct_size`.
///
/// # Safety
/// `Self` is `repr(C)`, begins with a `usize` `struct_size`, and every bit pattern C may
/// write into its fields is a valid value of it (no Rust enums, see [`RawContextSettings`]).
pub(crate) unsafe trait Versioned: Copy + Sized {
    /// What the struct is called in C, for messages.
    const NAME: &'static str;
    /// The sizes of every released version of the struct, oldest first.
    const SIZES: &'static [usize];
    /// The defaults, which fill the fields an older caller does not have.
    fn defaults() -> Self;
}

// SAFETY: `repr(C)`, `struct_size` first, and plain integers where C writes its enums.
unsafe impl Versioned for RawContextSettings {
    const NAME: &'static str = "ditail_context_settings";
    const SIZES: &'static [usize] = &[size_of::<Self>()];
    fn defaults() -> Self {
        let d = ContextSettings::default();
        Self {
            struct_size: d.struct_size,
            backend: d.backend as i32,
            dtype: d.dtype as i32,
        }
    }
}

macro_rules! versioned {
    ($t:ty, $name:literal) => {
        // SAFETY: each struct below is `repr(C)` with `struct_size` first, and holds only
        // numbers, `bool`s and pointers (valid for every bit pattern C may write, `bool`
        // aside: the header asks for 0 or 1), no Rust enum.
        unsafe impl Versioned for $t {
            const NAME: &'static str = $name;
            const SIZES: &'static [usize] = &[size_of::<Self>()];
            fn defaults() -> Self {
                Self::default()
            }
        }
    };
}
versioned!(ModelSpec, "ditail_model_spec");
versioned!(InversionSettings, "ditail_inversion_settings");
versioned!(SamplingSettings, "ditail_sampling_settings");
versioned!(GenerationSettings, "ditail_generation_settings");

/// Reads a settings struct from C: checks its `struct_size` against the released versions,
/// then takes that many bytes over the defaults.
///
/// # Safety
/// `ptr` is NULL or points to at least `struct_size` readable bytes.
pub(crate) unsafe fn read_versioned<T: Versioned>(ptr: *const T, arg: &str) -> Result<T> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{arg} is NULL")));
    }
    // SAFETY: every version of the struct begins with a `size_t`.
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    if !T::SIZES.contains(&size) {
        return Err(Error::invalid(format!(
            "{arg}->struct_size is {size}, but this library knows {} of size {}: start from \
             the defaults function (which sets it), and use the header that came with the library",
            T::NAME,
            T::SIZES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    let mut out = T::defaults();
    // SAFETY: `size` bytes are readable (a known version's size, at most `size_of::<T>()`)
    // and any bytes make valid fields (the trait's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            size.min(size_of::<T>()),
        );
    }
    Ok(out)
}

/// A C string argument: `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
pub(crate) unsafe fn opt_str<'a>(ptr: *const c_char, arg: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(Some)
        .map_err(|_| Error::invalid(format!("{arg} is not UTF-8")))
}

/// A required C string argument.
///
/// # Safety
/// As [`opt_str`].
pub(crate) unsafe fn req_str<'a>(ptr: *const c_char, arg: &str) -> Result<&'a str> {
    // SAFETY: the caller's contract.
    unsafe { opt_str(ptr, arg) }?.ok_or_else(|| Error::invalid(format!("{arg} is NULL")))
}

fn negative(ptr: *const c_char, arg: &str) -> Result<String> {
    // SAFETY: settings' strings are NULL or NUL-terminated (the header's contract).
    Ok(unsafe { opt_str(ptr, arg) }?
        .unwrap_or(DEFAULT_NEGATIVE)
        .to_string())
}

impl ModelSpec {
    /// The pipeline's spec.
    pub(crate) fn to_pipeline(self) -> Result<PipelineSpec> {
        // SAFETY: (all strings and the array) the header's contract.
        let model = unsafe { req_str(self.model, "spec->model") }?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let vae = unsafe { opt_str(self.vae, "spec->vae") }?.map(str::to_string);
        if self.n_loras > 0 && self.loras.is_null() {
            return Err(Error::invalid(format!(
                "spec->loras is NULL but spec->n_loras is {}",
                self.n_loras
            )));
        }
        let loras = match self.n_loras {
            0 => &[][..],
            // SAFETY: the header's contract: `loras` holds `n_loras` entries (NULL with a count is refused above).
            n => unsafe { std::slice::from_raw_parts(self.loras, n) },
        };
        let loras = loras
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
                let path = unsafe { req_str(l.path, &format!("spec->loras[{i}].path")) }?;
                if !l.scale.is_finite() {
                    return Err(Error::new(
                        crate::Status::Settings,
                        format!("spec->loras[{i}].scale is {}, not a finite number", l.scale),
                    ));
                }
                Ok(LoraSpec {
                    path: PathBuf::from(path),
                    scale: l.scale,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if self.clip_skip < 0 {
            return Err(Error::new(
                crate::Status::Settings,
                format!(
                    "spec->clip_skip is {}: 1 uses the last layer, 2 the one before, ...",
                    self.clip_skip
                ),
            ));
        }
        Ok(PipelineSpec {
            model: model.to_string(),
            loras,
            vae,
            clip_skip: self.clip_skip as usize,
            embeddings: Vec::new(),
        })
    }
}

impl InversionSettings {
    /// The pipeline's settings, validated; size 0 is `native`, the model family's size.
    pub(crate) fn to_pipeline(self, native: u32) -> Result<PipelineInversion> {
        // SAFETY: the header's contract.
        let prompt = unsafe { req_str(self.prompt, "settings->prompt") }?;
        let settings = PipelineInversion {
            prompt: prompt.to_string(),
            negative_prompt: negative(self.negative_prompt, "settings->negative_prompt")?,
            alpha: self.alpha,
            beta: self.beta,
            steps: self.steps as usize,
            size: if self.size == 0 { native } else { self.size },
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl SamplingSettings {
    /// The pipeline's settings, validated.
    pub(crate) fn to_pipeline(self) -> Result<ditail_pipeline::SamplingSettings> {
        // SAFETY: the header's contract.
        let prompt = unsafe { req_str(self.prompt, "settings->prompt") }?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let mask = unsafe { opt_str(self.mask, "settings->mask") }?.unwrap_or("full");
        let mask = Mask::parse(mask).map_err(|e| Error::from(e).context("settings->mask"))?;
        let settings = ditail_pipeline::SamplingSettings {
            prompt: prompt.to_string(),
            negative_prompt: negative(self.negative_prompt, "settings->negative_prompt")?,
            omega: self.omega,
            steps: self.steps as usize,
            conv_ratio: self.conv_ratio,
            attn_ratio: self.attn_ratio,
            mask,
            no_injection: self.no_injection,
            always_batch_source: false,
            sites: None,
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl GenerationSettings {
    /// The settings in Rust types, checked.
    pub(crate) fn to_pipeline(self) -> Result<ditail_pipeline::GenerationSettings> {
        // SAFETY: the header's contract.
        let prompt = unsafe { req_str(self.prompt, "settings->prompt") }?;
        let settings_error = |m: String| Error::new(crate::Status::Settings, m);
        if !self.omega.is_finite() {
            return Err(settings_error(format!(
                "settings->omega is {}, not a finite number",
                self.omega
            )));
        }
        if self.steps == 0 {
            return Err(settings_error("settings->steps must be at least 1".into()));
        }
        Ok(ditail_pipeline::GenerationSettings {
            prompt: prompt.to_string(),
            negative_prompt: negative(self.negative_prompt, "settings->negative_prompt")?,
            omega: self.omega,
            steps: self.steps as usize,
            height: self.height,
            width: self.width,
            seed: self.seed,
        })
    }
}
