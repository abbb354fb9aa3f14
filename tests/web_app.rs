//! The web app in a real browser: `ditail serve` (the real binary, CPU backend, the tiny
//! fixture models) driven through headless Chromium by WebDriver. A transfer with a painted
//! mask shows progress, a live preview and its result (and writes the file); a second job
//! is cancelled from the queue and writes nothing; a 2-model cocktail fills its 2x2 grid;
//! the gallery lists every output. Screenshots go to `target/web-app-screenshots/`.
//!
//! Needs Chromium and chromedriver (`sudo apt-get install -y chromium chromium-driver`);
//! without them the test fails, it does not skip.

#[path = "web_app/webdriver.rs"]
mod webdriver;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webdriver::Browser;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `target/web-app-screenshots` next to this test's executable (`target/debug/deps/…`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("web-app-screenshots");
    std::fs::create_dir_all(&dir).expect("creating the screenshot folder");
    dir
}

/// The server as a child process, killed on drop; its stderr is kept for failure reports.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(output: &Path, home: &Path) -> Self {
        // A checkpoint ditail cannot use (a pickle), as model folders have them.
        let junk = home.join("junk");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(
            junk.join("old-model.ckpt"),
            b"PK\x03\x04 not a real checkpoint",
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ditail"))
            .args(["--backend", "cpu", "--quiet", "serve", "--models"])
            .arg(fixtures().join("models"))
            // Textual-inversion embeddings (a folder named `embeddings`, as A1111's).
            .arg("--models")
            .arg(fixtures().join("prompts/embeddings"))
            .arg("--models")
            .arg(&junk)
            .arg("--output")
            .arg(output)
            .args(["--port", "0"])
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", home.join("hf"))
            .env_remove("DITAIL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting `ditail serve`");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        // Keeps draining stderr for the server's whole life (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ditail serve: listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut log = log2.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Self { child, url, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`ditail serve` did not print its listening line in 60 s; stderr:\n{}",
                    log.lock().unwrap()
                );
            }
        }
    }

    /// Stops the server (as a crash or a power cut would: no shutdown of its own).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn api(&self, path: &str) -> Value {
        let url = format!("{}{}", self.url, path.trim_start_matches('/'));
        webdriver::agent(true)
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's world: browser, server, output folder, screenshot folder.
struct Ctx {
    browser: Browser,
    server: Server,
    output: PathBuf,
    shots: PathBuf,
}

