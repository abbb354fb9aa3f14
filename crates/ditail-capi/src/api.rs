//! The entry points. Each runs inside [`guard`]: panics are caught, failures become a
//! [`Status`] and a per-thread message.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use ditail_pipeline::preprocess::{MAX_IMAGE_PIXELS, MAX_WORKING_PIXELS, load_rgb};
use ditail_pipeline::{Progress, latents};
use image::RgbImage;

use crate::backend::{Backend, Compute, Dtype};
use crate::error::{Error, Result, Status, guard, guard_value, last_error_ptr};
use crate::handles::{Buffers, Table};
use crate::settings::opt_str;
use crate::settings::{
    ContextSettings, GenerationSettings, InversionSettings, ModelSpec, RawContextSettings,
    SamplingSettings, read_versioned, req_str,
};

/// The version of this API (of the header and the library's ABI): raised when something
/// changes that a caller compiled against an older header could notice. Compare it with
/// `ditail_api_version()` at run time.
pub const DITAIL_API_VERSION: u32 = 1;

/// Where the networks run: a backend, its device and a float type. Holds no weights.
pub struct Context {
    _opaque: [u8; 0],
}

/// A loaded checkpoint (networks, tokenizer, schedule), LoRAs merged. Read-only once loaded.
pub struct Model {
    _opaque: [u8; 0],
}

/// One content image inverted by a source model: every intermediate latent, reusable for
/// any number of targets.
pub struct Inversion {
    _opaque: [u8; 0],
}

/// Final latents of a sampling or text-to-image run, to decode with a model's VAE.
pub struct Latents {
    _opaque: [u8; 0],
}

/// Which long phase a progress report belongs to (the callback's `phase`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// DDIM inversion with the source model.
    Inversion = 0,
    /// Injected sampling with the target model.
    Sampling = 1,
    /// Text to image.
    Generation = 2,
}

/// Called after every step of a run, on the thread that made the call: `phase` is a
/// `ditail_phase`, `step` counts from 1 to `total`. Return true to go on, false to cancel
/// (the call then returns `DITAIL_STATUS_CANCELLED`). It may call ditail functions; it must
/// not unwind (no C++ exception, no longjmp) out of itself.
pub type ProgressFn = Option<
    unsafe extern "C" fn(phase: c_int, step: c_int, total: c_int, user_data: *mut c_void) -> bool,
>;

pub(crate) struct ContextObj {
    pub(crate) compute: Compute,
    /// Runs `ditail_transfer_file`'s jobs, made at the first (it keeps the last model).
    pub(crate) runner: std::sync::Mutex<Option<ditail_app::Runner>>,
}

pub(crate) struct ModelObj {
    model: ditail_pipeline::Model,
    ctx: Arc<ContextObj>,
}

/// An inversion (its tensors are on the device of the model that made it, or of the
/// context that loaded it).
pub(crate) struct InversionObj {
    inv: ditail_pipeline::Inversion,
}

pub(crate) struct LatentsObj {
    latents: Tensor<4>,
}

pub(crate) static CONTEXTS: Table<ContextObj> = Table::new("context");
static MODELS: Table<ModelObj> = Table::new("model");
static INVERSIONS: Table<InversionObj> = Table::new("inversion");
static LATENTS: Table<LatentsObj> = Table::new("latents");
static BUFFERS: Buffers = Buffers::new();

/// A handle as C sees it: an id dressed as a pointer, never dereferenced.
fn handle<T>(id: usize) -> *mut T {
    std::ptr::without_provenance_mut(id)
}

/// Clears an out-parameter and returns it, or fails when it is NULL.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn out_param<'a, T>(out: *mut *mut T, arg: &str) -> Result<&'a mut *mut T> {
    // SAFETY: the caller's contract.
    let out = unsafe { out.as_mut() }.ok_or_else(|| Error::invalid(format!("{arg} is NULL")))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

