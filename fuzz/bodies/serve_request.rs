//! The web app's request handling (`ditail serve`): each input is one raw HTTP/1.1 request
//! (request line, headers, body), parsed as the server's HTTP layer parses it (`httparse`,
//! which hyper uses) and sent through the real router (`serve::api::router`: the security
//! guard, every route, multipart and JSON uploads, job settings, image and mask checks,
//! the queue and its journal) of two servers over the tiny fixture models: one open on
//! loopback and one with a token (`fuzz-token`). No worker runs, so accepted jobs stay
//! queued and nothing is computed.
//!
//! Invariants, for every request: the handlers do not panic; no response is a server error
//! (5xx: a failed blocking task, a file the server could not write); nothing appears
//! outside the server's output folder and the models folder is not changed; a file served
//! from `/api/results/` is never one outside the output folder.
//!
//! So that committed inputs name real models on every machine, `{tiny-a}` and `{tiny-b}`
//! in an input are replaced by those models' catalog ids (ids hash the model's path) before
//! parsing. `Content-Length` and `Transfer-Encoding` are dropped: the body is the rest of
//! the input (hyper's framing is not what is fuzzed here).
//!
//! Not a module of `bodies/mod.rs`: it needs the web app's dependencies (axum, tower),
//! which only this target and `tests/fuzz_replay.rs` build with.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use ditail::models::LoadOptions;
use ditail::models::device::{Backend, Compute};
use tower::ServiceExt;

use crate::bodies::{repo_root, scratch};
use ditail::serve::api::{Access, App, router};
use ditail::serve::catalog::Catalog;
use ditail::serve::jobs::Jobs;
use ditail::serve::settings::LIMITS;

/// The token of the second server.
const TOKEN: &str = "fuzz-token";
/// A file beside the output folder that no response may carry.
const SECRET: &[u8] = b"\x89PNG\r\n\x1a\nnot for the web: outside the output folder";
/// The most headers a request may have (hyper's default is 100).
const MAX_HEADERS: usize = 100;

/// One fuzzing thread's servers and the folder they live in.
struct Servers {
    runtime: tokio::runtime::Runtime,
    /// `sandbox/models` (copies of the fixture models), `sandbox/output`,
    /// `sandbox/secret.png`, nothing else.
    sandbox: PathBuf,
    models_before: Vec<String>,
    ids: [(Vec<u8>, Vec<u8>); 2],
    open: Router,
    guarded: Router,
    jobs: [Arc<Jobs>; 2],
    /// Kept so that the servers' shutdown receivers stay open.
    _shutdown: tokio::sync::watch::Sender<bool>,
}

/// Every file under `dir`, relative, sorted (links not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Servers {
    fn new() -> Self {
        let sandbox = scratch().join("serve");
        let _ = std::fs::remove_dir_all(&sandbox);
        let models = sandbox.join("models");
        for name in ["tiny-a", "tiny-b"] {
            copy_dir(
                &repo_root().join("tests/fixtures/models").join(name),
                &models.join(name),
            );
        }
        std::fs::write(sandbox.join("secret.png"), SECRET).unwrap();
        let compute = Compute::select(Some(Backend::Cpu), None).expect("the CPU backend");
        let roots = vec![models.clone()];
        let catalog = Catalog::scan(
            &roots,
            LoadOptions {
                dtype: compute.dtype,
            },
        );
        let id = |name: &str| {
            let listing = serde_json::to_value(catalog.listing()).unwrap();
            let entry = listing["checkpoints"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["name"] == name))
                .unwrap_or_else(|| panic!("{name} in the fuzz catalog"));
            entry["id"].as_str().unwrap().as_bytes().to_vec()
        };
        let ids = [
            (b"{tiny-a}".to_vec(), id("tiny-a")),
            (b"{tiny-b}".to_vec(), id("tiny-b")),
        ];
        let catalog = Arc::new(RwLock::new(catalog));
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let output = sandbox.join("output");
        std::fs::create_dir_all(&output).unwrap();
        let output = std::fs::canonicalize(output).unwrap();
        let server = |token: Option<&str>, name: &str| {
            let (jobs, _) = Jobs::open(&output.join(".ditail").join(name)).unwrap();
            let jobs = Arc::new(jobs);
            let app = App {
                jobs: jobs.clone(),
                catalog: catalog.clone(),
                roots: roots.clone(),
                output: output.clone(),
                compute: compute.clone(),
                access: Arc::new(Access {
                    token: token.map(str::to_string),
                    loopback: true,
                }),
                gallery: Mutex::new(Default::default()),
                shutdown: shutdown.clone(),
            };
            (router(Arc::new(app)), jobs)
        };
        let (open, open_jobs) = server(None, "open");
        let (guarded, guarded_jobs) = server(Some(TOKEN), "guarded");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Servers {
            runtime,
            models_before: tree(&models),
            sandbox,
            ids,
            open,
            guarded,
            jobs: [open_jobs, guarded_jobs],
            _shutdown: shutdown_tx,
        }
    }

    /// Whether either queue is full: then the next input gets fresh servers, so that
    /// accepted jobs keep reaching the queue rather than its limit.
    fn full(&self) -> bool {
        self.jobs.iter().any(|j| j.list().len() >= LIMITS.max_queue)
    }
}

/// `data` with every placeholder replaced.
fn substitute(data: &[u8], ids: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    'outer: while i < data.len() {
        for (from, to) in ids {
            if data[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// The request `data` holds, as the HTTP layer would hand it to the router; `None` where
/// that layer would refuse it itself.
fn parse(data: &[u8]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(data).ok()? else {
        return None;
    };
    let mut builder = Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        builder = builder.header(h.name, h.value);
    }
    builder.body(Body::from(data[len..].to_vec())).ok()
}

pub fn run(data: &[u8]) {
    let _ = statuses(data);
}

/// The statuses the open and the guarded server answered `data` with (`None` where the
/// HTTP layer refuses it), after checking the invariants.
pub fn statuses(data: &[u8]) -> Option<[u16; 2]> {
    thread_local! {
        static SERVERS: RefCell<Option<Servers>> = const { RefCell::new(None) };
    }
    SERVERS.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(Servers::full) {
            *slot = Some(Servers::new());
        }
        let s = slot.as_ref().unwrap();
        let data = substitute(data, &s.ids);
        let mut statuses = [0; 2];
        for (router, answer) in [&s.open, &s.guarded].into_iter().zip(&mut statuses) {
            let request = parse(&data)?;
            let path = request.uri().path().to_string();
            s.runtime.block_on(async {
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status();
                *answer = status.as_u16();
                let event_stream = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                // An event stream of a queued job never ends (no worker runs it).
                let body = if event_stream {
                    Vec::new()
                } else {
                    axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .unwrap()
                        .to_vec()
                };
                assert!(
                    !status.is_server_error(),
                    "{path}: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                assert!(
                    !body.windows(SECRET.len()).any(|w| w == SECRET),
                    "{path}: served a file outside the output folder"
                );
            });
        }
        let mut top: Vec<String> = std::fs::read_dir(&s.sandbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["models", "output", "secret.png"],
            "files outside output"
        );
        assert_eq!(
            tree(&s.sandbox.join("models")),
            s.models_before,
            "the models folder changed"
        );
        Some(statuses)
    })
}