impl Ctx {
    /// Polls `f` until it gives a value; on timeout, fails with the page's state.
    fn wait<T>(&self, what: &str, timeout_s: u64, mut f: impl FnMut(&Browser) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(&self.browser) {
                return v;
            }
            if start.elapsed() > Duration::from_secs(timeout_s) {
                self.fail(&format!("timed out after {timeout_s} s waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs axe-core (`tests/web_app/axe.min.js`, 4.4.3 as the `axe-core-python` 0.1.0 wheel
    /// on PyPI ships it, MPL-2.0) on the page as it is; fails on a serious or critical
    /// violation, naming the rule and the elements.
    fn assert_accessible(&self, what: &str) {
        let axe = include_str!("web_app/axe.min.js");
        self.browser
            .script(&format!("{axe}\n;window.__axe = null; return true;"), &[]);
        self.js(
            "axe.run(document, { resultTypes: ['violations'] }).then((r) => { window.__axe = r; }, \
             (e) => { window.__axe = { error: String(e) }; }); return true;",
        );
        let report = self.wait_js(
            "the accessibility audit",
            60,
            "const r = window.__axe; if (!r) return null; if (r.error) return [r.error];
             return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)
               .concat(['audited']);",
        );
        let problems: Vec<&str> = report
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| *s != "audited")
            .collect();
        assert!(problems.is_empty(), "{what}: accessibility: {problems:#?}");
    }

    /// Polls a script until it returns something truthy (not null/false/0/"").
    fn wait_js(&self, what: &str, timeout_s: u64, script: &str) -> Value {
        self.wait(what, timeout_s, |b| {
            let v = b.try_script(script).ok()?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            truthy.then_some(v)
        })
    }

    fn js(&self, script: &str) -> Value {
        self.browser.script(script, &[])
    }

    fn shot(&self, name: &str) {
        self.browser.screenshot(&self.shots.join(name));
    }

    /// Fails with what the page shows (error area, progress, queue), the browser console
    /// and the server's stderr; saves `failure.png`.
    fn fail(&self, msg: &str) -> ! {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shot("failure.png")));
        let state = self
            .browser
            .try_script(
                "return {error: document.querySelector('#error').hidden ? null : document.querySelector('#error-text').textContent,
                  progress: document.querySelector('#progress-label').textContent,
                  queue: [...document.querySelectorAll('#queue .job')].map(j => j.dataset.id + ' ' + j.dataset.status)}",
            )
            .unwrap_or_else(Value::String);
        panic!(
            "{msg}\npage: {state}\nconsole: {:#?}\nserver stderr:\n{}\n(screenshot: {})",
            self.browser.console(),
            self.server.log.lock().unwrap(),
            self.shots.join("failure.png").display()
        );
    }

    fn assert_no_error(&self, when: &str) {
        let v = self.js("return document.querySelector('#error').hidden ? null : document.querySelector('#error-text').textContent");
        if !v.is_null() {
            self.fail(&format!("{when}: the page shows an error: {v}"));
        }
    }

    /// The PNG files in the output folder.
    fn outputs(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.output)
            .expect("reading the output folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".png"))
            .collect()
    }

    /// Clicks Run and returns the new job's id (the page shows a submitted job at once).
    fn run(&self) -> String {
        let before = self.js("return document.querySelector('#progress').dataset.job || ''");
        self.browser.click("#run");
        let script = format!(
            "const id = document.querySelector('#progress').dataset.job; return id && id !== {before} ? id : null"
        );
        let id = self.wait_js("the new job in the output panel", 30, &script);
        id.as_str().unwrap().to_string()
    }

    /// (The sampling steps must be a subset of the inversion's: equal counts, or a divisor.)
    fn set_steps(&self, inv_steps: u32, steps: u32) {
        self.browser.type_into("#inv-steps", &inv_steps.to_string());
        self.browser.type_into("#steps", &steps.to_string());
    }
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 100)
}