pub(crate) fn progress_fn(
    callback: ProgressFn,
    user_data: *mut c_void,
) -> impl FnMut(Progress) -> bool {
    move |p: Progress| {
        let Some(callback) = callback else {
            return true;
        };
        let phase = match p.phase {
            ditail_pipeline::Phase::Inversion => Phase::Inversion,
            ditail_pipeline::Phase::Sampling => Phase::Sampling,
            ditail_pipeline::Phase::Generation => Phase::Generation,
        };
        let clamp = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
        // SAFETY: the header's contract for callbacks.
        unsafe { callback(phase as c_int, clamp(p.step), clamp(p.total), user_data) }
    }
}

/// An RGB8 image from C, checked.
///
/// # Safety
/// `rgb` is NULL or `width * height * 3` readable bytes.
unsafe fn rgb_image(rgb: *const u8, width: u32, height: u32) -> Result<RgbImage> {
    if rgb.is_null() {
        return Err(Error::invalid("rgb is NULL"));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_IMAGE_PIXELS {
        return Err(Error::invalid(format!(
            "the image is {width} x {height} pixels: it must have between 1 and {MAX_IMAGE_PIXELS}"
        )));
    }
    // SAFETY: the caller's contract; the length fits (at most 3 · 2^26).
    let data = unsafe { std::slice::from_raw_parts(rgb, pixels as usize * 3) };
    Ok(RgbImage::from_raw(width, height, data.to_vec()).expect("the buffer has w·h·3 bytes"))
}

// ---------------------------------------------------------------------------------------
// Library, errors

/// The API version this library implements (`DITAIL_API_VERSION` of its header).
#[unsafe(no_mangle)]
pub extern "C" fn ditail_api_version() -> u32 {
    DITAIL_API_VERSION
}

/// The library's version, e.g. "0.1.0" (static; never free it).
#[unsafe(no_mangle)]
pub extern "C" fn ditail_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread, or "" when the last call succeeded.
/// Valid until this thread's next ditail call (copy it to keep it); never NULL, never free
/// it.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), last_error_ptr)
}

/// A short English name of a status (a `ditail_status` value), e.g. "cancelled"; "unknown
/// status" for other values. Static; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_status_string(status: c_int) -> *const c_char {
    Status::from_code(status)
        .map(|s| s.as_c_str().as_ptr())
        .unwrap_or(c"unknown status".as_ptr())
}

// ---------------------------------------------------------------------------------------
// Context

/// The default context settings: `DITAIL_BACKEND_AUTO`, `DITAIL_DTYPE_AUTO`.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_context_default_settings() -> ContextSettings {
    ContextSettings::default()
}

/// Creates a context: picks the backend and its device (`DITAIL_BACKEND_AUTO` probes for
/// GPUs; an explicit GPU backend must answer, else `DITAIL_STATUS_BACKEND`).
///
/// # Safety
/// `settings` is NULL or a `ditail_context_settings` of its `struct_size`; `out` is NULL
/// or writable. On failure `*out` is set to NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_context_new(
    settings: *const ContextSettings,
    out: *mut *mut Context,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let raw = unsafe { read_versioned(settings.cast::<RawContextSettings>(), "settings") }?;
        let backend = Backend::from_code(raw.backend).ok_or_else(|| {
            Error::invalid(format!(
                "settings->backend is {}, not a ditail_backend",
                raw.backend
            ))
        })?;
        let dtype = Dtype::from_code(raw.dtype).ok_or_else(|| {
            Error::invalid(format!(
                "settings->dtype is {}, not a ditail_dtype",
                raw.dtype
            ))
        })?;
        let compute = Compute::new(backend, dtype)?;
        *out = handle(CONTEXTS.insert(ContextObj {
            compute,
            runner: Default::default(),
        }));
        Ok(())
    })
}

/// What a context resolved its settings to (never `AUTO`). Either out-parameter may be
/// NULL.
///
/// # Safety
/// `backend` and `dtype` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_context_info(
    ctx: *const Context,
    backend: *mut Backend,
    dtype: *mut Dtype,
) -> Status {
    guard(|| {
        let ctx = CONTEXTS.get(ctx.addr(), "ctx")?;
        // SAFETY: the caller's contract.
        if let Some(b) = unsafe { backend.as_mut() } {
            *b = ctx.compute.backend;
        }
        // SAFETY: the header's contract: an out pointer is NULL or writable.
        if let Some(d) = unsafe { dtype.as_mut() } {
            *d = ctx.compute.dtype_code();
        }
        Ok(())
    })
}

