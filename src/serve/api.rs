//! The HTTP API the page uses and scripts can call (see the README's web app section):
//! models, jobs (submit, list, status, server-sent events, cancel) and results. Handlers
//! only check requests and read state; the tensor work is the worker thread's, and what
//! touches files or hashes models runs on the blocking pool, never on the async runtime.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ditail::app::checks::check_mask_shape;
use ditail::app::naming::{Naming, reword};
use ditail::app::record::{dtype_name, read_record};
use ditail::models::LoadOptions;
use ditail::models::device::Compute;
use ditail::pipeline::preprocess::{load_rgb, working_dims};
use ditail::pipeline::{Mask, PipelineError};
use futures_lite::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::catalog::{Catalog, Listing};
pub use super::error::ApiError;
use super::gallery::{Gallery, valid_name};
use super::jobs::{Event, Jobs, Submission, now};
pub use super::security::Access;
use super::settings::{Files, JobSettings, LIMITS, Variant};

/// Everything the handlers share.
pub struct App {
    /// The queue.
    pub jobs: Arc<Jobs>,
    /// The model folders' catalog.
    pub catalog: Arc<RwLock<Catalog>>,
    /// The `--models` folders, rescanned on request.
    pub roots: Vec<PathBuf>,
    /// The output folder (the gallery).
    pub output: PathBuf,
    /// The device the worker runs on.
    pub compute: Compute,
    /// Who may ask (see [`Access`]).
    pub access: Arc<Access>,
    /// The gallery's records, cached.
    pub gallery: Mutex<Gallery>,
    /// Becomes true when the server stops; event streams end then.
    pub shutdown: watch::Receiver<bool>,
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

fn bad_anyhow(e: impl Into<anyhow::Error>) -> ApiError {
    let e: anyhow::Error = e.into();
    ApiError(
        StatusCode::BAD_REQUEST,
        reword(&format!("{e:#}"), Naming::Labels),
    )
}

/// A job's settings from JSON; a mistake is named by its field ("settings.steps: invalid
/// type: string \"ten\", expected usize"), without the parser's line and column.
fn parse_settings(text: &str) -> Result<JobSettings, ApiError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let what = inner.split(" at line ").next().unwrap_or(&inner);
        match e.path().to_string().as_str() {
            "." | "" => bad(format!("settings: {what}")),
            path => bad(format!("settings.{path}: {what}")),
        }
    })
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type ApiResult<T> = Result<T, ApiError>;

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/api/models", get(list_models))
        .route("/api/models/rescan", post(rescan))
        .route("/api/defaults", get(defaults))
        .route("/api/jobs", get(list_jobs).post(submit))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/events", get(events))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/{input}", get(job_input))
        .route("/api/results", get(results))
        .route(
            "/api/results/{name}",
            get(result_file).delete(delete_result),
        )
        .fallback(|| async { not_found("page") })
        .layer(axum::middleware::from_fn_with_state(
            app.access.clone(),
            super::security::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(LIMITS.max_body_bytes))
        .with_state(app)
}

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn asset(Path(file): Path<String>) -> ApiResult<Response> {
    let (body, mime) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(not_found("asset")),
    };
    Ok(([(header::CONTENT_TYPE, mime)], body).into_response())
}

async fn list_models(State(app): State<Arc<App>>) -> Json<Listing> {
    Json(
        app.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .listing(),
    )
}

async fn rescan(State(app): State<Arc<App>>) -> ApiResult<Json<Listing>> {
    let app2 = app.clone();
    let catalog = tokio::task::spawn_blocking(move || {
        Catalog::scan(
            &app2.roots,
            LoadOptions {
                dtype: app2.compute.dtype,
            },
        )
    })
    .await
    .map_err(internal)?;
    let listing = catalog.listing();
    *app.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    Ok(Json(listing))
}

/// The default settings, the limits, and the device the jobs run on (the page says it: a
/// run on the CPU takes minutes where a GPU takes seconds).
async fn defaults(State(app): State<Arc<App>>) -> Json<Value> {
    let device = json!({
        "backend": app.compute.backend.to_string(),
        "dtype": dtype_name(app.compute.dtype),
    });
    Json(json!({ "settings": JobSettings::default(), "limits": LIMITS, "device": device }))
}

async fn list_jobs(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "jobs": app.jobs.list() }))
}

async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let view = app.jobs.get(&id).ok_or_else(|| not_found("job"))?;
    Ok(Json(serde_json::to_value(view).map_err(internal)?))
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let status = app.jobs.cancel(&id).ok_or_else(|| not_found("job"))?;
    Ok(Json(json!({ "status": status })))
}

async fn results(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    let app2 = app.clone();
    let items = tokio::task::spawn_blocking(move || {
        let catalog = app2.catalog.read().unwrap_or_else(|e| e.into_inner());
        app2.gallery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(&app2.output, &catalog)
    })
    .await
    .map_err(internal)?;
    // The inputs of the job that made each result (its name begins with the job's id).
    let items: Vec<_> = items
        .into_iter()
        .map(|mut item| {
            let id = item.name.split('-').next().unwrap_or_default();
            let url = |mask: bool, what: &str| {
                app.jobs
                    .input(id, mask)
                    .map(|_| format!("/api/jobs/{id}/{what}"))
            };
            item.content_url = url(false, "content");
            item.mask_url = url(true, "mask");
            item
        })
        .collect();
    Ok(Json(json!({ "results": items })))
}

