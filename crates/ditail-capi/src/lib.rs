//! The C API of ditail (Diffusion Cocktail): a shared library (`libditail_capi.so`,
//! `libditail_capi.dylib`, `ditail_capi.dll`) and a static one, with the header
//! `include/ditail.h`, generated from this crate by cbindgen. The header is the reference:
//! every function, struct, ownership and thread-safety rule is documented there.
//!
//! The shape is llama.h's and stable-diffusion.h's: opaque handles (a context, models,
//! inversions, latents), settings structs that start with `struct_size` and come from a
//! `ditail_*_default_*()` function, a status code from every call with the message in
//! `ditail_last_error()` (per thread), and one free function per kind of allocation. No
//! panic crosses the boundary: each entry point catches them and returns
//! `DITAIL_STATUS_INTERNAL`.
//!
//! The same functions are Rust functions here (this crate is also an `rlib`). A transfer,
//! written as a C program would be:
//!
//! ```no_run
//! use std::ptr::null_mut;
//! use ditail_capi::*;
//!
//! unsafe {
//!     let mut ctx = null_mut();
//!     let settings = ditail_context_default_settings(); // backend and dtype: auto
//!     assert_eq!(ditail_context_new(&settings, &mut ctx), Status::Ok);
//!
//!     let (mut source, mut target) = (null_mut(), null_mut());
//!     let mut spec = ditail_model_default_spec();
//!     spec.model = c"sd15.safetensors".as_ptr();
//!     ditail_model_load(ctx, &spec, &mut source);
//!     spec.model = c"toonyou.safetensors".as_ptr();
//!     ditail_model_load(ctx, &spec, &mut target);
//!
//!     let mut inv = null_mut();
//!     let mut inv_settings = ditail_inversion_default_settings();
//!     inv_settings.prompt = c"a photo of a cat".as_ptr();
//!     let status = ditail_invert_file(source, c"photo.jpg".as_ptr(), &inv_settings, None, null_mut(), &mut inv);
//!     if status != Status::Ok {
//!         let message = std::ffi::CStr::from_ptr(ditail_last_error());
//!         panic!("{}: {}", status.as_str(), message.to_string_lossy());
//!     }
//!
//!     let mut latents = null_mut();
//!     let mut sampling = ditail_sampling_default_settings();
//!     sampling.prompt = c"a photo of a cat".as_ptr();
//!     ditail_sample(target, inv, &sampling, None, null_mut(), &mut latents);
//!
//!     let (mut rgb, mut w, mut h) = (null_mut(), 0, 0);
//!     ditail_decode(target, latents, &mut rgb, &mut w, &mut h);
//!     ditail_write_png(c"cat-toon.png".as_ptr(), rgb, w, h);
//!
//!     ditail_rgb_free(rgb);
//!     ditail_latents_free(latents);
//!     ditail_inversion_free(inv);
//!     ditail_model_free(target);
//!     ditail_model_free(source);
//!     ditail_context_free(ctx);
//! }
//! ```
//!
//! Errors are values, and freed handles are recognised (handles are ids, never reused):
//!
//! ```
//! use std::ptr::null_mut;
//! use ditail_capi::*;
//!
//! let mut ctx = null_mut();
//! let mut settings = ditail_context_default_settings();
//! settings.struct_size = 3; // not a size this library knows
//! assert_eq!(unsafe { ditail_context_new(&settings, &mut ctx) }, Status::InvalidArgument);
//! assert!(ctx.is_null());
//!
//! settings = ditail_context_default_settings();
//! settings.backend = Backend::Cpu;
//! assert_eq!(unsafe { ditail_context_new(&settings, &mut ctx) }, Status::Ok);
//! assert_eq!(ditail_context_free(ctx), Status::Ok);
//! assert_eq!(ditail_context_free(ctx), Status::InvalidHandle); // a double free is refused
//! let message = unsafe { std::ffi::CStr::from_ptr(ditail_last_error()) };
//! assert!(message.to_str().unwrap().contains("not a live ditail context handle"));
//! ```

mod api;
mod backend;
mod error;
mod handles;
mod settings;
mod transfer;

pub use api::*;
pub use backend::{Backend, Dtype};
pub use error::Status;
pub use settings::{
    ContextSettings, GenerationSettings, InversionSettings, Lora, ModelSpec, SamplingSettings,
};
pub use transfer::ditail_transfer_file;
