//! The C API from C and Python: `examples/c/transfer.c` compiled with `cc` against the
//! shared library cargo builds for these tests, `examples/python/transfer.py` through
//! ctypes, both on the tiny fixture models; their PNGs must equal, pixel for pixel, what the
//! `ditail` command's library calls produce for the same settings (and the command's own
//! output when a fresh `target/<profile>/ditail` is there). Then `tests/c/errors.c`, the
//! error paths and a full transfer, plain and under valgrind with no leak reported.
//!
//! Unix only (a `cc`, `python3`, pthreads; apt packages build-essential, python3 and
//! valgrind), with the CPU backend (`flex`); CI runs them on Linux.
#![cfg(all(unix, feature = "flex"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use burn::prelude::*;
use burn::tensor::FloatDType;
use ditail_models::LoadOptions;
use ditail_pipeline::preprocess::load_rgb;
use ditail_pipeline::{
    InversionSettings, Model, ModelSpec, SamplingSettings, decode, invert, sample,
};

const PROMPT: &str = "a photo of a cat";
/// The small settings every run here uses (`--size 64 --inv-steps 4 --steps 4`).
const SIZE: u32 = 64;
const INV_STEPS: usize = 4;
const STEPS: usize = 4;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// `target/<profile>/deps`, where the test executable is (`deps/c_api-<hash>`) and where
/// cargo puts the crate's shared library when it builds it for these tests (only a build
/// of the crate itself copies it up to `target/<profile>`).
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    exe.parent().expect("target/<profile>/deps").to_path_buf()
}

/// `target/<profile>`.
fn profile_dir() -> PathBuf {
    deps_dir().parent().expect("target/<profile>").to_path_buf()
}

/// The shared library cargo built with this crate for these tests.
fn library() -> PathBuf {
    let name = if cfg!(target_os = "macos") {
        "libditail_capi.dylib"
    } else {
        "libditail_capi.so"
    };
    let path = deps_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing (cargo builds it with the crate's tests)",
        path.display()
    );
    path
}

/// A fresh folder under cargo's temporary folder for tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capi-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles C sources against the header and the shared library.
fn compile(sources: &[PathBuf], output: &Path, extra: &[&str]) {
    let lib = library();
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
        .args(sources)
        .arg("-o")
        .arg(output)
        .arg("-L")
        .arg(lib.parent().unwrap())
        .arg("-lditail_capi")
        .args(extra);
    let out = cmd
        .output()
        .expect("run cc (install a C compiler: build-essential)");
    assert!(
        out.status.success(),
        "cc failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that finds the shared library at run time.
fn with_library_path(mut cmd: Command) -> Command {
    let dir = library().parent().unwrap().to_path_buf();
    let var = if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else {
        "LD_LIBRARY_PATH"
    };
    let mut paths = vec![dir];
    paths.extend(std::env::split_paths(
        &std::env::var_os(var).unwrap_or_default(),
    ));
    cmd.env(var, std::env::join_paths(paths).unwrap());
    cmd
}

fn run(mut cmd: Command, what: &str) -> std::process::Output {
    let start = Instant::now();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e} (is it installed?)"));
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The transfer through the library calls `ditail transfer` makes (invert, sample,
/// `decode`, rounding to 8 bits), on the CPU in f32: `(width, height, rgb)`.
fn reference() -> &'static (u32, u32, Vec<u8>) {
    static REFERENCE: OnceLock<(u32, u32, Vec<u8>)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let device = Device::flex();
        let opts = LoadOptions {
            dtype: FloatDType::F32,
        };
        let load = |name: &str| {
            let spec = ModelSpec::new(fixture(&format!("models/{name}")).to_str().unwrap());
            Model::load(&spec, &device, opts).unwrap()
        };
        let (source, target) = (load("tiny-a"), load("tiny-b"));
        let content = load_rgb(&fixture("pipeline/content.png")).unwrap();
        let sampling = SamplingSettings {
            steps: STEPS,
            ..SamplingSettings::new(PROMPT)
        };
        let inversion = InversionSettings {
            steps: INV_STEPS,
            size: SIZE,
            ..InversionSettings::for_sampling(&sampling)
        };
        let inv = invert(&source, &content, &inversion, &device, &mut |_| true).unwrap();
        let latents = sample(&target, &inv, &sampling, &device, &mut |_| true).unwrap();
        let image = decode(&target, latents).unwrap();
        let [_, _, h, w] = image.dims();
        let values = image
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let plane = h * w;
        let mut rgb = vec![0u8; plane * 3];
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = (values[ch * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        (w as u32, h as u32, rgb)
    })
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

fn assert_same_pixels(path: &Path, expected: &(u32, u32, Vec<u8>), what: &str) {
    let got = read_png(path);
    assert_eq!(
        (got.0, got.1),
        (expected.0, expected.1),
        "{what}: image size"
    );
    let differing = got
        .2
        .iter()
        .zip(&expected.2)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} bytes differ from the reference",
        got.2.len()
    );
}

/// Arguments shared by the C and Python examples (after SOURCE TARGET IMAGE OUTPUT).
fn example_args(output: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        fixture("models/tiny-a"),
        fixture("models/tiny-b"),
        fixture("pipeline/content.png"),
        output.to_path_buf(),
    ]
    .iter()
    .map(|p| p.to_str().unwrap().to_string())
    .collect();
    for a in [
        "--prompt",
        PROMPT,
        "--size",
        &SIZE.to_string(),
        "--inv-steps",
        &INV_STEPS.to_string(),
        "--steps",
        &STEPS.to_string(),
        "--backend",
        "cpu",
        "--dtype",
        "f32",
    ] {
        args.push(a.to_string());
    }
    args
}

