//! The `ditail` command end to end on the tiny fixture models (CPU backend): every command's
//! outputs exist and decode, metadata round-trips, `--save-latents` matches the library,
//! batches resume and shard exactly, and invalid inputs exit 2 with a message and no output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_close, cpu, fixtures, loading, model_dir};
use ditail::models::LoadOptions;
use ditail::pipeline::{
    InversionSettings, Model, ModelSpec, SamplingSettings, invert, latents, preprocess, sample,
};
use serde_json::{Value, json};
use tempfile::TempDir;

fn content() -> PathBuf {
    fixtures().join("pipeline/content.png")
}

fn model(name: &str) -> String {
    model_dir(name).display().to_string()
}

/// Runs `ditail` on the CPU with a private hash cache and no hub access.
fn ditail(tmp: &Path, args: &[&str]) -> Output {
    ditail_env(tmp, args, &[])
}

/// The variables through which cluster schedulers give a task its shard.
const SCHEDULER_VARS: [&str; 7] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "DITAIL_SHARD_COUNT",
];

/// `ditail` with `vars` set, and no scheduler variable of the environment the tests run in
/// (a test run inside a Slurm job must not shard the batches).
fn ditail_env(tmp: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ditail"));
    cmd.args(["--backend", "cpu"])
        .args(args)
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.join("hf"));
    for v in SCHEDULER_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(vars.iter().copied())
        .output()
        .expect("the ditail binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        stderr(out)
    );
}

/// Small and quick: 64 px, 4 + 4 steps.
const QUICK: [&str; 6] = ["--size", "64", "--inv-steps", "4", "--steps", "4"];

fn png_text(path: &Path) -> Vec<(String, String)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.utf8_text {
        out.push((c.keyword.clone(), c.get_text().unwrap()));
    }
    out
}

fn record(path: &Path) -> Value {
    let text = png_text(path);
    let json = &text
        .iter()
        .find(|(k, _)| k == "ditail")
        .expect("a ditail chunk")
        .1;
    serde_json::from_str(json).unwrap()
}