/// A listed job's content image (`content`) or painted mask (`mask`), as uploaded.
async fn job_input(
    State(app): State<Arc<App>>,
    Path((id, what)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mask = match what.as_str() {
        "content" => false,
        "mask" => true,
        _ => return Err(not_found("page")),
    };
    let path = app.jobs.input(&id, mask).ok_or_else(|| not_found(&what))?;
    plain_file(path, &what, |bytes| match bytes.get(..4) {
        Some([0x89, b'P', b'N', b'G']) => "image/png",
        Some([0xff, 0xd8, ..]) => "image/jpeg",
        Some(b"RIFF") => "image/webp",
        _ => "application/octet-stream",
    })
    .await
}

/// A plain file's bytes as a response of the type `kind` gives them, read off the async
/// runtime; `what` is not found when it is missing or not a plain file (a link placed in
/// the output folder to point elsewhere is not served).
async fn plain_file(
    path: PathBuf,
    what: &str,
    kind: impl FnOnce(&[u8]) -> &'static str,
) -> ApiResult<Response> {
    let bytes = tokio::task::spawn_blocking(move || {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        meta.is_file().then(|| std::fs::read(&path).ok()).flatten()
    })
    .await
    .map_err(internal)?
    .ok_or_else(|| not_found(what))?;
    Ok((
        [
            (header::CONTENT_TYPE, kind(&bytes).to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        bytes,
    )
        .into_response())
}

async fn result_file(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult<Response> {
    if !valid_name(&name) {
        return Err(not_found("result"));
    }
    plain_file(app.output.join(&name), "result", |_| "image/png").await
}

/// Deletes a result: a PNG of the gallery (a plain file with ditail's record, in the output
/// folder), nothing else.
async fn delete_result(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if !valid_name(&name) {
        return Err(not_found("result"));
    }
    let path = app.output.join(&name);
    let removed = tokio::task::spawn_blocking(move || {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || read_record(&path).is_none() {
            return None;
        }
        Some(std::fs::remove_file(&path))
    })
    .await
    .map_err(internal)?
    .ok_or_else(|| not_found("result"))?;
    removed.map_err(internal)?;
    Ok(Json(json!({ "deleted": name })))
}

/// What a job request carried.
#[derive(Default)]
struct Upload {
    settings: Option<String>,
    image: Option<Bytes>,
    mask: Option<Bytes>,
}

async fn read_upload(req: Request) -> ApiResult<Upload> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut upload = Upload::default();
    if ctype.starts_with("multipart/form-data") {
        let multipart_error =
            |e: axum::extract::multipart::MultipartError| ApiError(e.status(), e.body_text());
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        while let Some(field) = form.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_string();
            let data = field.bytes().await.map_err(multipart_error)?;
            let slot = match name.as_str() {
                "settings" => {
                    let text = String::from_utf8(data.to_vec())
                        .map_err(|_| bad("settings: not UTF-8 text"))?;
                    if upload.settings.replace(text).is_some() {
                        return Err(bad("settings: given twice"));
                    }
                    continue;
                }
                "image" => &mut upload.image,
                "mask" => &mut upload.mask,
                other => {
                    return Err(bad(format!(
                        "unknown part {other:?} (expected settings, image, mask)"
                    )));
                }
            };
            if slot.replace(data).is_some() {
                return Err(bad(format!("{name}: given twice")));
            }
        }
    } else if ctype.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), LIMITS.max_body_bytes)
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {} bytes", LIMITS.max_body_bytes),
                )
            })?;
        upload.settings =
            Some(String::from_utf8(bytes.to_vec()).map_err(|_| bad("the body is not UTF-8"))?);
    } else {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data (settings, image, mask) or application/json".into(),
        ));
    }
    Ok(upload)
}

async fn submit(State(app): State<Arc<App>>, req: Request) -> ApiResult<(StatusCode, Json<Value>)> {
    let upload = read_upload(req).await?;
    let text = upload
        .settings
        .as_deref()
        .ok_or_else(|| bad("missing the `settings` part (JSON)"))?;
    let settings = parse_settings(text)?;
    let accepted = tokio::task::spawn_blocking(move || app.accept(settings, upload))
        .await
        .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(accepted)))
}

/// An image part's decode error as a response: too many pixels (refused from the header,
/// never decoded) is 413, anything else 400.
/// The server's own file names stay out of the message.
fn image_refused(what: &str, e: PipelineError) -> ApiError {
    match e {
        PipelineError::ImageTooLarge {
            width, height, max, ..
        } => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what}: {width}x{height} pixels is over the limit of {max} pixels"),
        ),
        PipelineError::Image { reason, .. } => bad(format!("{what}: {reason}")),
        other => bad(format!("{what}: {other}")),
    }
}