#[test]
fn c_example_equals_the_library_and_the_cli() {
    let dir = scratch("c-example");
    let exe = dir.join("transfer");
    compile(&[repo().join("examples/c/transfer.c")], &exe, &[]);
    let output = dir.join("out.png");
    let inversion = dir.join("inv.safetensors");
    let mut cmd = with_library_path(Command::new(&exe));
    cmd.args(example_args(&output))
        .arg("--save-inversion")
        .arg(&inversion);
    let out = run(cmd, "examples/c/transfer.c");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inversion 4/4") && stderr.contains("sampling 4/4"));
    assert!(inversion.is_file());
    assert_same_pixels(&output, reference(), "the C example");

    if let Some(cli) = fresh_cli() {
        let cli_out = dir.join("cli.png");
        let mut cmd = Command::new(&cli);
        cmd.args(["--backend", "cpu", "--dtype", "f32", "--quiet", "transfer"])
            .arg(fixture("pipeline/content.png"))
            .args(["--prompt", PROMPT, "--source"])
            .arg(fixture("models/tiny-a"))
            .arg("--target")
            .arg(fixture("models/tiny-b"))
            .args(["--size", "64", "--inv-steps", "4", "--steps", "4", "-o"])
            .arg(&cli_out);
        run(cmd, "ditail transfer");
        assert_same_pixels(
            &output,
            &read_png(&cli_out),
            "the C example against the CLI",
        );
    }
}

/// `target/<profile>/ditail` when it is newer than every source file it is built from
/// (`cargo test --workspace` builds it; a stale one from an older checkout is skipped).
fn fresh_cli() -> Option<PathBuf> {
    let cli = profile_dir().join("ditail");
    let built = std::fs::metadata(&cli).and_then(|m| m.modified()).ok()?;
    let newest = [
        "src",
        "crates/ditail-models/src",
        "crates/ditail-pipeline/src",
    ]
    .iter()
    .map(|d| newest_file(&repo().join(d)))
    .max()
    .flatten()?;
    if built >= newest {
        Some(cli)
    } else {
        eprintln!(
            "note: {} is older than its sources; not compared (cargo build to include it)",
            cli.display()
        );
        None
    }
}

fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

#[test]
fn python_example_equals_the_library() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = scratch("python-example");
    let output = dir.join("out.png");
    let mut cmd = Command::new(&python);
    cmd.arg(repo().join("examples/python/transfer.py"))
        .args(example_args(&output))
        .arg("--lib")
        .arg(library());
    let out = run(cmd, "examples/python/transfer.py");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sampling 4/4"));
    assert_same_pixels(&output, reference(), "the Python example");
}

fn error_test_binary(dir: &Path) -> PathBuf {
    let exe = dir.join("errors");
    compile(
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/errors.c")],
        &exe,
        &["-lpthread", "-lm"],
    );
    exe
}

fn error_test_args(dir: &Path) -> [PathBuf; 3] {
    [
        fixture("models"),
        fixture("pipeline/content.png"),
        dir.to_path_buf(),
    ]
}

#[test]
fn c_error_paths() {
    let dir = scratch("errors");
    let exe = error_test_binary(&dir);
    let mut cmd = with_library_path(Command::new(&exe));
    cmd.args(error_test_args(&dir));
    let out = run(cmd, "tests/c/errors.c");
    assert!(String::from_utf8_lossy(&out.stdout).contains("all error paths ok"));
}

/// The same program under valgrind: no invalid access, no leak ("definitely" or "possibly
/// lost") over the error paths and a full transfer. One CPU worker thread keeps it fast
/// (about 90 s). `tests/c/valgrind.supp` lists the process-wide statics of dependencies
/// that valgrind cannot tell from leaks.
#[cfg(target_os = "linux")]
#[test]
fn c_error_paths_under_valgrind() {
    if std::env::var_os("DITAIL_SKIP_VALGRIND").is_some() {
        eprintln!("DITAIL_SKIP_VALGRIND is set: skipped");
        return;
    }
    let dir = scratch("valgrind");
    let exe = error_test_binary(&dir);
    let mut cmd = with_library_path(Command::new("valgrind"));
    cmd.args([
        "--leak-check=full",
        "--error-exitcode=1",
        "--errors-for-leak-kinds=definite,possible",
        "--show-leak-kinds=definite,possible",
        "--num-callers=40",
    ])
    .arg(format!(
        "--suppressions={}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/c/valgrind.supp")
            .display()
    ))
    .arg(&exe)
    .args(error_test_args(&dir))
    .env("RAYON_NUM_THREADS", "1");
    let start = Instant::now();
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!(
            "valgrind: {e} (install it: apt-get install valgrind; or set DITAIL_SKIP_VALGRIND=1)"
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "valgrind: {:.1} s\n{}",
        start.elapsed().as_secs_f64(),
        stderr
            .lines()
            .filter(|l| l.contains("ERROR SUMMARY") || l.contains("lost:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "valgrind reported errors or leaks ({}):\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all error paths ok"));
    assert!(
        stderr.contains("definitely lost: 0 bytes") || stderr.contains("no leaks are possible"),
        "valgrind's leak summary is missing:\n{stderr}"
    );
}