#[test]
fn web_app_in_a_browser() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("out");
    std::fs::create_dir_all(&output).unwrap();
    let shots = screenshot_dir();
    println!("screenshots: {}", shots.display());
    let browser = Browser::start();
    let server = Server::start(&output, tmp.path());
    let mut ctx = Ctx {
        browser,
        server,
        output,
        shots,
    };
    let b = &ctx.browser;

    // The catalog, for the ids the pickers use.
    let models = ctx.server.api("/api/models");
    let id_of = |name: &str| -> String {
        let e = models["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the catalog: {models}"));
        assert_eq!(e["usable"], true, "{e}");
        e["id"].as_str().unwrap().to_string()
    };
    let (a, bb) = (id_of("tiny-a"), id_of("tiny-b"));

    // ── The idle page: pickers filled from the catalog, defaults in the form.
    b.goto(&ctx.server.url);
    ctx.wait_js(
        "the page to start",
        20,
        "return document.body.dataset.ready === 'true'",
    );
    let options =
        ctx.js("return [...document.querySelectorAll('#source option')].map(o => o.value)");
    assert!(
        options.as_array().unwrap().len() >= 2,
        "source options: {options}"
    );
    let defaults = ctx.server.api("/api/defaults")["settings"].clone();
    assert_eq!(
        ctx.js("return document.querySelector('#negative-prompt').value"),
        defaults["negative_prompt"],
        "the form takes its defaults from /api/defaults"
    );
    // The header says which device runs the jobs (the CPU here: the slow one, marked).
    assert_eq!(
        ctx.js("const d = document.querySelector('#device'); return [d.textContent, d.classList.contains('slow'), d.hidden]"),
        json!(["cpu · f32", true, false])
    );
    ctx.assert_no_error("on load");
    ctx.shot("idle.png");
    ctx.assert_accessible("the idle page");

    // ── Embeddings: listed as chips, offered while typing a name in a prompt.
    let chips = ctx
        .js("return [...document.querySelectorAll('#embeddings .chip')].map(c => c.textContent)");
    for name in ["EasyNeg", "XlNeg", "fox-style"] {
        assert!(
            chips.as_array().unwrap().iter().any(|c| c == name),
            "chips: {chips}"
        );
    }
    b.type_into("#negative-prompt", "worst quality, eas");
    ctx.wait_js(
        "the embedding suggestion",
        10,
        "const s = document.querySelector('#suggest'); return !s.hidden && s.textContent.includes('EasyNeg')",
    );
    b.send_keys("#negative-prompt", "\u{E004}"); // Tab takes the suggestion
    assert_eq!(
        ctx.js("return document.querySelector('#negative-prompt').value"),
        json!("worst quality, EasyNeg"),
        "Tab completes the name"
    );
    b.type_into(
        "#negative-prompt",
        defaults["negative_prompt"].as_str().unwrap(),
    );
    ctx.js("document.querySelector('#suggest').hidden = true");

    // Unusable models say why in a few words (the whole reason is the tooltip).
    let unusable = ctx.js(
        "return [...document.querySelectorAll('#source option.unusable')].map(o => [o.textContent, o.title])",
    );
    let (text, tooltip) = (&unusable[0][0], &unusable[0][1]);
    assert!(
        text.as_str()
            .unwrap()
            .starts_with("old-model — unusable: a PyTorch pickle")
            && text.as_str().unwrap().len() <= 120,
        "{unusable}"
    );
    assert!(
        tooltip.as_str().unwrap().contains("safetensors"),
        "{unusable}"
    );

    // Times read as a person writes them (never "1 min 60 s"); every prompt box and icon
    // button has an accessible name.
    assert_eq!(
        ctx.js("return [fmtSecs(5.2), fmtSecs(59.5), fmtSecs(119.6), fmtSecs(125)]"),
        json!(["6 s", "1 min 0 s", "2 min 0 s", "2 min 5 s"])
    );
    assert_eq!(
        ctx.js(
            "return [...document.querySelectorAll('textarea, #gallery-refresh')]\
             .filter(e => !e.getAttribute('aria-label')).map(e => e.id)"
        ),
        json!([]),
        "elements without an accessible name"
    );

    // ── Content image, models, painted mask, prompt, quick settings.
    let content = fixtures().join("pipeline/content.png");
    b.send_keys("#content-file", &content.display().to_string());
    ctx.wait_js(
        "the content preview",
        10,
        "const i = document.querySelector('#content-preview'); return i.naturalWidth > 0 && !i.hidden",
    );
    b.select("#source", &a);
    b.select("#targets .target-model", &bb);
    let picked = ctx.js("return [document.querySelector('#source').value, [...document.querySelectorAll('#targets .target-model')].map(s => s.value)]");
    assert_eq!(picked, json!([a, [bb]]));
    // Picking an SDXL checkpoint moves the size to SDXL's 1024, an SD1.x one back to 512.
    let size = || ctx.js("return document.querySelector('#size').value");
    let xl = id_of("tiny-xl");
    b.select("#targets .target-model", &xl);
    assert_eq!(size(), json!("1024"), "SDXL's size");
    b.select("#targets .target-model", &bb);
    assert_eq!(size(), json!("512"), "SD1.x's size");

    b.select("#mask", "painted");
    let canvas = b.find("#mask-canvas");
    b.scroll_to(&canvas);
    let rect = ctx.js("const r = document.querySelector('#mask-canvas').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]");
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        r[2] > 20.0 && r[3] > 20.0,
        "the mask canvas is visible over the preview: {rect}"
    );
    let (cx, cy) = (r[0] + r[2] / 2.0, r[1] + r[3] / 2.0);
    b.drag(&[
        (cx - r[2] * 0.3, cy - r[3] * 0.1),
        (cx, cy),
        (cx + r[2] * 0.3, cy + r[3] * 0.2),
    ]);
    let painted = ctx.js(
        "const c = document.querySelector('#mask-canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n / (c.width * c.height)",
    );
    let painted = painted.as_f64().unwrap();
    assert!(
        painted > 0.02 && painted < 0.9,
        "the stroke painted {painted} of the mask"
    );

    // What Run sends as the `mask` part: an 8-bit grayscale PNG of the canvas's size.
    let png = ctx.js(
        "return maskPng().then(b => b.arrayBuffer()).then(a => {
           const u = new Uint8Array(a), v = new DataView(a), c = document.querySelector('#mask-canvas');
           return [u[24], u[25], v.getUint32(16) === c.width && v.getUint32(20) === c.height]; })",
    );
    assert_eq!(
        png,
        json!([8, 0, true]),
        "mask PNG: [bit depth, color type, size matches]"
    );

    b.type_into("#prompt", "a photo of a cat");
    b.click("#advanced");
    b.type_into("#size", "64");

    // ── A refused run names the page's fields, marks them, and clears with the next run.
    ctx.set_steps(10, 7);
    b.click("#run");
    let refused = ctx.wait_js(
        "the refusal",
        30,
        "const e = document.querySelector('#error'); return e.hidden ? null : [e.textContent, [...document.querySelectorAll('.invalid')].map(f => f.id)]",
    );
    let text = refused[0].as_str().unwrap();
    assert!(
        text.contains("sampling steps 7")
            && text.contains("inversion steps 10")
            && !text.contains("--"),
        "{refused}"
    );
    assert_eq!(refused[1], json!(["inv-steps", "steps"]), "{refused}");
    ctx.set_steps(20, 20);

    // ── Run: stage labels and a live preview, then the result image and its file.
    // Observers record every label and every preview shown, however quick the steps are.
    ctx.js(
        "window.seen = {labels: [], previews: []};
         const label = document.querySelector('#progress-label'), p = document.querySelector('#preview');
         new MutationObserver(() => seen.labels.push(label.textContent))
           .observe(label, {childList: true, characterData: true, subtree: true});
         new MutationObserver(() => { if (!p.hidden && p.src.startsWith('data:image/'))
           seen.previews.push(document.querySelectorAll('#results img.result').length); })
           .observe(p, {attributes: true, attributeFilter: ['src', 'hidden']});",
    );
    let job1 = ctx.run();
    ctx.wait_js(
        "a live preview (if the steps ran too quickly to catch it, raise them)",
        120,
        "const p = document.querySelector('#preview'); return !p.hidden && p.src.startsWith('data:image/')",
    );
    ctx.shot("running.png");
    let name = ctx.wait_js(
        "the result image",
        120,
        "const i = document.querySelector('#results img.result'); return i && i.complete && i.naturalWidth > 0 ? i.dataset.name : null",
    );
    let name = name.as_str().unwrap().to_string();
    assert!(
        is_png(&ctx.output.join(&name)),
        "{name} is not a PNG in the output folder"
    );
    ctx.wait_js(
        "the first job to be done",
        30,
        &format!("const j = document.querySelector('#queue .job[data-id=\"{job1}\"]'); return j && j.dataset.status === 'done'"),
    );
    assert_eq!(ctx.outputs(), BTreeSet::from([name.clone()]));
    let seen = ctx.js("return seen");
    let labels: Vec<&str> = seen["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for stage in ["loading ", "inversion ", "sampling ", "decoding "] {
        assert!(
            labels.iter().any(|l| l.starts_with(stage)),
            "no {stage:?} label among {labels:?}"
        );
    }
    assert!(
        labels.iter().any(|l| l.starts_with("sampling 1/20 (")),
        "sampling labels name the models and count steps: {labels:?}"
    );
    assert_eq!(
        seen["previews"].as_array().unwrap().first(),
        Some(&json!(0)),
        "the preview shows before the result: {seen}"
    );
    ctx.assert_no_error("after the first job");
    println!(
        "transfer done at {:.1} s; {} labels seen",
        started.elapsed().as_secs_f64(),
        labels.len()
    );

    // ── A second job, cancelled from the queue: it ends cancelled and writes nothing.
    ctx.set_steps(200, 200);
    let job2 = ctx.run();
    b.click(&format!("#queue .job[data-id=\"{job2}\"] .cancel"));
    ctx.wait_js(
        "the second job to be cancelled",
        60,
        &format!("const j = document.querySelector('#queue .job[data-id=\"{job2}\"]'); return j && j.dataset.status === 'cancelled'"),
    );
    let status = ctx.server.api(&format!("/api/jobs/{job2}"));
    assert_eq!(status["status"], "cancelled", "{status}");
    assert_eq!(status["results"], json!([]), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ctx.outputs(),
        BTreeSet::from([name.clone()]),
        "the cancelled job wrote a file"
    );
    ctx.assert_no_error("after cancelling");

    // ── Cocktail of both models: the 2x2 grid fills in.
    ctx.set_steps(4, 4);
    b.click("#mode-cocktail");
    b.click(&format!(".cocktail-model[value=\"{a}\"]"));
    b.click(&format!(".cocktail-model[value=\"{bb}\"]"));
    let job3 = ctx.run();
    let shape = ctx.wait_js(
        "the cocktail grid",
        30,
        "const g = document.querySelector('#grid'); return g.hidden ? null : [...g.querySelectorAll('td')].map(td => td.dataset.source + ',' + td.dataset.target)",
    );
    assert_eq!(shape, json!(["0,0", "0,1", "1,0", "1,1"]));
    let heads =
        ctx.js("return [...document.querySelectorAll('#grid th')].map(th => th.textContent)");
    assert!(
        heads.to_string().contains("tiny-a") && heads.to_string().contains("tiny-b"),
        "grid labels: {heads}"
    );
    ctx.wait_js(
        "4 images in the cocktail grid",
        180,
        "return [...document.querySelectorAll('#grid td img')].filter(i => i.complete && i.naturalWidth > 0).length === 4",
    );
    b.scroll_to(&b.find("#grid"));
    ctx.shot("cocktail.png");
    ctx.wait_js(
        "the cocktail job to be done",
        30,
        &format!("const j = document.querySelector('#queue .job[data-id=\"{job3}\"]'); return j && j.dataset.status === 'done'"),
    );
    let files = ctx.outputs();
    assert_eq!(files.len(), 5, "1 transfer + 4 cocktail images: {files:?}");
    ctx.assert_no_error("after the cocktail");

    // ── The gallery lists every output; an item opens with its record and a download link.
    let want = json!(files.iter().collect::<Vec<_>>());
    ctx.wait_js(
        "the gallery to list the outputs",
        30,
        &format!(
            "const names = [...document.querySelectorAll('#gallery .gallery-item')].map(i => i.dataset.name).sort();
             return JSON.stringify(names) === JSON.stringify({want})"
        ),
    );
    // Captions say which models made each image (a cocktail's cells share the prompt).
    let captions = ctx.js("return [...document.querySelectorAll('#gallery .gallery-item .cap')].map(c => c.textContent)");
    for want in ["tiny-a → tiny-b", "tiny-b → tiny-a"] {
        assert!(
            captions.as_array().unwrap().iter().any(|c| c == want),
            "gallery captions: {captions}"
        );
    }
    b.scroll_to(&b.find("#gallery"));
    ctx.shot("gallery.png");
    b.click("#gallery .gallery-item");
    let detail = ctx.wait_js(
        "the detail view",
        10,
        "const d = document.querySelector('#detail'); return d.open ? [document.querySelector('#detail-record').textContent, document.querySelector('#detail-download').getAttribute('href')] : null",
    );
    assert!(
        detail[0].as_str().unwrap().contains("a photo of a cat"),
        "record: {detail}"
    );
    assert!(
        detail[1].as_str().unwrap().starts_with("/api/results/"),
        "download: {detail}"
    );
    // The record in words: models by name, never a path of the server's disk.
    let summary = ctx.js("return document.querySelector('#detail-summary').textContent");
    let summary = summary.as_str().unwrap();
    assert!(
        summary.contains("source → target") && summary.contains("a photo of a cat"),
        "summary: {summary}"
    );
    assert!(
        !summary.contains(&*fixtures().to_string_lossy())
            && !summary.contains(&*ctx.output.to_string_lossy())
            && !summary.contains(".ditail"),
        "the summary shows a path: {summary}"
    );
    ctx.assert_accessible("the page with results and the detail view open");
    // "Reuse settings" brings the job's own content image and painted mask back.
    b.click("#detail-reuse");
    let reused = ctx.wait_js(
        "the reused content and mask",
        10,
        "const c = document.querySelector('#mask-canvas');
         const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let painted = 0; for (let i = 3; i < a.length; i += 4) if (a[i] > 127) painted++;
         const name = document.querySelector('#content-name').textContent;
         return name.startsWith('content of') && painted > 0
           ? [document.querySelector('#mask').value, painted / (c.width * c.height)] : null",
    );
    assert_eq!(reused[0], "painted", "{reused}");
    let share = reused[1].as_f64().unwrap();
    assert!(
        share > 0.05 && share < 0.95,
        "painted share of the reused mask: {share}"
    );
    b.click("#gallery .gallery-item");
    ctx.wait_js(
        "the detail view",
        10,
        "return document.querySelector('#detail').open",
    );
    b.click("#detail-close");

    // Filter (every word must match), order, delete.
    let shown =
        "return [...document.querySelectorAll('#gallery .gallery-item')].map(i => i.dataset.name)";
    let one = files.iter().next().unwrap().clone();
    b.type_into("#gallery-filter", &one);
    ctx.wait_js(
        "the filtered gallery",
        10,
        &format!("const s = (() => {{ {shown} }})(); return s.length === 1 && s[0] === {one:?}"),
    );
    b.type_into("#gallery-filter", "no such words");
    ctx.wait_js(
        "the empty filter's message",
        10,
        "return document.querySelector('#gallery').textContent.includes('No image matches')",
    );
    b.type_into("#gallery-filter", "");
    ctx.js("document.querySelector('#gallery-filter').dispatchEvent(new Event('input'))");
    let newest = ctx.js(shown);
    b.select("#gallery-sort", "oldest");
    let oldest = ctx.js(shown);
    let mut reversed = newest.as_array().unwrap().clone();
    reversed.reverse();
    assert_eq!(
        oldest,
        json!(reversed),
        "oldest first is newest first reversed"
    );
    b.select("#gallery-sort", "newest");
    let doomed = newest[0].as_str().unwrap().to_string();
    b.click(&format!("#gallery .gallery-item[data-name=\"{doomed}\"]"));
    ctx.wait_js(
        "the detail view",
        10,
        "return document.querySelector('#detail').open",
    );
    ctx.js("window.confirm = () => true;");
    b.click("#detail-delete");
    ctx.wait_js(
        "the deleted image to leave the gallery",
        10,
        &format!(
            "const s = (() => {{ {shown} }})(); return s.length === 4 && !s.includes({doomed:?})"
        ),
    );
    assert!(
        !ctx.output.join(&doomed).exists(),
        "{doomed} is still in the output folder"
    );

    // ── A phone (390 px): Advanced open, nothing scrolls sideways.
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({ "width": 390, "height": 844 })),
    );
    ctx.js("const a = document.querySelector('#advanced'); if (!a.checked) a.click();");
    let widths = ctx.wait_js(
        "the narrow layout",
        10,
        "return window.innerWidth <= 400 ? [document.documentElement.scrollWidth, window.innerWidth] : null",
    );
    let (scroll, inner) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
    ctx.shot("narrow.png");
    assert!(
        scroll <= inner,
        "the page scrolls sideways at {inner} px: {scroll} px wide"
    );
    ctx.assert_accessible("a phone's width");

    // ── A restart: the finished jobs are listed again (the gallery too), each done with
    // all its images.
    let before: Vec<Value> = ctx.server.api("/api/jobs")["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| json!([j["status"], j["results"].as_array().unwrap().len()]))
        .collect();
    assert!(before.len() >= 3, "jobs before the restart: {before:?}");
    // While the server is down the Output card says so (it shows the last state it had).
    ctx.server.stop();
    ctx.wait_js(
        "the Output card to say the server is not answering",
        15,
        "return !document.querySelector('#progress-offline').hidden
           && document.querySelector('#conn').textContent === 'offline'",
    );
    ctx.server = Server::start(&ctx.output, tmp.path());
    let b = &ctx.browser;
    b.goto(&ctx.server.url);
    ctx.wait_js(
        "the finished jobs after a restart",
        20,
        &format!(
            "const rows = [...document.querySelectorAll('#queue .job')];
             return rows.length === {n} && rows.every(r => r.dataset.status)",
            n = before.len()
        ),
    );
    let after = ctx.js(
        "return [...document.querySelectorAll('#queue .job')].map(r => [r.dataset.status, +r.querySelector('.job-count').textContent.split('/')[0]])",
    );
    assert_eq!(after, json!(before), "finished jobs after a restart");

    let errors: Vec<_> = b
        .console()
        .into_iter()
        .filter(|(level, source, _)| level == "SEVERE" && source == "javascript")
        .collect();
    assert!(errors.is_empty(), "JavaScript errors: {errors:#?}");
    println!("web app test: {:.1} s", started.elapsed().as_secs_f64());
}
