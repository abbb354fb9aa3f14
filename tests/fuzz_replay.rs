//! Replays every committed fuzz input through the fuzz targets' own bodies
//! (`fuzz/bodies/`, shared with `fuzz/fuzz_targets/`): the minimised corpus
//! (`fuzz/corpus/<target>/`) and every crash the fuzzer found (`fuzz/regressions/<target>/`),
//! so that a plain `cargo test` keeps what was fixed fixed. Fuzzing itself needs nightly and
//! cargo-fuzz: `scripts/fuzz.sh`.

#[path = "../fuzz/bodies/mod.rs"]
mod bodies;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted (none if the folder does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs `target`'s body on each of its corpus and regression inputs; fails naming every
/// input that panicked.
fn replay(target: &str) {
    let body = bodies::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .expect("a fuzz target of that name");
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).expect("reading a fuzz input");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    bodies::remove_scratch();
    assert!(failed.is_empty(), "{target}: panicked on {failed:#?}");
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        /// Every target has a replay test, and a cargo-fuzz target file.
        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($target)),*];
            for (name, _) in bodies::TARGETS {
                assert!(tested.contains(name), "no replay test for {name}");
                let target = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fuzz/fuzz_targets")
                    .join(format!("{name}.rs"));
                assert!(target.is_file(), "{} is missing", target.display());
            }
        }
    };
}

replay_tests!(
    single_file,
    diffusers_config,
    lora,
    latents,
    manifest,
    image,
    tokenizer,
    tokenizer_files,
    png_metadata,
);