/// Frees a context. Models, inversions and latents made with it stay usable (they keep
/// what they need of it). NULL is a no-op; a freed handle is refused with
/// `DITAIL_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_context_free(ctx: *mut Context) -> Status {
    guard(|| CONTEXTS.remove(ctx.addr()))
}

// ---------------------------------------------------------------------------------------
// Models

/// The default model spec: no model (set `model`), no LoRA, the model's own VAE, clip skip 1.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_model_default_spec() -> ModelSpec {
    ModelSpec::default()
}

/// Never download (`offline` true) or allow downloads again (false), for every later call
/// of the process: a model named by a Hugging Face repo id must then be in the cache (as
/// with the environment's `HF_HUB_OFFLINE=1`, which stays in force either way). A relative
/// path to a folder that does not exist reads as a repo id: offline, it fails at once
/// instead of going to the network.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_set_offline(offline: bool) -> Status {
    guard(|| {
        ditail_models::load::hub::set_offline(offline);
        Ok(())
    })
}

/// Loads a model in the context's float type, on its device. Everything that can be
/// checked from file headers (the model, VAE and LoRAs exist, the architecture is SD1.x or
/// SDXL base, every LoRA key fits) is checked before any weight is read.
///
/// # Safety
/// `spec` is NULL or a `ditail_model_spec` of its `struct_size` whose strings are NULL or
/// NUL-terminated and whose `loras` holds `n_loras` entries; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_model_load(
    ctx: *const Context,
    spec: *const ModelSpec,
    out: *mut *mut Model,
) -> Status {
    // SAFETY: the caller's contract; no embeddings folder is NULL.
    unsafe { ditail_model_load_with_embeddings(ctx, spec, std::ptr::null(), out) }
}

/// [`ditail_model_load`] with a folder of textual-inversion embeddings (`.safetensors`)
/// that the model's prompts may then name, A1111's way ("EasyNegative") or ComfyUI's
/// ("embedding:EasyNegative"); NULL `embeddings` is `ditail_model_load`'s default: the
/// `embeddings` folder of the A1111 or ComfyUI installation a model file sits in, if any.
/// An embedding of the other family, or an A1111 `.pt` pickle, is refused by name when a
/// prompt names it.
///
/// # Safety
/// As [`ditail_model_load`]; `embeddings` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_model_load_with_embeddings(
    ctx: *const Context,
    spec: *const ModelSpec,
    embeddings: *const c_char,
    out: *mut *mut Model,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        let ctx = CONTEXTS.get(ctx.addr(), "ctx")?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let mut spec = unsafe { read_versioned(spec, "spec") }?.to_pipeline()?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let dir = unsafe { opt_str(embeddings, "embeddings") }?;
        spec.embeddings = dir.map(std::path::PathBuf::from).into_iter().collect();
        let opts = ditail_models::LoadOptions {
            dtype: ctx.compute.dtype,
        };
        let model = ditail_pipeline::Model::load(&spec, &ctx.compute.device, opts)
            .map_err(|e| Error::from(e).context(format!("model {}", spec.model)))?;
        *out = handle(MODELS.insert(ModelObj { model, ctx }));
        Ok(())
    })
}

/// Frees a model. A call using it on another thread finishes first (the model goes when
/// it returns). NULL is a no-op; a freed handle is refused with
/// `DITAIL_STATUS_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_model_free(model: *mut Model) -> Status {
    guard(|| MODELS.remove(model.addr()))
}

// ---------------------------------------------------------------------------------------
// Inversion

/// The default inversion settings (the repository's METHOD.md): no prompt (set `prompt`),
/// α 2, β 0.5, 50 steps, size 512.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_inversion_default_settings() -> InversionSettings {
    InversionSettings::default()
}

fn invert_image(
    source: *const Model,
    image: Result<RgbImage>,
    settings: *const InversionSettings,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: &mut *mut Inversion,
) -> Result<()> {
    let source = MODELS.get(source.addr(), "source")?;
    // SAFETY: the callers' contract.
    let native = source.model.family().native_size();
    // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
    let settings = unsafe { read_versioned(settings, "settings") }?.to_pipeline(native)?;
    let image = image?;
    let mut progress = progress_fn(progress, user_data);
    let device = &source.ctx.compute.device;
    let inv = ditail_pipeline::invert(&source.model, &image, &settings, device, &mut progress)?;
    *out = handle(INVERSIONS.insert(InversionObj { inv }));
    Ok(())
}