/// A variant's name in the grid: the model, then its LoRAs.
fn label(v: &Variant, catalog: &Catalog) -> String {
    let name = |id: &str| catalog.get(id).map_or(id.to_string(), |e| e.name.clone());
    let mut s = name(&v.model);
    for l in &v.loras {
        s += &format!(" + {} {}", name(&l.id), l.scale);
    }
    s
}

impl App {
    /// Checks a job as the CLI checks a command (settings, models, LoRAs, steps, images)
    /// and queues it.
    fn accept(&self, settings: JobSettings, upload: Upload) -> ApiResult<Value> {
        let mask_part = upload.mask.filter(|_| settings.mask == "painted");
        settings
            .check(upload.image.is_some(), mask_part.is_some())
            .map_err(bad_anyhow)?;
        let (sources, targets) = settings.grid();
        let (source_labels, target_labels) = {
            let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            let labels = |vs: &[Variant]| vs.iter().map(|v| label(v, &catalog)).collect::<Vec<_>>();
            (labels(&sources), labels(&targets))
        };

        let id = self.jobs.new_id();
        let dir = self.jobs.job_dir(&id);
        let keep = || -> ApiResult<usize> {
            std::fs::create_dir_all(&dir).map_err(internal)?;
            // The content's working size (a generated content is square).
            let mut dims = (settings.size, settings.size);
            let content = self.jobs.content_path(&id);
            let mut pixels = None;
            if let Some(bytes) = &upload.image {
                std::fs::write(&content, bytes).map_err(internal)?;
                let rgb = load_rgb(&content).map_err(|e| image_refused("image", e))?;
                dims = working_dims(rgb.width(), rgb.height(), settings.size)
                    .map_err(|e| image_refused("image", e))?;
                pixels = Some(rgb);
            }
            let mask = self.jobs.mask_path(&id);
            if let Some(bytes) = &mask_part {
                std::fs::write(&mask, bytes).map_err(internal)?;
                let painted = Mask::from_image(&mask).map_err(|e| image_refused("mask", e))?;
                check_mask_shape(&painted, "painted", dims).map_err(bad_anyhow)?;
            }
            // The job the worker will build from the same files: every check the CLI makes.
            let files = Files {
                content: pixels.map(|rgb| (content.as_path(), rgb)),
                mask: &mask,
                output: &self.output,
                id: &id,
            };
            let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            settings
                .job(
                    &catalog,
                    (&source_labels, &target_labels),
                    files,
                    &self.compute,
                )
                .map_err(bad_anyhow)?;
            drop(catalog);
            self.jobs
                .submit(Submission {
                    id: id.clone(),
                    has_image: upload.image.is_some(),
                    has_mask: mask_part.is_some(),
                    settings: settings.clone(),
                    created: now(),
                    sources: source_labels.clone(),
                    targets: target_labels.clone(),
                })
                .map_err(|e| ApiError(StatusCode::TOO_MANY_REQUESTS, e))
        };
        match keep() {
            Ok(position) => Ok(json!({ "id": id, "position": position })),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

/// Where an event stream is in its job's log.
struct EventCursor {
    app: Arc<App>,
    id: String,
    changed: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    next: usize,
    preview_seq: Option<u64>,
    pending: std::collections::VecDeque<Event>,
    complete: bool,
    /// A reconnecting client's `Last-Event-ID`: events up to it are not sent again.
    after: Option<u64>,
}

impl EventCursor {
    /// The next event, waiting for it if need be; `None` once the job has ended (or the
    /// server stops).
    async fn next_event(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                let event = SseEvent::default()
                    .event(e.kind)
                    .id(e.seq.to_string())
                    .data(e.data.to_string());
                return Some((Ok(event), self));
            }
            if self.complete || *self.shutdown.borrow() {
                return None;
            }
            self.changed.borrow_and_update();
            let (events, preview, complete) = self.app.jobs.events(&self.id, self.next);
            self.next += events.len();
            self.pending.extend(events);
            if let Some(p) = preview
                && self.preview_seq.is_none_or(|s| p.seq > s)
            {
                self.preview_seq = Some(p.seq);
                self.pending.push_back(p);
            }
            if let Some(after) = self.after {
                self.pending.retain(|e| e.seq > after);
            }
            self.pending.make_contiguous().sort_by_key(|e| e.seq);
            self.complete = complete;
            if self.pending.is_empty() && !complete {
                tokio::select! {
                    r = self.changed.changed() => if r.is_err() { self.complete = true },
                    _ = self.shutdown.changed() => {},
                }
            }
        }
    }
}

async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let changed = app.jobs.subscribe(&id).ok_or_else(|| not_found("job"))?;
    let cursor = EventCursor {
        shutdown: app.shutdown.clone(),
        app,
        id,
        changed,
        next: 0,
        preview_seq: None,
        pending: Default::default(),
        complete: false,
        after,
    };
    let stream = futures_lite::stream::unfold(cursor, EventCursor::next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
