//! Replays every committed fuzz input through the fuzz targets' own bodies
//! (`fuzz/bodies/`, shared with `fuzz/fuzz_targets/`): the minimised corpus
//! (`fuzz/corpus/<target>/`) and every crash the fuzzer found (`fuzz/regressions/<target>/`),
//! so that a plain `cargo test` keeps what was fixed fixed. Fuzzing itself needs nightly and
//! cargo-fuzz: `scripts/fuzz.sh`.

#[path = "../fuzz/bodies/mod.rs"]
mod bodies;

#[path = "../fuzz/bodies/serve_request.rs"]
mod serve_request;

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
    replay_with(target, body);
}

/// Runs `body` on each of `target`'s corpus and regression inputs.
fn replay_with(target: &str, body: bodies::Body) {
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
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_stem().unwrap().to_str().unwrap();
                assert!(
                    tested.contains(&name) || name == "serve_request",
                    "fuzz target {name} is not replayed"
                );
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

/// The web app's request handling (not in `bodies::TARGETS`: see its module).
#[test]
fn serve_request() {
    replay_with("serve_request", serve_request::run);
}

/// Requests like the target's seeds (`scripts/make_fuzz_seeds.py`) reach what they were
/// written for, so that fuzzing from them starts past the guard and the settings checks:
/// each request's answers from the open and the guarded (token) server.
#[test]
fn serve_requests_reach_their_handlers() {
    let request = |method: &str, path: &str, headers: &str, body: &[u8]| {
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:7860\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let auth = "Authorization: Bearer fuzz-token\r\n";
    let json = format!("{auth}Content-Type: application/json\r\n");
    let job = serde_json::json!({
        "source": {"model": "{tiny-a}"}, "targets": [{"model": "{tiny-b}"}],
        "prompt": "a cat", "size": 64, "inv_steps": 2, "steps": 2,
    });
    let generated = {
        let mut j = job.clone();
        j["content_prompt"] = "a cat".into();
        j.to_string()
    };
    let cocktail = {
        let mut j = serde_json::from_str::<serde_json::Value>(&generated).unwrap();
        j["mode"] = "cocktail".into();
        j["targets"] = serde_json::json!([{"model": "{tiny-a}"}, {"model": "{tiny-b}"}]);
        j.to_string()
    };
    let content = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/content.png"),
    )
    .unwrap();
    let form = |parts: &[(&str, &[u8])]| {
        let mut body = Vec::new();
        for (name, data) in parts {
            let file = if *name == "settings" {
                ""
            } else {
                "; filename=\"x.png\""
            };
            body.extend_from_slice(
                format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--b--\r\n");
        body
    };
    let multipart = format!("{auth}Content-Type: multipart/form-data; boundary=b\r\n");
    let painted = {
        let mut j = job.clone();
        j["mask"] = "painted".into();
        j.to_string()
    };
    let cases: Vec<(&str, Vec<u8>, [u16; 2])> = vec![
        (
            "models",
            request("GET", "/api/models", auth, b""),
            [200, 200],
        ),
        ("index", request("GET", "/", auth, b""), [200, 200]),
        (
            "no token",
            request("GET", "/api/models", "", b""),
            [200, 401],
        ),
        (
            "escape",
            request("GET", "/api/results/..%2Fsecret.png", auth, b""),
            [404, 404],
        ),
        (
            "token link",
            request("GET", "/?token=fuzz-token", "", b""),
            [200, 303],
        ),
        (
            "token cookie",
            request(
                "GET",
                "/api/models",
                "Cookie: ditail_token=fuzz-token\r\n",
                b"",
            ),
            [200, 200],
        ),
        (
            "bad host",
            b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_vec(),
            [403, 403],
        ),
        (
            "cross origin",
            request(
                "POST",
                "/api/jobs",
                &format!("{json}Origin: http://evil.example\r\n"),
                b"{}",
            ),
            [403, 403],
        ),
        (
            "rescan",
            request("POST", "/api/models/rescan", auth, b""),
            [200, 200],
        ),
        (
            "generated",
            request("POST", "/api/jobs", &json, generated.as_bytes()),
            [201, 201],
        ),
        (
            "cocktail",
            request("POST", "/api/jobs", &json, cocktail.as_bytes()),
            [201, 201],
        ),
        (
            "image",
            request(
                "POST",
                "/api/jobs",
                &multipart,
                &form(&[
                    ("settings", job.to_string().as_bytes()),
                    ("image", &content),
                ]),
            ),
            [201, 201],
        ),
        (
            "image and mask",
            request(
                "POST",
                "/api/jobs",
                &multipart,
                &form(&[
                    ("settings", painted.as_bytes()),
                    ("image", &content),
                    ("mask", &content),
                ]),
            ),
            [201, 201],
        ),
        (
            "no image",
            request("POST", "/api/jobs", &json, job.to_string().as_bytes()),
            [400, 400],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, data, expected) in cases {
        let got = serve_request::statuses(&data);
        if got != Some(expected) {
            wrong.push(format!("{what}: {got:?}, expected {expected:?}"));
        }
    }
    bodies::remove_scratch();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