/// Inverts an image with a source model: `rgb` holds `width * height` pixels, 3 bytes
/// each (R, G, B), row after row with no padding. It is resized and cropped as
/// `settings->size` says.
///
/// # Safety
/// `rgb` is NULL or `width * height * 3` readable bytes; `settings` is NULL or a
/// `ditail_inversion_settings` of its `struct_size` with NULL or NUL-terminated strings;
/// `out` is NULL or writable. `user_data` is only passed to `progress`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ditail_invert(
    source: *const Model,
    rgb: *const u8,
    width: u32,
    height: u32,
    settings: *const InversionSettings,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Inversion,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        // SAFETY: the header's contract: `rgb` is NULL or `width * height * 3` readable bytes.
        let image = unsafe { rgb_image(rgb, width, height) };
        invert_image(source, image, settings, progress, user_data, out)
    })
}

/// Inverts an image file (PNG, JPEG or WebP; upright by its EXIF orientation; alpha
/// dropped) with a source model.
///
/// # Safety
/// `path` is NULL or NUL-terminated; otherwise as `ditail_invert`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_invert_file(
    source: *const Model,
    path: *const c_char,
    settings: *const InversionSettings,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Inversion,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let path = unsafe { req_str(path, "path") }?;
        let image = load_rgb(Path::new(path)).map_err(Error::from);
        invert_image(source, image, settings, progress, user_data, out)
    })
}

/// Saves an inversion (safetensors, f32, with the settings and source that made it; the
/// `ditail` command's `--from-latents` reads it too). The file is replaced atomically.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_inversion_save(
    inv: *const Inversion,
    path: *const c_char,
) -> Status {
    guard(|| {
        let inv = INVERSIONS.get(inv.addr(), "inv")?;
        // SAFETY: the caller's contract.
        let path = unsafe { req_str(path, "path") }?;
        latents::save(Path::new(path), &inv.inv, None)?;
        Ok(())
    })
}

/// Loads an inversion saved by `ditail_inversion_save` (or `ditail invert`) onto the
/// context's device.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_inversion_load(
    ctx: *const Context,
    path: *const c_char,
    out: *mut *mut Inversion,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        let ctx = CONTEXTS.get(ctx.addr(), "ctx")?;
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let path = unsafe { req_str(path, "path") }?;
        let (inv, _) = latents::load(Path::new(path), &ctx.compute.device)?;
        *out = handle(INVERSIONS.insert(InversionObj { inv }));
        Ok(())
    })
}

/// Frees an inversion (NULL is a no-op; a freed handle is refused).
#[unsafe(no_mangle)]
pub extern "C" fn ditail_inversion_free(inv: *mut Inversion) -> Status {
    guard(|| INVERSIONS.remove(inv.addr()))
}

// ---------------------------------------------------------------------------------------
// Sampling, generation, decoding

/// The default sampling settings (the repository's METHOD.md): no prompt (set `prompt`),
/// ω 15, 50 steps, conv ratio 0.8, attention ratio 0.5, full mask.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_sampling_default_settings() -> SamplingSettings {
    SamplingSettings::default()
}

/// Samples a target model from an inversion while injecting the source's features: the
/// result keeps the content's structure in the target's style. The inversion may come from
/// any context (it is moved to the target's device) and serves any number of targets.
/// Injects at the method's sites for the target's family (`ditail_sample_at` takes others).
///
/// # Safety
/// `settings` is NULL or a `ditail_sampling_settings` of its `struct_size` with NULL or
/// NUL-terminated strings; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_sample(
    target: *const Model,
    inv: *const Inversion,
    settings: *const SamplingSettings,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Latents,
) -> Status {
    // SAFETY: the caller's contract, passed on.
    unsafe { sample_at(target, inv, settings, None, progress, user_data, out) }
}

