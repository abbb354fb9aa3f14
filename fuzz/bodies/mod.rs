//! The bodies of the fuzz targets, one module each, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_replay.rs`, which replays the committed
//! corpus and crash regressions through them under a plain `cargo test`.
//!
//! A body returns normally for every input, accepted or refused with an error: a panic (an
//! `unwrap`, an index out of range, an overflow, a failed assertion of the invariants each
//! body states) is the crash the fuzzer looks for. Readers that take paths get the input
//! written to a fresh file in a scratch folder (tmpfs where there is one).

#![allow(dead_code)]

pub mod diffusers_config;
pub mod image;
pub mod latents;
pub mod lora;
pub mod manifest;
pub mod png_metadata;
pub mod single_file;
pub mod tokenizer;
pub mod tokenizer_files;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use ditail::models::load::{Fault, Source};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the folder under `fuzz/corpus/` and `fuzz/regressions/`) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("single_file", single_file::run),
    ("diffusers_config", diffusers_config::run),
    ("lora", lora::run),
    ("latents", latents::run),
    ("manifest", manifest::run),
    ("image", image::run),
    ("tokenizer", tokenizer::run),
    ("tokenizer_files", tokenizer_files::run),
    ("png_metadata", png_metadata::run),
];

/// The repository's root (where `tests/fixtures/` is), found from the including crate's
/// manifest folder: the root itself for the tests, `fuzz/` for the fuzz targets.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .find(|d| d.join("tests/fixtures/models/tiny-a").is_dir())
            .expect("the repository's tests/fixtures above CARGO_MANIFEST_DIR")
            .to_path_buf()
    })
}

/// This thread's scratch folder (tests replay targets on parallel threads):
/// `$DITAIL_FUZZ_SCRATCH` if set, else `/dev/shm` (or the temporary folder), in a folder
/// named after the process and thread; [`remove_scratch`] removes it.
pub fn scratch() -> PathBuf {
    thread_local! {
        static DIR: PathBuf = {
            static THREADS: AtomicUsize = AtomicUsize::new(0);
            let base = std::env::var_os("DITAIL_FUZZ_SCRATCH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let shm = Path::new("/dev/shm");
                    if shm.is_dir() {
                        shm.to_path_buf()
                    } else {
                        std::env::temp_dir()
                    }
                });
            let n = THREADS.fetch_add(1, Ordering::Relaxed);
            base.join(format!("ditail-fuzz-{}-{n}", std::process::id()))
        };
    }
    let dir = DIR.with(PathBuf::clone);
    std::fs::create_dir_all(&dir).expect("creating the fuzz scratch folder");
    dir
}

/// Removes this thread's scratch folder (it is made again if needed).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

/// Writes `data` to a new file `name` in the scratch folder and returns its path. The old
/// file is unlinked first, so a mapping of the previous input (a `WeightFile`) never sees
/// its bytes change.
pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, data).expect("writing the fuzz input to the scratch folder");
    path
}

/// The CPU device.
pub fn device() -> burn::prelude::Device {
    ditail::models::device::Backend::Cpu
        .device()
        .expect("the CPU backend is built in")
}

/// The most bytes [`draw`] converts for one tensor: fuzz inputs are small, so only a
/// declared size (a reshape, LoRA-merged base weights) can be larger.
const DRAW_LIMIT: usize = 64 << 20;

/// Does what loading does with planned tensors short of building the network: makes each
/// source a burn-store tensor and draws its bytes (decoding, reshaping, merging LoRA
/// updates, checking values). Errors are what loading would report; only a panic is a
/// finding.
pub fn draw(sources: Vec<(String, Source)>) {
    for (name, source) in sources {
        // A fault of its own per tensor, so that every one is drawn.
        let fault = Fault::default();
        let Ok(pack) = source.into_pack(name, burn::tensor::FloatDType::F32, &fault) else {
            continue;
        };
        if pack.byte_len() <= DRAW_LIMIT {
            let _ = pack.into_bytes();
        }
    }
}
