//! `ditail serve` through its HTTP API, against the real binary on an ephemeral port with
//! the tiny fixture models: a job's PNG is the CLI's PNG, events arrive in order, cancel
//! writes nothing, the queue is FIFO, a second target reuses the inversion, every limit
//! and bad input gets its 4xx and writes nothing, and a restart resumes the journal.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn content_png() -> PathBuf {
    fixtures().join("pipeline/content.png")
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    base: String,
    output: PathBuf,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status and body.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Server {
    fn start(output: &Path, extra: &[&str]) -> Self {
        let models = fixtures().join("models");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ditail"))
            .args(["--backend", "cpu", "serve", "--port", "0", "--models"])
            .arg(&models)
            .arg("--output")
            .arg(output)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ditail serve");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().trim_end_matches('/').to_string());
                }
                eprintln!("[server] {line}");
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server printed its address");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        Self {
            child,
            base,
            output: output.to_path_buf(),
            agent,
            token,
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn get(&self, path: &str) -> Reply {
        let mut resp = self
            .auth(self.agent.get(format!("{}{path}", self.base)))
            .call()
            .expect("GET");
        Reply {
            status: resp.status().as_u16(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .header("Content-Type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).expect("POST");
        Reply {
            status: resp.status().as_u16(),
            body: resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default(),
        }
    }

    fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.auth(self.agent.delete(format!("{}{path}", self.base)));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().expect("DELETE");
        Reply {
            status: resp.status().as_u16(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn models(&self) -> Value {
        self.get("/api/models").json()
    }

    /// The path of the listed checkpoint named `name`.
    fn model_path(&self, name: &str) -> String {
        self.models()["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))["path"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `ditail transfer` of the content image from tiny-a to tiny-b at size 64 with
    /// `steps` inversion and sampling steps, as a job with `settings` runs it: the same
    /// model paths as the catalog lists.
    fn cli_transfer(&self, prompt: &str, steps: usize, extra: &[&std::ffi::OsStr], out: &Path) {
        let steps = steps.to_string();
        let (source, target) = (self.model_path("tiny-a"), self.model_path("tiny-b"));
        let run = Command::new(env!("CARGO_BIN_EXE_ditail"))
            .args(["--backend", "cpu", "--quiet", "transfer"])
            .arg(content_png())
            .args(["--prompt", prompt, "--source", &source, "--target", &target])
            .args(["--size", "64", "--inv-steps", &steps, "--steps", &steps])
            .args(extra)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// The C API's `ditail_transfer_file` with `cli_transfer`'s settings (through this
    /// crate's Rust view of the C functions: the same symbols a C program calls).
    fn capi_transfer(&self, prompt: &str, steps: u32, out: &Path) {
        use ditail_capi::*;
        use std::ffi::{CStr, CString};
        let c = |s: &str| CString::new(s).unwrap();
        let (source, target) = (c(&self.model_path("tiny-a")), c(&self.model_path("tiny-b")));
        let (prompt, image) = (c(prompt), c(content_png().to_str().unwrap()));
        let output = c(out.to_str().unwrap());
        // SAFETY: every pointer is a live value or NUL-terminated string of this frame.
        unsafe {
            let mut ctx = std::ptr::null_mut();
            let mut settings = ditail_context_default_settings();
            settings.backend = Backend::Cpu;
            assert_eq!(ditail_context_new(&settings, &mut ctx), Status::Ok);
            let (mut s, mut t) = (ditail_model_default_spec(), ditail_model_default_spec());
            (s.model, t.model) = (source.as_ptr(), target.as_ptr());
            let mut inv = ditail_inversion_default_settings();
            (inv.size, inv.steps) = (64, steps);
            let mut spl = ditail_sampling_default_settings();
            (spl.prompt, spl.steps) = (prompt.as_ptr(), steps);
            let status = ditail_transfer_file(
                ctx,
                &s,
                &t,
                image.as_ptr(),
                &inv,
                &spl,
                output.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
            let error = CStr::from_ptr(ditail_last_error()).to_string_lossy();
            assert_eq!(status, Status::Ok, "{error}");
            assert_eq!(ditail_context_free(ctx), Status::Ok);
        }
    }

    /// The id of the listed checkpoint named `name`.
    fn model_id(&self, name: &str) -> String {
        self.models()["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Submits a job: settings and, optionally, image and mask bytes.
    fn submit_raw(&self, settings: &Value, image: Option<&[u8]>, mask: Option<&[u8]>) -> Reply {
        let boundary = "----ditailtestboundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        let mut part = |name: &str, file: bool, ctype: &str, data: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let filename = if file {
                format!("; filename=\"{name}.png\"")
            } else {
                String::new()
            };
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{filename}\r\nContent-Type: {ctype}\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        };
        part(
            "settings",
            false,
            "application/json",
            settings.to_string().as_bytes(),
        );
        if let Some(img) = image {
            part("image", true, "image/png", img);
        }
        if let Some(m) = mask {
            part("mask", true, "image/png", m);
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.post(
            "/api/jobs",
            &format!("multipart/form-data; boundary={boundary}"),
            &body,
            &[],
        )
    }

    /// Submits a job with the content image; returns its id.
    fn submit(&self, settings: &Value) -> String {
        let image = std::fs::read(content_png()).unwrap();
        let reply = self.submit_raw(settings, Some(&image), None);
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["id"].as_str().unwrap().to_string()
    }

    /// The job's event stream, read to its end: (event, data) pairs.
    fn events(&self, id: &str) -> Vec<(String, Value)> {
        let resp = self
            .auth(
                self.agent
                    .get(format!("{}/api/jobs/{id}/events", self.base)),
            )
            .call()
            .expect("events");
        assert_eq!(resp.status().as_u16(), 200);
        let reader = BufReader::new(resp.into_body().into_reader());
        read_events(reader, |_| true)
    }

    /// The PNGs in the output folder.
    fn pngs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.output)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".png"))
            .collect();
        v.sort();
        v
    }
}

/// Reads server-sent events until the stream ends or `keep_going` says stop.
fn read_events(
    reader: impl BufRead,
    mut keep_going: impl FnMut(&(String, Value)) -> bool,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let (mut kind, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data += d.trim_start();
        } else if line.is_empty() && !kind.is_empty() {
            let event = (
                std::mem::take(&mut kind),
                serde_json::from_str(&data).unwrap_or(Value::Null),
            );
            data.clear();
            let go = keep_going(&event);
            out.push(event);
            if !go {
                break;
            }
        }
    }
    out
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

/// Small, fast settings: tiny-a inverts, `target` samples.
fn settings(source: &str, target: &str, steps: usize) -> Value {
    json!({
        "source": {"model": source},
        "targets": [{"model": target}],
        "prompt": "a photo of a cat",
        "size": 64, "inv_steps": steps, "steps": steps,
    })
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_jobs_png_equals_the_clis_and_the_c_apis_and_its_events_arrive_in_order() {
    let dir = tmp();
    let server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let id = server.submit(&settings(&a, &b, 4));
    let events = server.events(&id);
    let k = kinds(&events);
    assert_eq!(k.first(), Some(&"queued"), "{k:?}");
    let last = events.iter().rfind(|(k, _)| k == "progress").unwrap();
    assert_eq!(
        (last.1["job_step"].clone(), last.1["job_total"].clone()),
        (json!(8), json!(8))
    );
    assert_eq!(k.last(), Some(&"done"), "{k:?}");
    assert!(k.contains(&"preview"), "{k:?}");
    // Inversion steps 1..4, the inversion, then sampling steps 1..4, decoding, the result.
    let steps: Vec<(String, u64)> = events
        .iter()
        .filter(|(k, _)| k == "progress")
        .map(|(_, d)| {
            (
                d["stage"].as_str().unwrap().to_string(),
                d["step"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (1..=4)
        .map(|s| ("inversion".to_string(), s))
        .chain((1..=4).map(|s| ("sampling".to_string(), s)))
        .collect();
    assert_eq!(steps, expected);
    let pos = |kind: &str| k.iter().position(|x| *x == kind).unwrap();
    assert!(
        pos("started") < pos("progress")
            && pos("inversion") < pos("result")
            && pos("result") < pos("done")
    );
    assert_eq!(events[pos("inversion")].1["cached"], false);
    let name = events[pos("result")].1["name"]
        .as_str()
        .unwrap()
        .to_string();

    // The CLI, same settings, same model paths as the catalog lists them.
    let cli_png = dir.path().join("cli.png");
    server.cli_transfer("a photo of a cat", 4, &[], &cli_png);
    let served = server.get(&format!("/api/results/{name}"));
    assert_eq!(served.status, 200);
    let job_png = std::fs::read(dir.path().join(&name)).unwrap();
    assert_eq!(
        job_png,
        std::fs::read(&cli_png).unwrap(),
        "the job's PNG differs from the CLI's"
    );
    // The third face over the same job: the C API's whole-transfer call.
    let c_png = dir.path().join("c.png");
    server.capi_transfer("a photo of a cat", 4, &c_png);
    assert_eq!(
        job_png,
        std::fs::read(&c_png).unwrap(),
        "the C API's PNG differs from the web app's and the CLI's"
    );

    // Only the gallery's own files can be deleted, and not from another site's page.
    std::fs::write(
        dir.path().join("plain.png"),
        std::fs::read(content_png()).unwrap(),
    )
    .unwrap();
    for (path, status) in [
        ("/api/results/plain.png", 404),
        ("/api/results/..%2Fsecret.png", 404),
        ("/api/results/.ditail", 404),
        ("/api/results/nope.png", 404),
    ] {
        assert_eq!(server.delete(path, &[]).status, status, "DELETE {path}");
    }
    assert!(dir.path().join("plain.png").is_file());
    let cross = server.delete(
        &format!("/api/results/{name}"),
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    assert!(dir.path().join(&name).is_file());

    // The gallery lists it with its record and settings that name the same models.
    let gallery = server.get("/api/results").json();
    let item = gallery["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["record"]["prompt"], "a photo of a cat");
    assert_eq!(item["settings"]["targets"][0]["model"], b.as_str());
    assert_eq!(item["settings"]["source"]["model"], a.as_str());
    // Deleted from the gallery: the file goes, the listing follows.
    let deleted = server.delete(&format!("/api/results/{name}"), &[]);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(!dir.path().join(&name).exists());
    let listed = server.get("/api/results").json();
    assert!(
        listed["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"] != name.as_str()),
        "{listed}"
    );
}

#[test]
fn a_second_target_on_the_same_content_does_not_invert_again() {
    let dir = tmp();
    let server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let first = server.events(&server.submit(&settings(&a, &b, 3)));
    let second = server.events(&server.submit(&settings(&a, &a, 3)));
    let inversion =
        |ev: &[(String, Value)]| ev.iter().find(|(k, _)| k == "inversion").unwrap().1.clone();
    assert_eq!(inversion(&first)["cached"], false);
    assert_eq!(inversion(&second)["cached"], true);
    assert!(
        !second
            .iter()
            .any(|(k, d)| k == "progress" && d["stage"] == "inversion"),
        "the second job ran inversion steps"
    );
    assert_eq!(kinds(&second).last(), Some(&"done"));
    // One transfer job with two targets: one inversion, two results.
    let mut two = settings(&a, &a, 3);
    two["targets"] = json!([{"model": a}, {"model": b}]);
    two["alpha"] = json!(1.5);
    let ev = server.events(&server.submit(&two));
    assert_eq!(ev.iter().filter(|(k, _)| k == "inversion").count(), 1);
    assert_eq!(ev.iter().filter(|(k, _)| k == "result").count(), 2);
    assert_eq!(server.pngs().len(), 4);
}

#[test]
fn cancel_stops_a_running_job_and_writes_nothing_and_the_queue_is_fifo() {
    let dir = tmp();
    let server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let long = server.submit(&settings(&a, &b, 200));
    let queued: Vec<String> = (0..3)
        .map(|_| server.submit(&settings(&a, &b, 2)))
        .collect();
    let jobs = server.get("/api/jobs").json();
    let order: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [&long, &queued[0], &queued[1], &queued[2]].map(|s| s.as_str())
    );
    // Cancel the middle queued job before it runs, then the long one while it runs.
    assert_eq!(
        server
            .post(
                &format!("/api/jobs/{}/cancel", queued[1]),
                "application/json",
                b"",
                &[]
            )
            .json()["status"],
        "cancelled"
    );
    let resp = server
        .agent
        .get(format!("{}/api/jobs/{long}/events", server.base))
        .call()
        .unwrap();
    let seen = read_events(BufReader::new(resp.into_body().into_reader()), |(k, d)| {
        !(k == "progress" && d["stage"] == "sampling")
    });
    assert!(kinds(&seen).contains(&"progress"));
    let reply = server.post(
        &format!("/api/jobs/{long}/cancel"),
        "application/json",
        b"",
        &[],
    );
    assert_eq!(reply.status, 200);
    let events = server.events(&long);
    assert_eq!(kinds(&events).last(), Some(&"cancelled"));
    // FIFO: each job started only once the one before it had ended.
    let last = server.events(&queued[2]);
    assert_eq!(kinds(&last).last(), Some(&"done"));
    let job = |id: &str| server.get(&format!("/api/jobs/{id}")).json();
    let ran = [&long, &queued[0], &queued[2]].map(|id| job(id));
    for pair in ran.windows(2) {
        let (ended, started) = (
            pair[0]["finished_ms"].as_u64().unwrap(),
            pair[1]["started_ms"].as_u64().unwrap(),
        );
        assert!(
            started >= ended,
            "{} started at {started}, before {} ended at {ended}",
            pair[1]["id"],
            pair[0]["id"]
        );
    }
    assert_eq!(
        job(&queued[1])["started_ms"],
        Value::Null,
        "the cancelled queued job ran"
    );
    let names = server.pngs();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with(&long) && !n.starts_with(&queued[1])),
        "{names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    // Inputs are kept only for the jobs still listed (for "reuse settings"), no others.
    let listed: Vec<String> = server.get("/api/jobs").json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let kept: Vec<String> = std::fs::read_dir(dir.path().join(".ditail/jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().all(|k| listed.contains(k)),
        "inputs kept for jobs no longer listed: {kept:?} (listed {listed:?})"
    );
}

/// A PNG header (signature, IHDR with a correct CRC, IEND) claiming `w` x `h` pixels.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IEND", &[]);
    out
}

/// A bad request: what it is, settings, image and mask parts, status, a word of the error.
type Case<'a> = (
    &'a str,
    Value,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    u16,
    &'a str,
);

#[test]
fn limits_and_bad_input_get_their_4xx_and_write_nothing() {
    let dir = tmp();
    let server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let image = std::fs::read(content_png()).unwrap();
    let good = settings(&a, &b, 2);
    let with = |key: &str, value: Value| {
        let mut s = good.clone();
        s[key] = value;
        s
    };
    let tiny_a_path = server.models()["checkpoints"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: Vec<Case> = vec![
        (
            "long prompt",
            with("prompt", json!("x".repeat(2001))),
            Some(image.clone()),
            None,
            400,
            "2001 characters",
        ),
        (
            "NUL in prompt",
            with("prompt", json!("a\u{0}b")),
            Some(image.clone()),
            None,
            400,
            "NUL",
        ),
        (
            "steps",
            with("steps", json!(1001)),
            Some(image.clone()),
            None,
            400,
            "steps 1001",
        ),
        (
            "steps that are not a number: named by field, without parser positions",
            with("steps", json!("ten")),
            Some(image.clone()),
            None,
            400,
            "settings.steps: invalid type: string \"ten\", expected usize",
        ),
        (
            "zero steps",
            with("inv_steps", json!(0)),
            Some(image.clone()),
            None,
            400,
            "inv_steps 0",
        ),
        (
            "size",
            with("size", json!(100)),
            Some(image.clone()),
            None,
            400,
            "size 100",
        ),
        (
            "ratio",
            with("conv_ratio", json!(1.5)),
            Some(image.clone()),
            None,
            400,
            "1.5",
        ),
        (
            "unknown field",
            with("sampler", json!("euler")),
            Some(image.clone()),
            None,
            400,
            "sampler",
        ),
        (
            "unknown model",
            with("targets", json!([{"model": "c-0000000000"}])),
            Some(image.clone()),
            None,
            400,
            "c-0000000000",
        ),
        (
            "path as model",
            with("targets", json!([{"model": tiny_a_path}])),
            Some(image.clone()),
            None,
            400,
            "no checkpoint with id",
        ),
        (
            "traversal as model",
            with("source", json!({"model": "../../../etc/passwd"})),
            Some(image.clone()),
            None,
            400,
            "etc/passwd",
        ),
        (
            "lora id as model",
            with("targets", json!([{"model": a, "loras": [{"id": a}]}])),
            Some(image.clone()),
            None,
            400,
            "no LoRA with id",
        ),
        (
            "no targets",
            with("targets", json!([])),
            Some(image.clone()),
            None,
            400,
            "targets",
        ),
        (
            "mismatched steps",
            with("steps", json!(3)),
            Some(image.clone()),
            None,
            400,
            "timestep",
        ),
        ("no content", good.clone(), None, None, 400, "content"),
        (
            "painted without mask",
            with("mask", json!("painted")),
            Some(image.clone()),
            None,
            400,
            "mask",
        ),
        (
            "bad mask name",
            with("mask", json!("/etc/passwd")),
            Some(image.clone()),
            None,
            400,
            "/etc/passwd",
        ),
        (
            "not an image",
            good.clone(),
            Some(b"hello, not an image".to_vec()),
            None,
            400,
            "image",
        ),
        (
            "truncated PNG",
            good.clone(),
            Some(image[..image.len() / 2].to_vec()),
            None,
            400,
            "image",
        ),
        (
            "decompression bomb",
            good.clone(),
            Some(png_header(30_000, 30_000)),
            None,
            413,
            "30000x30000",
        ),
        (
            "bomb as mask",
            with("mask", json!("painted")),
            Some(image.clone()),
            Some(png_header(30_000, 30_000)),
            413,
            "30000x30000",
        ),
        (
            "blank mask",
            with("mask", json!("painted")),
            Some(image.clone()),
            Some({
                let mut png = Vec::new();
                image::GrayImage::new(8, 8)
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .unwrap();
                png
            }),
            400,
            "mask",
        ),
    ];
    for (what, s, img, mask, status, needle) in cases {
        let reply = server.submit_raw(&s, img.as_deref(), mask.as_deref());
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        let msg = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }
    // Bodies: not JSON, another media type, over the size limit.
    assert_eq!(
        server
            .post("/api/jobs", "application/json", b"{not json", &[])
            .status,
        400
    );
    assert_eq!(
        server.post("/api/jobs", "text/plain", b"x", &[]).status,
        415
    );
    let huge = vec![b' '; (64 << 20) + 1024];
    assert_eq!(
        server
            .post("/api/jobs", "application/json", &huge, &[])
            .status,
        413
    );
    // Another site's page cannot post, and a rebinding host name is not answered.
    let cross = server.post(
        "/api/jobs",
        "application/json",
        good.to_string().as_bytes(),
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(cross.status, 403);
    let rebinding = server
        .agent
        .get(format!("{}/api/models", server.base))
        .header("Host", "evil.example:80")
        .call()
        .unwrap();
    assert_eq!(rebinding.status().as_u16(), 403);
    // Results are served by plain names only.
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        ".ditail",
        "..%2Fx.png",
        "%2Fetc%2Fpasswd",
        "nothing.png",
    ] {
        assert_eq!(
            server.get(&format!("/api/results/{bad}")).status,
            404,
            "{bad}"
        );
    }
    assert_eq!(server.get("/api/jobs/j404").status, 404);
    // The page may run only its own script, in no other site's frame.
    let page = server
        .agent
        .get(format!("{}/", server.base))
        .call()
        .unwrap();
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(server.get("/api/jobs/j404/events").status, 404);
    // Nothing was written, nothing is queued.
    assert!(server.pngs().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join(".ditail/jobs"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        server.get("/api/jobs").json()["jobs"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The queue has a length limit: fill it behind a long job, then one more is refused.
    let long = server.submit(&settings(&a, &b, 500));
    let mut ids = Vec::new();
    for _ in 0..64 {
        ids.push(server.submit(&good));
    }
    let full = server.submit_raw(&good, Some(&image), None);
    assert_eq!(full.status, 429, "{}", full.body);
    for id in ids.iter().chain([&long]) {
        server.post(
            &format!("/api/jobs/{id}/cancel"),
            "application/json",
            b"",
            &[],
        );
    }
    // The server still serves, and the cancelled jobs wrote nothing.
    assert_eq!(server.get("/health").status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get(&format!("/api/jobs/{long}")).json()["status"] != "cancelled" {
        assert!(Instant::now() < deadline, "the long job did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.pngs().is_empty());
}

#[test]
fn a_token_is_required_when_set() {
    let dir = tmp();
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    assert_eq!(server.get("/api/models").status, 200);
    let bare = |path: &str| {
        server
            .agent
            .get(format!("{}{path}", server.base))
            .call()
            .unwrap()
    };
    assert_eq!(bare("/api/models").status().as_u16(), 401);
    assert_eq!(bare("/").status().as_u16(), 401);
    let wrong = server
        .agent
        .get(format!("{}/api/models", server.base))
        .header("Authorization", "Bearer s3cres")
        .call()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    // The printed link sets the cookie the page's requests carry.
    let no_redirects: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let link = no_redirects
        .get(format!("{}/?token=s3cret", server.base))
        .call()
        .unwrap();
    assert_eq!(link.status().as_u16(), 303);
    let cookie = link
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("ditail_token=s3cret;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let with_cookie = server
        .agent
        .get(format!("{}/api/models", server.base))
        .header("Cookie", "ditail_token=s3cret")
        .call()
        .unwrap();
    assert_eq!(with_cookie.status().as_u16(), 200);
}

#[test]
fn models_are_listed_with_their_architecture_and_unusable_files_say_why() {
    let dir = tmp();
    // A models folder in A1111's layout: checkpoints, LoRAs (one SDXL), a VAE, a pickle.
    let root = dir.path().join("webui/models");
    let load = fixtures().join("loading");
    for (sub, file) in [
        ("Stable-diffusion", "tiny-a.safetensors"),
        ("Stable-diffusion", "sdxl-like.safetensors"),
        ("Stable-diffusion", "sd2-like.safetensors"),
        ("Stable-diffusion", "pickle.ckpt"),
        ("Lora", "lora-kohya.safetensors"),
        ("Lora", "lora-sdxl.safetensors"),
        ("VAE", "vae-tiny-a.safetensors"),
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        std::fs::copy(load.join(file), root.join(sub).join(file)).unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let server = Server::start(&out, &["--models", root.to_str().unwrap()]);
    let m = server.models();
    let find = |kind: &str, name: &str| {
        m[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in {m}"))
            .clone()
    };
    let tiny = m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tiny-a" && e["format"] == "single-file")
        .unwrap()
        .clone();
    // The tiny fixture in a single file has SD1.x's keys with tiny shapes: a single file is
    // planned with SD1.5's configuration, so it is unusable, and the reason names a tensor
    // whose shape disagrees (loading it would fail).
    assert_eq!(
        (tiny["usable"].clone(), tiny["format"].clone()),
        (json!(false), json!("single-file"))
    );
    assert!(
        tiny["reason"]
            .as_str()
            .unwrap()
            .contains("but the configuration gives it"),
        "{tiny}"
    );
    assert_eq!(find("checkpoints", "tiny-b")["format"], "diffusers");
    // An SDXL-like probe (SDXL's keys, tiny tensors) is refused naming a tensor; SD2 is not
    // supported and says so.
    let sdxl = find("checkpoints", "sdxl-like");
    assert_eq!(sdxl["usable"], false);
    assert!(
        sdxl["reason"].as_str().unwrap().contains("unet tensor"),
        "{sdxl}"
    );
    let sd2 = find("checkpoints", "sd2-like");
    assert_eq!(sd2["usable"], false);
    assert_eq!(sd2["architecture"], "SD2.x");
    assert!(
        sd2["reason"]
            .as_str()
            .unwrap()
            .contains("Stable Diffusion 2")
    );
    let pickle = find("checkpoints", "pickle");
    assert_eq!(pickle["usable"], false);
    assert!(
        pickle["reason"].as_str().unwrap().contains("safetensors"),
        "{pickle}"
    );
    assert_eq!(find("loras", "lora-kohya")["usable"], true);
    let lora_xl = find("loras", "lora-sdxl");
    assert_eq!(
        (lora_xl["usable"].clone(), lora_xl["architecture"].clone()),
        (json!(true), json!("SDXL"))
    );
    assert_eq!(find("vaes", "vae-tiny-a")["usable"], true);
    // An unusable entry cannot be used by id.
    let bad = settings(sd2["id"].as_str().unwrap(), tiny["id"].as_str().unwrap(), 2);
    let reply = server.submit_raw(&bad, Some(&std::fs::read(content_png()).unwrap()), None);
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("cannot be used")
    );
    // Rescan picks up a new file; ids are stable.
    std::fs::copy(
        load.join("lora-peft.safetensors"),
        root.join("Lora/lora-peft.safetensors"),
    )
    .unwrap();
    let after = server
        .post("/api/models/rescan", "application/json", b"", &[])
        .json();
    assert!(
        after["loras"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "lora-peft")
    );
    let again = after["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tiny-a" && e["format"] == "single-file")
        .unwrap()["id"]
        .clone();
    assert_eq!(again, tiny["id"]);
}

#[test]
fn ctrl_c_keeps_the_running_job_in_the_journal_and_a_restart_finishes_it() {
    let dir = tmp();
    let mut server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let id = server.submit(&settings(&a, &b, 100));
    let resp = server
        .agent
        .get(format!("{}/api/jobs/{id}/events", server.base))
        .call()
        .unwrap();
    read_events(BufReader::new(resp.into_body().into_reader()), |(k, _)| {
        k != "progress"
    });
    // Ctrl-C: SIGINT through the shell's kill builtin (no procps on a bare machine).
    let pid = server.child.id().to_string();
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(server.pngs().is_empty());
    let journal = std::fs::read_to_string(dir.path().join(".ditail/queue.json")).unwrap();
    assert!(journal.contains(&id), "{journal}");
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let events = server.events(&id);
    assert_eq!(kinds(&events).last(), Some(&"done"), "{:?}", kinds(&events));
    assert_eq!(server.pngs(), vec![format!("{id}-0-0.png")]);
    let mut journal = String::new();
    std::fs::File::open(dir.path().join(".ditail/queue.json"))
        .unwrap()
        .read_to_string(&mut journal)
        .unwrap();
    assert!(!journal.contains(&id));
    // The finished job outlives the next restart too: listed done, with its result, and
    // its event stream ends at once.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let listed = server.get("/api/jobs").json();
    let job = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed after a restart: {listed}"));
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["results"][0]["name"], format!("{id}-0-0.png"), "{job}");
    assert_eq!(kinds(&server.events(&id)).last(), Some(&"done"));
}

#[test]
fn a_cocktail_fills_its_grid_from_one_inversion_per_model_and_prompts_or_masks_work() {
    let dir = tmp();
    let server = Server::start(dir.path(), &[]);
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    // Generated content: each model renders the prompt, inverts it once, and both
    // targets sample each inversion (2 x 2 images).
    let cocktail = json!({
        "mode": "cocktail", "targets": [{"model": a}, {"model": b}],
        "content_prompt": "a castle", "seed": 7, "size": 64, "inv_steps": 3, "steps": 3,
    });
    let reply = server.post(
        "/api/jobs",
        "application/json",
        cocktail.to_string().as_bytes(),
        &[],
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    let events = server.events(&id);
    assert_eq!(kinds(&events).last(), Some(&"done"), "{:?}", kinds(&events));
    let count = |kind: &str, stage: Option<&str>| {
        events
            .iter()
            .filter(|(k, d)| k == kind && stage.is_none_or(|s| d["stage"] == s))
            .count()
    };
    assert_eq!(count("progress", Some("generation")), 2 * 3);
    // Each generated content is shown (a PNG thumbnail per source).
    let contents: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "content")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(contents.iter().all(|d| {
        d["image"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/png;base64,"))
    }));
    assert_eq!(count("progress", Some("inversion")), 2 * 3);
    assert_eq!(count("progress", Some("sampling")), 4 * 3);
    let mut cells: Vec<(u64, u64)> = events
        .iter()
        .filter(|(k, _)| k == "result")
        .map(|(_, d)| (d["source"].as_u64().unwrap(), d["target"].as_u64().unwrap()))
        .collect();
    cells.sort();
    assert_eq!(cells, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    let job = server.get(&format!("/api/jobs/{id}")).json();
    assert_eq!(job["sources"], json!(["tiny-a", "tiny-b"]));
    assert_eq!(job["targets"], job["sources"]);
    // Each result records its source and target.
    let gallery = server.get("/api/results").json();
    let record = |s: u64, t: u64| {
        let name = format!("{id}-{s}-{t}.png");
        gallery["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name.as_str())
            .unwrap()["record"]
            .clone()
    };
    assert!(
        record(0, 1)["source"]["model"]
            .as_str()
            .unwrap()
            .ends_with("tiny-a")
    );
    assert!(
        record(0, 1)["model"]["model"]
            .as_str()
            .unwrap()
            .ends_with("tiny-b")
    );

    // A painted mask gives what the CLI gives with the same mask file; masks matter.
    // The content's shape (80 x 64 at this size), left 40% white.
    let mut mask = image::GrayImage::new(20, 16);
    for (x, _, p) in mask.enumerate_pixels_mut() {
        p.0[0] = if x < 8 { 255 } else { 0 };
    }
    let mask_path = dir.path().join("mask.png");
    mask.save(&mask_path).unwrap();
    let image = std::fs::read(content_png()).unwrap();
    let mut painted = settings(&a, &b, 3);
    painted["mask"] = json!("painted");
    let reply = server.submit_raw(
        &painted,
        Some(&image),
        Some(&std::fs::read(&mask_path).unwrap()),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let painted_id = reply.json()["id"].as_str().unwrap().to_string();
    let full_id = server.submit(&settings(&a, &b, 3));
    for id in [&painted_id, &full_id] {
        assert_eq!(kinds(&server.events(id)).last(), Some(&"done"));
    }
    let pixels = |path: PathBuf| image::open(path).unwrap().to_rgb8();
    let cli_png = dir.path().join("cli-mask.png");
    server.cli_transfer(
        "a photo of a cat",
        3,
        &["--mask".as_ref(), mask_path.as_os_str()],
        &cli_png,
    );
    let painted_px = pixels(dir.path().join(format!("{painted_id}-0-0.png")));
    assert!(
        painted_px == pixels(cli_png),
        "the painted mask's result differs from the CLI's --mask"
    );
    assert!(
        painted_px != pixels(dir.path().join(format!("{full_id}-0-0.png"))),
        "the mask changed nothing"
    );
}

/// The server's resident memory in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 200 jobs from 20 concurrent clients, 50 of them cancelled, 20 event streams dropped
/// mid-run: every other job completes with the CLI's PNG, memory stays flat, nothing hangs.
#[test]
fn load_200_jobs_from_20_clients_with_cancels_and_dropped_streams() {
    const CLIENTS: usize = 20;
    const JOBS_PER_CLIENT: usize = 10;
    let dir = tmp();
    let server = std::sync::Arc::new(Server::start(dir.path(), &[]));
    let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
    let prompts = ["a cat", "a dog", "a castle", "a tree"];
    let job_settings = |p: &str| {
        let mut s = settings(&a, &b, 2);
        s["prompt"] = json!(p);
        s
    };
    // The CLI's PNG for each prompt.
    let expected: Vec<Vec<u8>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let out = dir.path().join(format!("cli-{i}.png.tmp.png"));
            server.cli_transfer(p, 2, &[], &out);
            let bytes = std::fs::read(&out).unwrap();
            std::fs::remove_file(&out).unwrap();
            bytes
        })
        .collect();
    // Warm up (models loaded, inversions cached), then measure.
    for p in prompts {
        server.events(&server.submit(&job_settings(p)));
    }
    let image = std::sync::Arc::new(std::fs::read(content_png()).unwrap());
    let mut rss = vec![rss_bytes(server.child.id())];
    for round in 0..2 {
        let start = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let server = server.clone();
                let image = image.clone();
                let settings: Vec<Value> = (0..JOBS_PER_CLIENT)
                    .map(|j| job_settings(prompts[(c + j) % prompts.len()]))
                    .collect();
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    for (j, s) in settings.into_iter().enumerate() {
                        let prompt_index = (c + j) % 4;
                        // The queue holds 64: a full queue is a 429, retried.
                        let id = loop {
                            let reply = server.submit_raw(&s, Some(&image), None);
                            match reply.status {
                                201 => break reply.json()["id"].as_str().unwrap().to_string(),
                                429 => std::thread::sleep(Duration::from_millis(50)),
                                other => panic!("submit: {other} {}", reply.body),
                            }
                        };
                        let cancel = (c * JOBS_PER_CLIENT + j) % 4 == 1; // 50 of 200
                        let drop_stream = j == 0; // one per client: 20
                        if cancel {
                            server.post(
                                &format!("/api/jobs/{id}/cancel"),
                                "application/json",
                                b"",
                                &[],
                            );
                        }
                        if drop_stream {
                            let resp = server
                                .agent
                                .get(format!("{}/api/jobs/{id}/events", server.base))
                                .call()
                                .unwrap();
                            let mut reader = BufReader::new(resp.into_body().into_reader());
                            let mut line = String::new();
                            let _ = reader.read_line(&mut line); // then the connection is dropped
                        }
                        // Wait for the end by polling (the dropped streams) or by the stream.
                        let status = if drop_stream {
                            loop {
                                let s = server.get(&format!("/api/jobs/{id}")).json()["status"]
                                    .as_str()
                                    .unwrap()
                                    .to_string();
                                if ["done", "failed", "cancelled"].contains(&s.as_str()) {
                                    break s;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        } else {
                            let ev = server.events(&id);
                            kinds(&ev).last().unwrap().to_string()
                        };
                        outcomes.push((id, status, cancel, prompt_index));
                    }
                    outcomes
                })
            })
            .collect();
        let outcomes: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect();
        assert_eq!(outcomes.len(), CLIENTS * JOBS_PER_CLIENT);
        let (mut done, mut cancelled) = (0, 0);
        for (id, status, cancel, prompt) in &outcomes {
            let file = dir.path().join(format!("{id}-0-0.png"));
            match status.as_str() {
                "done" => {
                    done += 1;
                    assert!(
                        std::fs::read(&file).unwrap() == expected[*prompt],
                        "{id}: not the CLI's PNG"
                    );
                }
                "cancelled" => {
                    assert!(cancel, "{id} was cancelled without being asked");
                    cancelled += 1;
                    assert!(
                        !file.exists(),
                        "{id} was cancelled but wrote {}",
                        file.display()
                    );
                }
                other => panic!("{id}: {other}"),
            }
        }
        rss.push(rss_bytes(server.child.id()));
        eprintln!(
            "load round {round}: {} jobs in {:.1} s: {done} done, {cancelled} cancelled; server RSS {:.0} MiB",
            outcomes.len(),
            start.elapsed().as_secs_f64(),
            rss[rss.len() - 1] as f64 / (1u64 << 20) as f64
        );
        assert_eq!(done + cancelled, 200);
        assert!(
            cancelled >= 25,
            "only {cancelled} of 50 cancels took effect"
        );
    }
    // Flat: the second 200 jobs add (almost) nothing to what the first left.
    assert!(
        rss[2] < rss[1] + rss[1] / 10 + (16 << 20),
        "memory grew: {rss:?} bytes (warm, after 200 jobs, after 400)"
    );
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn a_damaged_journal_is_kept_aside_and_the_server_starts() {
    let dir = tmp();
    std::fs::create_dir_all(dir.path().join(".ditail")).unwrap();
    std::fs::write(dir.path().join(".ditail/queue.json"), b"{ not a journal").unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.get("/health").status, 200);
    assert!(
        server.get("/api/jobs").json()["jobs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let aside = std::fs::read(dir.path().join(".ditail/queue.json.damaged")).unwrap();
    assert_eq!(aside, b"{ not a journal");
}

#[test]
fn models_stay_loaded_within_the_cache_budget_and_leave_beyond_it() {
    let loads = |events: &[(String, Value)]| {
        events
            .iter()
            .filter(|(k, d)| k == "stage" && d["stage"] == "loading")
            .count()
    };
    for (budget, second_job_loads) in [("8", 0), ("0.000001", 2)] {
        let dir = tmp();
        let server = Server::start(dir.path(), &["--cache-gb", budget]);
        let (a, b) = (server.model_id("tiny-a"), server.model_id("tiny-b"));
        let first = server.events(&server.submit(&settings(&a, &b, 2)));
        assert_eq!(loads(&first), 2, "--cache-gb {budget}");
        // Another inversion (other alpha) and sampling with the same two models.
        let mut again = settings(&a, &b, 2);
        again["alpha"] = json!(1.0);
        let second = server.events(&server.submit(&again));
        assert_eq!(kinds(&second).last(), Some(&"done"));
        assert_eq!(loads(&second), second_job_loads, "--cache-gb {budget}");
    }
}