/// `ditail_sample` injecting at `sites`: comma-separated diffusers module paths of the
/// target's U-Net, ResNets (`up_blocks.1.resnets.1`) and self-attention layers
/// (`up_blocks.1.attentions.2.transformer_blocks.0`), as the command's `--sites`; NULL or ""
/// takes the method's sites for the target's family (SD1.x: 1 ResNet and 8 attention
/// layers; SDXL: 1 and 4). A site the target does not have fails with
/// `DITAIL_STATUS_SETTINGS`, naming it.
///
/// # Safety
/// As `ditail_sample`; `sites` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ditail_sample_at(
    target: *const Model,
    inv: *const Inversion,
    settings: *const SamplingSettings,
    sites: *const c_char,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Latents,
) -> Status {
    // SAFETY: the caller's contract, passed on.
    unsafe { sample_at(target, inv, settings, Some(sites), progress, user_data, out) }
}

/// The two sampling calls: `sites` is `None` for `ditail_sample`, else its argument.
///
/// # Safety
/// As `ditail_sample_at`.
unsafe fn sample_at(
    target: *const Model,
    inv: *const Inversion,
    settings: *const SamplingSettings,
    sites: Option<*const c_char>,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Latents,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        let target = MODELS.get(target.addr(), "target")?;
        let inv = INVERSIONS.get(inv.addr(), "inv")?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let mut settings = unsafe { read_versioned(settings, "settings") }?.to_pipeline()?;
        if let Some(sites) = sites {
            // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
            let list = unsafe { opt_str(sites, "sites") }?.unwrap_or("");
            if !list.trim().is_empty() {
                settings.sites = Some(ditail_pipeline::InjectionSites::parse(list)?);
            }
        }
        let device = &target.ctx.compute.device;
        let inversion = inv.inv.on_device(device);
        ditail_pipeline::run::check_compatible(&target.model, &inversion, &settings)?;
        let mut progress = progress_fn(progress, user_data);
        let latents =
            ditail_pipeline::sample(&target.model, &inversion, &settings, device, &mut progress)?;
        *out = handle(LATENTS.insert(LatentsObj { latents }));
        Ok(())
    })
}

/// The default text-to-image settings: no prompt (set `prompt`), ω 7.5, 50 steps,
/// 512 x 512, seed 0.
#[unsafe(no_mangle)]
pub extern "C" fn ditail_generation_default_settings() -> GenerationSettings {
    GenerationSettings::default()
}

/// Text to image with a model (DDIM with guidance from seeded noise; the same seed gives
/// the same image on every machine and backend, up to float rounding).
///
/// # Safety
/// `settings` is NULL or a `ditail_generation_settings` of its `struct_size` with NULL or
/// NUL-terminated strings; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_generate(
    model: *const Model,
    settings: *const GenerationSettings,
    progress: ProgressFn,
    user_data: *mut c_void,
    out: *mut *mut Latents,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(out, "out") }?;
        let model = MODELS.get(model.addr(), "model")?;
        // SAFETY: the header's contract: NULL or a struct of its `struct_size`.
        let g = unsafe { read_versioned(settings, "settings") }?.to_pipeline()?;
        if u64::from(g.width) * u64::from(g.height) > MAX_WORKING_PIXELS {
            return Err(Error::new(
                Status::Settings,
                format!(
                    "{} x {} pixels is more than the {MAX_WORKING_PIXELS} ditail works at",
                    g.width, g.height
                ),
            ));
        }
        let mut progress = progress_fn(progress, user_data);
        let latents =
            ditail_pipeline::generate(&model.model, &g, &model.ctx.compute.device, &mut progress)?;
        *out = handle(LATENTS.insert(LatentsObj { latents }));
        Ok(())
    })
}

/// Frees latents (NULL is a no-op; a freed handle is refused).
#[unsafe(no_mangle)]
pub extern "C" fn ditail_latents_free(latents: *mut Latents) -> Status {
    guard(|| LATENTS.remove(latents.addr()))
}