fn pixels(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Files in a folder (hidden ones too: a leftover temporary file is a bug), sorted.
/// The PNGs in `dir` (a batch also writes its summary there).
fn pngs(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".png"))
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn transfer_writes_a_png_with_its_settings_and_latents_that_match_the_library() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out.png");
    let lat = tmp.path().join("run.safetensors");
    let noise = tmp.path().join("noise.png");
    let (src, tgt) = (model("tiny-a"), model("tiny-b"));
    let img = content().display().to_string();
    let mut args = vec![
        "transfer",
        &img,
        "--prompt",
        "a cat",
        "--source",
        &src,
        "--target",
        &tgt,
        "--alpha",
        "1.5",
        "--mask",
        "left",
        "--save-latents",
        lat.to_str().unwrap(),
        "--save-noise",
        noise.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(QUICK);
    let run = ditail(tmp.path(), &args);
    assert_ok(&run);
    // 96x72 -> shorter side 64 -> 85x64 -> cropped to multiples of 8.
    assert_eq!(pixels(&out).dimensions(), (80, 64));
    assert_eq!(pixels(&noise).dimensions(), (80, 64));

    let rec = record(&out);
    assert_eq!(rec["kind"], "transfer");
    assert_eq!(rec["prompt"], "a cat");
    assert_eq!(rec["model"]["model"], tgt.as_str());
    assert_eq!(rec["source"]["model"], src.as_str());
    assert_eq!(rec["model"]["hash"].as_str().unwrap().len(), 10);
    assert_ne!(rec["model"]["hash"], rec["source"]["hash"]);
    let d = &rec["ditail"];
    assert_eq!(
        (d["alpha"].as_f64(), d["beta"].as_f64()),
        (Some(1.5), Some(0.5))
    );
    assert_eq!(
        (d["inv_steps"].as_u64(), d["steps"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(d["mask"], "left");
    assert_eq!(d["inv_prompt"], "a cat");
    let params = &png_text(&out)
        .into_iter()
        .find(|(k, _)| k == "parameters")
        .unwrap()
        .1;
    assert!(
        params.starts_with("a cat\nNegative prompt: worst quality, blurry, NSFW\nSteps: 4, Sampler: DDIM, CFG scale: 15,")
            && params.contains("Size: 80x64")
            && params.contains("Model: tiny-b"),
        "{params}"
    );

    // The same run through the library gives the same latents.
    let device = cpu();
    let load = |m: &str| Model::load(&ModelSpec::new(m), &device, LoadOptions::default()).unwrap();
    let (source, target) = (load(&src), load(&tgt));
    let mut inv_settings = InversionSettings::new("a cat");
    (inv_settings.alpha, inv_settings.steps, inv_settings.size) = (1.5, 4, 64);
    let mut spl = SamplingSettings::new("a cat");
    spl.steps = 4;
    spl.mask = ditail::pipeline::Mask::Left;
    let image = preprocess::load_rgb(&content()).unwrap();
    let inv = invert(&source, &image, &inv_settings, &device, &mut |_| true).unwrap();
    let fin = sample(&target, &inv, &spl, &device, &mut |_| true).unwrap();
    let (saved, saved_final) = latents::load(&lat, &device).unwrap();
    assert_eq!(saved.meta(), inv.meta());
    assert_eq!(
        saved.latents().keys().collect::<Vec<_>>(),
        inv.latents().keys().collect::<Vec<_>>()
    );
    for (t, z) in inv.latents() {
        assert_close(
            &format!("Z[{t}]"),
            &saved.latents()[t].clone().into_data(),
            &z.clone().into_data(),
            1e-6,
        );
    }
    assert_close(
        "final",
        &saved_final.unwrap().into_data(),
        &fin.into_data(),
        1e-6,
    );

    // Sampling again from the saved latents reproduces the image exactly.
    let again = tmp.path().join("again.png");
    let mut args = vec![
        "transfer",
        "--from-latents",
        lat.to_str().unwrap(),
        "--prompt",
        "a cat",
        "--target",
        &tgt,
        "--mask",
        "left",
        "-o",
        again.to_str().unwrap(),
    ];
    args.extend(["--steps", "4"]);
    assert_ok(&ditail(tmp.path(), &args));
    assert_eq!(pixels(&again), pixels(&out));
}

#[test]
fn generate_is_reproducible_from_its_seed() {
    let tmp = TempDir::new().unwrap();
    let m = model("tiny-a");
    let run = |seed: &str, name: &str| {
        let out = tmp.path().join(name);
        let r = ditail(
            tmp.path(),
            &[
                "generate",
                "--prompt",
                "a house",
                "--model",
                &m,
                "--seed",
                seed,
                "--size",
                "64",
                "--steps",
                "3",
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert_ok(&r);
        out
    };
    let (a, b, c) = (run("7", "a.png"), run("7", "b.png"), run("8", "c.png"));
    assert_eq!(pixels(&a).dimensions(), (64, 64));
    assert_eq!(pixels(&a), pixels(&b));
    assert_ne!(pixels(&a), pixels(&c));
    let rec = record(&a);
    assert_eq!(
        (rec["kind"].as_str(), rec["seed"].as_u64()),
        (Some("generate"), Some(7))
    );
    assert_eq!(rec["omega"].as_f64(), Some(7.5));
}

#[test]
fn invert_once_then_sample_any_target() {
    let tmp = TempDir::new().unwrap();
    let lat = tmp.path().join("inv.safetensors");
    let m = model("tiny-a");
    assert_ok(&ditail(
        tmp.path(),
        &[
            "invert",
            content().to_str().unwrap(),
            "--source",
            &m,
            "--prompt",
            "a cat",
            "--inv-steps",
            "4",
            "--size",
            "64",
            "-o",
            lat.to_str().unwrap(),
        ],
    ));
    let (inv, fin) = latents::load(&lat, &cpu()).unwrap();
    assert_eq!(inv.latents().len(), 4);
    assert!(fin.is_none());
    assert_eq!(inv.meta().source, m);
    for target in ["tiny-a", "tiny-b"] {
        let out = tmp.path().join(format!("{target}.png"));
        assert_ok(&ditail(
            tmp.path(),
            &[
                "transfer",
                "--from-latents",
                lat.to_str().unwrap(),
                "--prompt",
                "a cat",
                "--target",
                &model(target),
                "--steps",
                "4",
                "-o",
                out.to_str().unwrap(),
            ],
        ));
        assert_eq!(record(&out)["source"]["model"], m.as_str());
    }
}

#[test]
fn cocktail_gives_m_squared_images_and_a_sheet() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("mix");
    let (a, b) = (model("tiny-a"), model("tiny-b"));
    let cocktail = |content: &[&str], dir: &Path| {
        let mut args = vec!["cocktail", "--model", &a, "--model", &b];
        args.extend(content);
        let d = dir.display().to_string();
        args.extend(["-o", &d, "--size", "64", "--inv-steps", "2", "--steps", "2"]);
        assert_ok(&ditail(tmp.path(), &args));
    };
    cocktail(&["--prompt", "a cat"], &dir);
    let expected: Vec<String> = [
        "prompt1--content--tiny-a.png",
        "prompt1--content--tiny-b.png",
        "prompt1--sheet.png",
        "prompt1--tiny-a--to--tiny-a.png",
        "prompt1--tiny-a--to--tiny-b.png",
        "prompt1--tiny-b--to--tiny-a.png",
        "prompt1--tiny-b--to--tiny-b.png",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(files(&dir), expected);
    let rec = record(&dir.join("prompt1--tiny-a--to--tiny-b.png"));
    assert_eq!(
        (
            rec["source"]["model"].as_str(),
            rec["model"]["model"].as_str()
        ),
        (Some(a.as_str()), Some(b.as_str()))
    );
    let sheet = pixels(&dir.join("prompt1--sheet.png"));
    assert!(sheet.width() > 2 * 256 && sheet.height() > 2 * 256);

    // Image mode: one inversion per source, every target.
    let dir2 = tmp.path().join("img");
    let img = content().display().to_string();
    cocktail(&["--image", &img, "--prompt", "a cat"], &dir2);
    assert_eq!(files(&dir2).len(), 5);
}

fn write_manifest(dir: &Path, rows: &[&str]) -> PathBuf {
    let path = dir.join("jobs.csv");
    let mut text = String::from("id,image,prompt,source,target,steps,inv_steps,size\n");
    for r in rows {
        text += r;
        text += "\n";
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A Slurm array task and a Kubernetes Indexed Job pod take their shard from the
/// scheduler's variables, say which, and run only its rows.
#[test]
fn batch_takes_its_shard_from_slurm_or_kubernetes() {
    let tmp = TempDir::new().unwrap();
    std::fs::copy(content(), tmp.path().join("content.png")).unwrap();
    let a = model("tiny-a");
    let rows: Vec<String> = (1..=5)
        .map(|i| format!("r{i},content.png,a cat {i},{a},{a},2,2,64"))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let manifest = write_manifest(tmp.path(), &rows);
    let m = manifest.to_str().unwrap();
    let run = |out: &str, vars: &[(&str, &str)]| {
        let o = tmp.path().join(out);
        let res = ditail_env(tmp.path(), &["batch", m, "-o", o.to_str().unwrap()], vars);
        (res, pngs(&o))
    };
    // `sbatch --array=1-3`: task 3 is shard 2 of 3 (five equal rows: 2, 1, 2 by work).
    let (res, made) = run(
        "slurm",
        &[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ],
    );
    assert_ok(&res);
    assert!(
        stderr(&res).contains("shard 2/3 (Slurm array task 3 of 1-3)"),
        "{}",
        stderr(&res)
    );
    assert_eq!(made, ["r4.png", "r5.png"]);
    // An Indexed Job with completions 2: index 1 runs the second half by work.
    let (res, made) = run(
        "k8s",
        &[("JOB_COMPLETION_INDEX", "1"), ("DITAIL_SHARD_COUNT", "2")],
    );
    assert_ok(&res);
    assert!(
        stderr(&res).contains("shard 1/2 (Kubernetes"),
        "{}",
        stderr(&res)
    );
    assert_eq!(made, ["r3.png", "r4.png", "r5.png"]);
    // Without the count the pod refuses to guess (exit 2, nothing written).
    let (res, made) = run("k8s-nocount", &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(stderr(&res).contains("--shard-count"), "{}", stderr(&res));
    assert!(made.is_empty());
}

#[test]
fn batch_shards_partition_rows_and_a_rerun_skips_done_rows() {
    let tmp = TempDir::new().unwrap();
    std::fs::copy(content(), tmp.path().join("content.png")).unwrap();
    let (a, b) = (model("tiny-a"), model("tiny-b"));
    let rows: Vec<String> = (1..=5)
        .map(|i| {
            let target = if i % 2 == 0 { &b } else { &a };
            format!("r{i},content.png,a cat {i},{a},{target},2,2,64")
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let manifest = write_manifest(tmp.path(), &rows);
    let out = tmp.path().join("out");
    let m = manifest.to_str().unwrap();
    let o = out.to_str().unwrap();
    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let before = files(&out);
        assert_ok(&ditail(
            tmp.path(),
            &["batch", m, "-o", o, "--shard", shard],
        ));
        let new: Vec<String> = pngs(&out)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        seen.push(new);
    }
    // Rows by their models (tiny-a > tiny-a: r1, r3, r5; then tiny-a > tiny-b: r2, r4),
    // cut where the work is even.
    assert_eq!(seen[0], ["r1.png", "r3.png"]);
    assert_eq!(seen[1], ["r2.png", "r4.png", "r5.png"]);
    assert_eq!(record(&out.join("r4.png"))["model"]["model"], b.as_str());
    assert_eq!(record(&out.join("r4.png"))["prompt"], "a cat 4");

    // A rerun skips every row and rewrites nothing.
    let mtime = std::fs::metadata(out.join("r1.png"))
        .unwrap()
        .modified()
        .unwrap();
    let rerun = ditail(tmp.path(), &["batch", m, "-o", o]);
    assert_ok(&rerun);
    assert!(
        stderr(&rerun).contains("0 done, 5 skipped"),
        "{}",
        stderr(&rerun)
    );
    assert_eq!(
        std::fs::metadata(out.join("r1.png"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    // The sharded runs: both shards' summaries, every row done.
    let status = ditail(tmp.path(), &["batch", m, "-o", o, "--status"]);
    assert_ok(&status);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("5 rows: 5 done, 0 failed, 0 missing"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let shard0: Value =
        serde_json::from_slice(&std::fs::read(out.join("batch-summary-0-of-2.json")).unwrap())
            .unwrap();
    assert_eq!(shard0["done"], json!(["r1", "r3"]));

    // A bad row is reported and the others still run; the exit code says something failed.
    let manifest = write_manifest(
        tmp.path(),
        &[
            &format!("ok,content.png,a cat,{a},{a},2,2,64"),
            &format!("bad,missing.png,a cat,{a},{a},2,2,64"),
        ],
    );
    let out2 = tmp.path().join("out2");
    let run = ditail(
        tmp.path(),
        &[
            "batch",
            manifest.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "--summary",
        ],
    );
    // One row failed: 64 + 1.
    assert_eq!(run.status.code(), Some(65), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("missing.png") && stderr(&run).contains("1 done"),
        "{}",
        stderr(&run)
    );
    assert_eq!(files(&out2), ["batch-summary.json", "ok.png"]);
    // The task's summary names the failed row and why; `--status` reads it.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out2.join("batch-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["done"], json!(["ok"]));
    assert!(
        summary["failed"]["bad"]
            .as_str()
            .unwrap()
            .contains("missing.png"),
        "{summary}"
    );
    let status = ditail(
        tmp.path(),
        &[
            "batch",
            manifest.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "--status",
        ],
    );
    let said = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{said}{}", stderr(&status));
    assert!(
        said.contains("2 rows: 1 done, 1 failed, 0 missing")
            && said.contains("failed bad:")
            && said.contains("missing.png"),
        "{said}"
    );
}

#[test]
fn devices_lists_the_backends() {
    let tmp = TempDir::new().unwrap();
    let out = ditail(tmp.path(), &["devices"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backends in this build:") && text.contains("cpu"),
        "{text}"
    );
    assert!(
        text.contains("Stable Diffusion 1.x") && text.contains("Stable Diffusion XL"),
        "{text}"
    );
    // CI has Mesa's lavapipe, compiled through WGSL in the default build, which runs the
    // fused attention kernel in both types, and through SPIR-V in a `vulkan` build
    // (`scripts/test_spirv.sh`), which runs burn-cubecl's flash attention; the tuning cache
    // is ditail's.
    let (compiler, attention) = match cfg!(feature = "vulkan") {
        true => (
            "compiler: wgpu<spirv>",
            "attention: burn-cubecl's autotuned flash attention",
        ),
        false => (
            "compiler: wgpu<wgsl>",
            "attention: fused WGSL kernel (f32, f16)",
        ),
    };
    if !text.contains("wgpu adapters (0)") {
        for line in [
            compiler,
            "f16 arithmetic: yes",
            attention,
            "GPU kernel tuning cache: ",
            "(the default: --backend wgpu without --device)",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("ditail/gpu"), "{text}");
    }
}

/// `ditail devices | head -1`: the reader closes the pipe before the command writes, and
/// the command ends quietly with success (`println!` panicked there, exit 101).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = TempDir::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu", "devices"])
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ditail binary runs");
    // Closed before the command has listed its first adapter (it asks the drivers first).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

#[test]
fn invalid_inputs_exit_2_with_a_message_and_no_output() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out.png");
    let o = out.to_str().unwrap().to_string();
    let a = model("tiny-a");
    let img = content().display().to_string();
    let lora = loading("lora-bad-key.safetensors").display().to_string();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["transfer", &img, "--prompt", "p", "--source", &a, "-o", &o]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            [
                "transfer", "nope.png", "--prompt", "p", "--source", &a, "-o", &o,
            ]
            .map(String::from)
            .to_vec(),
            "nope.png",
        ),
        (base(&["--alpha", "abc"]), "--alpha"),
        (base(&["--inv-steps", "3", "--steps", "4"]), "--inv-steps 3"),
        (base(&["--mask", "diagonal"]), "diagonal"),
        (base(&["--conv-ratio", "1.5"]), "conv ratio"),
        // The CPU backend is one device.
        (base(&["--device", "1"]), "cpu has no device 1"),
        (base(&["--lora", &lora]), "down_blocks_0_attentions_7"),
        (
            base(&["--target", "no/such-model.safetensors"]),
            "no/such-model.safetensors",
        ),
        // A mistyped relative folder reads as a repo id: the message says so.
        (
            base(&["--target", "models/tiny-x"]),
            "there is no file or folder `models/tiny-x`",
        ),
        (
            base(&[
                "--target",
                &model("tiny-b"),
                "--lora",
                &loading("lora-kohya.safetensors").display().to_string(),
            ]),
            "do not fit",
        ),
        (
            [
                "transfer",
                &img,
                "--prompt",
                "p",
                "--source",
                &a,
                "-o",
                "/nonexistent/dir/x.png",
            ]
            .map(String::from)
            .to_vec(),
            "/nonexistent/dir",
        ),
        (
            [
                "transfer",
                &img,
                "--prompt",
                "p",
                "--source",
                &a,
                "-o",
                &format!("{o}.jpg"),
            ]
            .map(String::from)
            .to_vec(),
            ".png",
        ),
        (
            [
                "generate", "--prompt", "p", "--model", &a, "--size", "60", "-o", &o,
            ]
            .map(String::from)
            .to_vec(),
            "--size 60",
        ),
        (
            [
                "batch",
                "jobs.txt",
                "-o",
                tmp.path().join("b").to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            ".csv or .jsonl",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = ditail(tmp.path(), &args);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
        assert!(!out.exists(), "{args:?} left an output");
    }
    let leftovers: Vec<String> = files(tmp.path())
        .into_iter()
        .filter(|f| f != "cache")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn loras_vae_and_clip_skip_are_applied_and_recorded() {
    let tmp = TempDir::new().unwrap();
    let a = model("tiny-a");
    let lora = loading("lora-peft.safetensors").display().to_string();
    let img = content().display().to_string();
    let run = |extra: &[&str], name: &str| {
        let out = tmp.path().join(name);
        let mut args = vec!["transfer", &img, "--prompt", "a cat", "--source", &a, "-o"];
        let o = out.display().to_string();
        args.push(&o);
        args.extend(QUICK);
        args.extend(extra);
        assert_ok(&ditail(tmp.path(), &args));
        out
    };
    let plain = run(&[], "plain.png");
    let vae_dir = model("tiny-b");
    let mixed = run(
        &[
            "--lora",
            &format!("{lora}:0.5"),
            "--vae",
            &vae_dir,
            "--clip-skip",
            "2",
        ],
        "mixed.png",
    );
    assert_ne!(pixels(&plain), pixels(&mixed));
    let rec = record(&mixed);
    let m = &rec["model"];
    assert_eq!(m["loras"][0]["path"], lora.as_str());
    assert_eq!(m["loras"][0]["scale"].as_f64(), Some(0.5));
    assert_eq!(m["loras"][0]["hash"].as_str().unwrap().len(), 10);
    assert_eq!(
        (m["vae"].as_str(), m["clip_skip"].as_u64()),
        (Some(vae_dir.as_str()), Some(2))
    );
    // The LoRA goes into the target only.
    assert_eq!(rec["source"]["loras"].as_array().unwrap().len(), 0);
    let params = &png_text(&mixed)
        .into_iter()
        .find(|(k, _)| k == "parameters")
        .unwrap()
        .1;
    assert!(
        params.contains("Clip skip: 2") && params.contains("Lora hashes: \"lora-peft: "),
        "{params}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_without_an_output() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out.png");
    let a = model("tiny-a");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args([
            "--backend",
            "cpu",
            "transfer",
            content().to_str().unwrap(),
            "--prompt",
            "p",
        ])
        .args([
            "--source",
            &a,
            "--size",
            "256",
            "--inv-steps",
            "999",
            "--steps",
            "999",
            "-o",
        ])
        .arg(&out)
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The shell's own `kill` (procps' /bin/kill may be absent on a bare machine).
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<String> = files(tmp.path())
        .into_iter()
        .filter(|f| f != "cache")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Ids and output names that would write outside the output folder, or that no file system
/// takes, refuse the whole manifest up front (exit 2) naming the row and the value, and
/// nothing is written; so do duplicate ids.
#[test]
fn batch_refuses_ids_that_are_not_plain_file_names() {
    let tmp = TempDir::new().unwrap();
    std::fs::copy(content(), tmp.path().join("content.png")).unwrap();
    let a = model("tiny-a");
    // Each row would run (and, before the check, write its output) if its name were fine.
    let row = |id: &str| {
        serde_json::json!({"id": id, "image": "content.png", "prompt": "a cat", "source": a,
            "steps": 2, "inv_steps": 2, "size": 64})
    };
    let jsonl = |name: &str, rows: &[Value]| {
        let path = tmp.path().join(name);
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let bad_ids = [
        "../escaped",
        "../../x",
        "/abs/x",
        "a/b",
        "a\\b",
        "..",
        ".",
        " ",
        "a\0b",
        "bell\u{7}",
        "\u{1b}[31mred",
        "line\nbreak",
        "C:x",
    ];
    let mut cases: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for (i, id) in bad_ids.iter().enumerate() {
        let m = jsonl(&format!("bad{i}.jsonl"), &[row("fine"), row(id)]);
        cases.push((m, vec!["row 2".into(), format!("id {id:?}")]));
    }
    // The output field is a file name in the output folder too.
    let mut escaping_output = row("fine-2");
    escaping_output["output"] = "../out.png".into();
    let m = jsonl("output.jsonl", &[row("fine"), escaping_output]);
    cases.push((m, vec!["row 2".into(), "output \"../out.png\"".into()]));
    // Duplicate ids name both rows.
    let m = jsonl("dup.jsonl", &[row("x"), row("y"), row("x")]);
    cases.push((m, vec!["rows 1 and 3".into(), "\"x\"".into()]));
    // The report's own case: a CSV row with the id `../escaped`.
    let csv = tmp.path().join("jobs.csv");
    std::fs::write(
        &csv,
        format!(
            "id,image,prompt,source,steps,inv_steps,size\n../escaped,content.png,a cat,{a},2,2,64\n"
        ),
    )
    .unwrap();
    cases.push((csv, vec!["row 1".into(), "id \"../escaped\"".into()]));

    let out = tmp.path().join("out");
    let listing = || -> Vec<String> {
        files(tmp.path())
            .into_iter()
            .filter(|f| f != "cache")
            .collect()
    };
    let before = listing();
    for (manifest, expected) in &cases {
        let run = ditail(
            tmp.path(),
            &[
                "batch",
                manifest.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{}: {err}", manifest.display());
        for e in expected {
            assert!(
                err.contains(e),
                "{}: expected `{e}` in: {err}",
                manifest.display()
            );
        }
        assert!(
            !out.exists(),
            "{}: the output folder was made",
            manifest.display()
        );
        assert_eq!(listing(), before, "{}: wrote a file", manifest.display());
        assert!(
            !tmp.path().parent().unwrap().join("escaped.png").exists()
                && !tmp.path().join("escaped.png").exists()
        );
    }
}

/// Runs `ditail` as [`ditail`] does, under the shell's `umask`.
#[cfg(unix)]
fn ditail_with_umask(tmp: &Path, umask: &str, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu"])
        .args(args)
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.join("hf"))
        .output()
        .expect("sh runs the ditail binary")
}

/// A new output gets the mode any new file gets (0666 less the umask), not the temporary
/// file's 0600; an output that replaces a file keeps that file's mode.
#[cfg(unix)]
#[test]
fn outputs_get_the_umask_mode_and_keep_a_replaced_files_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new().unwrap();
    let m = model("tiny-a");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let img = tmp.path().join("gen.png");
    let lat = tmp.path().join("inv.safetensors");
    let run = |umask: &str| {
        let gen_args = [
            "generate",
            "--prompt",
            "a house",
            "--model",
            &m,
            "--seed",
            "1",
            "--size",
            "64",
            "--steps",
            "2",
            "-o",
            img.to_str().unwrap(),
        ];
        assert_ok(&ditail_with_umask(tmp.path(), umask, &gen_args));
        let inv_args = [
            "invert",
            img.to_str().unwrap(),
            "--source",
            &m,
            "--prompt",
            "a house",
            "--inv-steps",
            "2",
            "--size",
            "64",
            "-o",
            lat.to_str().unwrap(),
        ];
        assert_ok(&ditail_with_umask(tmp.path(), umask, &inv_args));
    };
    // 027 gives 0640: neither tempfile's 0600 nor the usual 0644.
    run("027");
    assert_eq!(mode(&img), 0o640, "new PNG under umask 027");
    assert_eq!(mode(&lat), 0o640, "new latents file under umask 027");
    run("022");
    assert_eq!(mode(&img), 0o640, "a replaced PNG keeps its mode");
    assert_eq!(mode(&lat), 0o640, "a replaced latents file keeps its mode");
    for kept in [0o644, 0o604] {
        for p in [&img, &lat] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(kept)).unwrap();
        }
        run("077");
        assert_eq!(mode(&img), kept, "a replaced PNG keeps {kept:o}");
        assert_eq!(mode(&lat), kept, "a replaced latents file keeps {kept:o}");
    }
    std::fs::remove_file(&img).unwrap();
    std::fs::remove_file(&lat).unwrap();
    run("002");
    assert_eq!(mode(&img), 0o664, "new PNG under umask 002");
    assert_eq!(mode(&lat), 0o664, "new latents file under umask 002");
    let leftovers: Vec<String> = files(tmp.path())
        .into_iter()
        .filter(|f| !["cache", "gen.png", "inv.safetensors"].contains(&f.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An SDXL transfer from the command line: the sites can be changed by flag (and change the
/// result), `--no-injection` gives yet another image, the record names the models, and an
/// SD1.x source with an SDXL target is refused before anything runs.
#[test]
fn sdxl_transfer_takes_sites_and_refuses_mixed_families() {
    let tmp = TempDir::new().unwrap();
    let xl = model("tiny-xl");
    let img = content().display().to_string();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "transfer", &img, "--prompt", "a cat", "--source", &xl, "--target", &xl, "-o",
        ];
        let o = out.display().to_string();
        args.push(&o);
        args.extend(QUICK);
        args.extend(extra);
        let r = ditail(tmp.path(), &args);
        (r, out)
    };
    let (r, default) = run("default.png", &[]);
    assert_ok(&r);
    assert_eq!(pixels(&default).dimensions(), (80, 64));
    assert_eq!(record(&default)["model"]["model"], xl.as_str());
    let (r, attn) = run(
        "attn.png",
        &[
            "--sites",
            "up_blocks.1.attentions.1,up_blocks.1.attentions.2",
        ],
    );
    assert_ok(&r);
    let (r, plain) = run("plain.png", &["--no-injection"]);
    assert_ok(&r);
    assert_ne!(pixels(&default), pixels(&attn), "the sites matter");
    assert_ne!(pixels(&default), pixels(&plain), "injection matters");

    let (r, bad) = run("bad.png", &["--sites", "up_blocks.3.attentions.0"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("does not exist"), "{}", stderr(&r));
    assert!(!bad.exists());

    let out = tmp.path().join("mixed.png");
    let sd1 = model("tiny-a");
    let mut args = vec![
        "transfer", &img, "--prompt", "a cat", "--source", &sd1, "--target", &xl, "-o",
    ];
    let o = out.display().to_string();
    args.push(&o);
    args.extend(QUICK);
    let r = ditail(tmp.path(), &args);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let msg = stderr(&r);
    assert!(
        msg.contains("Stable Diffusion XL") && msg.contains("not interchangeable"),
        "{msg}"
    );
    assert!(!out.exists());
}