/// Decodes latents with a model's VAE (usually the target's) into an RGB8 image: `*rgb`
/// gets `*width * *height * 3` bytes (R, G, B, row after row, no padding), which the
/// caller frees with `ditail_rgb_free`. Fails with `DITAIL_STATUS_NON_FINITE` rather than
/// return a black image when the VAE overflows (f16).
///
/// # Safety
/// `rgb`, `width` and `height` are NULL or writable (`rgb` must not be NULL). On failure
/// `*rgb` is set to NULL and the sizes to 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_decode(
    model: *const Model,
    latents: *const Latents,
    rgb: *mut *mut u8,
    width: *mut u32,
    height: *mut u32,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(rgb, "rgb") }?;
        // SAFETY: the header's contract: an out pointer is NULL or writable.
        let (mut width, mut height) = unsafe { (width.as_mut(), height.as_mut()) };
        for size in [&mut width, &mut height].into_iter().flatten() {
            **size = 0;
        }
        let model = MODELS.get(model.addr(), "model")?;
        let latents = LATENTS.get(latents.addr(), "latents")?;
        let device = &model.ctx.compute.device;
        let x = latents.latents.clone();
        let x = if x.device() == *device {
            x
        } else {
            x.to_device(device)
        };
        let image = ditail_pipeline::decode(&model.model, x.cast(model.model.dtype()))?;
        let image = ditail_pipeline::to_rgb(image)?;
        let (w, h) = image.dimensions();
        *out = BUFFERS.insert(image.into_raw());
        if let Some(width) = width {
            *width = w;
        }
        if let Some(height) = height {
            *height = h;
        }
        Ok(())
    })
}

/// Reads an image file (PNG, JPEG or WebP; upright by its EXIF orientation; alpha dropped)
/// into an RGB8 buffer the caller frees with `ditail_rgb_free`.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `rgb`, `width`, `height` as for `ditail_decode`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_load_image(
    path: *const c_char,
    rgb: *mut *mut u8,
    width: *mut u32,
    height: *mut u32,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { out_param(rgb, "rgb") }?;
        // SAFETY: the header's contract: an out pointer is NULL or writable.
        let (width, height) = unsafe { (width.as_mut(), height.as_mut()) };
        // SAFETY: the header's contract: a string argument is NULL or NUL-terminated.
        let path = unsafe { req_str(path, "path") }?;
        let image = load_rgb(Path::new(path))?;
        let (w, h) = image.dimensions();
        *out = BUFFERS.insert(image.into_raw());
        if let Some(width) = width {
            *width = w;
        }
        if let Some(height) = height {
            *height = h;
        }
        Ok(())
    })
}

/// Frees a buffer from `ditail_decode` or `ditail_load_image`. NULL is a no-op; a pointer
/// that is not a live ditail buffer is refused with `DITAIL_STATUS_INVALID_HANDLE` (but
/// freeing twice is a bug: the address may have been handed out again in between).
#[unsafe(no_mangle)]
pub extern "C" fn ditail_rgb_free(rgb: *mut u8) -> Status {
    guard(|| BUFFERS.remove(rgb))
}

/// Writes an RGB8 image (`width * height * 3` bytes, as `ditail_decode` returns) as a PNG,
/// through a temporary file renamed into place (no partial file is ever left at `path`).
///
/// # Safety
/// `path` is NULL or NUL-terminated; `rgb` is NULL or `width * height * 3` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ditail_write_png(
    path: *const c_char,
    rgb: *const u8,
    width: u32,
    height: u32,
) -> Status {
    guard(|| {
        // SAFETY: the caller's contract.
        let path = Path::new(unsafe { req_str(path, "path") }?);
        // SAFETY: the header's contract: `rgb` is NULL or `width * height * 3` readable bytes.
        let image = unsafe { rgb_image(rgb, width, height) }?;
        write_png(path, &image).map_err(|e| e.context(format!("writing {}", path.display())))
    })
}

fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    let io = |e: std::io::Error| {
        let status = match e.kind() {
            std::io::ErrorKind::NotFound => Status::NotFound,
            _ => Status::Io,
        };
        Error::new(status, e.to_string())
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid("the path names no file"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.ditail-tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut writer = std::io::BufWriter::new(file);
        image
            .write_to(&mut writer, image::ImageFormat::Png)
            .map_err(|e| Error::new(Status::Io, e.to_string()))?;
        let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
