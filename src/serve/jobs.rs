//! The job queue: jobs in submission order (FIFO, one worker), each with its event log,
//! which event streams replay and follow. Queued and running jobs are kept in a journal
//! (`.ditail/queue.json` in the output folder, their inputs beside it) so that a restart
//! resumes them; a finished job leaves the journal for the history (`.ditail/finished.json`:
//! the last finished jobs, their status, error and results, their inputs kept beside them
//! until they leave it), so that the list of finished and cancelled jobs survives a restart
//! too and a result's settings can be reused with its content and painted mask.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::settings::{JobSettings, LIMITS};
use ditail::app::output::write_atomic;

/// Finished jobs kept in memory (their events and results), newest first.
const KEEP_FINISHED: usize = 100;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting in the queue.
    Queued,
    /// The worker runs it.
    Running,
    /// Every image written.
    Done,
    /// Stopped by an error.
    Failed,
    /// Stopped by a client (or left the queue).
    Cancelled,
}

impl Status {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

/// One event of a job (sent as a server-sent event: `event: kind`, `data: data`).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Increases by one per event of the job (previews included).
    pub seq: u64,
    /// What happened (`progress`, `result`, ...).
    pub kind: &'static str,
    /// Its JSON.
    pub data: Value,
}

/// An output of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRef {
    /// Its row in the grid (the source).
    pub source: usize,
    /// Its column (the target).
    pub target: usize,
    /// Its file name in the output folder.
    pub name: String,
    /// Where the API serves it.
    pub url: String,
}

/// What the journal keeps of a job: enough to run it again after a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submission {
    /// The job's id (sortable: the time it was made).
    pub id: String,
    /// What it runs, as the client sent it.
    pub settings: JobSettings,
    /// Unix seconds.
    pub created: u64,
    /// Whether `content` (the image as uploaded) is in the job's folder.
    pub has_image: bool,
    /// Whether `mask.png` is.
    pub has_mask: bool,
    /// Labels of the grid's rows (sources) and columns (targets).
    pub sources: Vec<String>,
    /// Labels of the grid's columns (targets).
    pub targets: Vec<String>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    /// The job's id (sortable: the time it was made).
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// Its place in the queue (0: next), while queued.
    pub position: Option<usize>,
    /// What it runs, as the client sent it.
    pub settings: JobSettings,
    /// Unix seconds when it was submitted.
    pub created: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The images written so far.
    pub results: Vec<ResultRef>,
    /// The last progress or stage event.
    pub progress: Option<Value>,
    /// Labels of the grid's rows (sources).
    pub sources: Vec<String>,
    /// Labels of the grid's columns (targets).
    pub targets: Vec<String>,
    /// Unix milliseconds when it started and ended.
    pub started_ms: Option<u64>,
    /// Unix milliseconds when it ended.
    pub finished_ms: Option<u64>,
}

/// What the history keeps of a finished job.
#[derive(Serialize, Deserialize)]
struct Finished {
    sub: Submission,
    status: Status,
    error: Option<String>,
    results: Vec<ResultRef>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
}

struct Job {
    sub: Submission,
    status: Status,
    error: Option<String>,
    results: Vec<ResultRef>,
    progress: Option<Value>,
    events: Vec<Event>,
    /// Only the newest preview is kept (they are images).
    preview: Option<Event>,
    next_seq: u64,
    cancel: Arc<AtomicBool>,
    changed: watch::Sender<u64>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    queue: VecDeque<String>,
    running: Option<String>,
    finished: VecDeque<String>,
    stopping: bool,
}

/// The queue, shared by the HTTP handlers and the worker.
pub struct Jobs {
    state: Mutex<State>,
    wake: Condvar,
    /// `.ditail` in the output folder: the journal and each queued job's inputs.
    dir: PathBuf,
    counter: AtomicU64,
}

/// Unix seconds now.
pub fn now() -> u64 {
    now_ms() / 1000
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Jobs {
    /// Opens the queue kept in `dir`, re-queueing what the journal holds.
    pub fn open(dir: &Path) -> Result<(Self, usize)> {
        std::fs::create_dir_all(dir.join("jobs"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let jobs = Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dir: dir.to_path_buf(),
            counter: AtomicU64::new(0),
        };
        let journal = dir.join("queue.json");
        let mut resumed = 0;
        if journal.is_file() {
            let text = std::fs::read_to_string(&journal)
                .with_context(|| format!("reading {}", journal.display()))?;
            match serde_json::from_str::<Vec<Submission>>(&text) {
                Ok(subs) => {
                    let mut state = jobs.lock();
                    for sub in subs {
                        let inputs_there = (!sub.has_image || jobs.content_path(&sub.id).is_file())
                            && (!sub.has_mask || jobs.mask_path(&sub.id).is_file());
                        if inputs_there && valid_id(&sub.id) {
                            let mut job = Job::new(sub.clone());
                            job.push("queued", json!({ "position": state.queue.len() }));
                            state.queue.push_back(sub.id.clone());
                            state.jobs.insert(sub.id, job);
                            resumed += 1;
                        }
                    }
                }
                Err(e) => {
                    // A damaged journal must not keep the server down: keep it aside for
                    // whoever wants to look, and start with an empty queue.
                    let aside = dir.join("queue.json.damaged");
                    let _ = std::fs::rename(&journal, &aside);
                    eprintln!(
                        "warning: {} is not a ditail job journal ({e}); moved to {}",
                        journal.display(),
                        aside.display()
                    );
                }
            }
        }
        jobs.read_history();
        jobs.clean_orphans();
        jobs.write_journal(&jobs.lock())?;
        Ok((jobs, resumed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh, unique, sortable job id.
    pub fn new_id(&self) -> String {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        format!("j{millis}{n:03}")
    }

    /// The folder of a job's inputs.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join("jobs").join(id)
    }

    /// The content image of a job, as uploaded.
    pub fn content_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("content")
    }

    /// The painted mask of a job.
    pub fn mask_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("mask.png")
    }

    /// Deletes input folders no journal entry owns (left by a crash).
    fn clean_orphans(&self) {
        let state = self.lock();
        if let Ok(read) = std::fs::read_dir(self.dir.join("jobs")) {
            for entry in read.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !state.jobs.contains_key(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// Restores the finished jobs of earlier runs (newest first), each with its final
    /// event; a damaged history is set aside like a damaged journal.
    fn read_history(&self) {
        let path = self.dir.join("finished.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let finished: Vec<Finished> = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let aside = self.dir.join("finished.json.damaged");
                let _ = std::fs::rename(&path, &aside);
                eprintln!(
                    "warning: {} is not a ditail job history ({e}); moved to {}",
                    path.display(),
                    aside.display()
                );
                return;
            }
        };
        let mut state = self.lock();
        for f in finished.into_iter().take(KEEP_FINISHED) {
            let id = f.sub.id.clone();
            if !valid_id(&id) || !f.status.is_final() || state.jobs.contains_key(&id) {
                continue;
            }
            let mut job = Job::new(f.sub);
            job.results = f.results;
            job.started_ms = f.started_ms;
            job.end(f.status, f.error);
            job.finished_ms = f.finished_ms;
            state.jobs.insert(id.clone(), job);
            state.finished.push_back(id);
        }
    }

    fn write_history(&self, state: &State) -> Result<()> {
        let finished: Vec<Finished> = state
            .finished
            .iter()
            .filter_map(|id| state.jobs.get(id))
            .map(|j| Finished {
                sub: j.sub.clone(),
                status: j.status,
                error: j.error.clone(),
                results: j.results.clone(),
                started_ms: j.started_ms,
                finished_ms: j.finished_ms,
            })
            .collect();
        write_json(&self.dir.join("finished.json"), &finished)
    }

    fn write_journal(&self, state: &State) -> Result<()> {
        let pending: Vec<&Submission> = state
            .running
            .iter()
            .chain(&state.queue)
            .filter_map(|id| state.jobs.get(id).map(|j| &j.sub))
            .collect();
        write_json(&self.dir.join("queue.json"), &pending)
    }

    /// Queues a job whose inputs are already in its folder; returns its position.
    pub fn submit(&self, sub: Submission) -> Result<usize, String> {
        let mut state = self.lock();
        if state.stopping {
            return Err("the server is shutting down".into());
        }
        if state.queue.len() >= LIMITS.max_queue {
            return Err(format!(
                "the queue is full ({} jobs); try again later",
                LIMITS.max_queue
            ));
        }
        let id = sub.id.clone();
        let mut job = Job::new(sub);
        let position = state.queue.len();
        job.push("queued", json!({ "position": position }));
        state.jobs.insert(id.clone(), job);
        state.queue.push_back(id);
        if let Err(e) = self.write_journal(&state) {
            eprintln!("warning: {e:#}");
        }
        drop(state);
        self.wake.notify_all();
        Ok(position)
    }

    /// Blocks until a job is queued (returns it, now running) or the server stops.
    pub fn next(&self) -> Option<(Submission, Arc<AtomicBool>)> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            if let Some(id) = state.queue.pop_front() {
                state.running = Some(id.clone());
                let job = state.jobs.get_mut(&id).expect("queued jobs exist");
                job.status = Status::Running;
                job.started_ms = Some(now_ms());
                job.push("started", json!({}));
                let out = (job.sub.clone(), job.cancel.clone());
                for (i, qid) in state.queue.clone().iter().enumerate() {
                    if let Some(j) = state.jobs.get_mut(qid) {
                        j.push("queued", json!({ "position": i }));
                    }
                }
                return Some(out);
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records an event of a job (`result`, `progress`, `preview`, ... see the README).
    pub fn emit(&self, id: &str, kind: &'static str, data: Value) {
        let mut state = self.lock();
        if let Some(job) = state.jobs.get_mut(id) {
            match kind {
                "progress" | "stage" => job.progress = Some(data.clone()),
                "result" => {
                    if let Ok(r) = serde_json::from_value::<ResultRefIn>(data.clone()) {
                        job.results.push(ResultRef {
                            source: r.source,
                            target: r.target,
                            name: r.name,
                            url: r.url,
                        });
                    }
                }
                _ => {}
            }
            job.push(kind, data);
        }
    }

    /// Ends the running job: `done`, `failed` (with the error) or `cancelled`; it leaves
    /// the journal and its inputs are deleted. `interrupted` (the server is stopping)
    /// instead keeps it queued in the journal for the next start.
    pub fn finish(&self, id: &str, status: Status, error: Option<String>, interrupted: bool) {
        let mut state = self.lock();
        state.running = None;
        if interrupted {
            return;
        }
        if let Some(job) = state.jobs.get_mut(id) {
            job.end(status, error);
        }
        self.retire(&mut state, id);
    }

    fn retire(&self, state: &mut State, id: &str) {
        state.finished.push_front(id.to_string());
        // A finished job's inputs stay while it is listed ("reuse settings" restores its
        // content and painted mask); the oldest leave with their inputs.
        while state.finished.len() > KEEP_FINISHED {
            if let Some(old) = state.finished.pop_back() {
                state.jobs.remove(&old);
                let _ = std::fs::remove_dir_all(self.job_dir(&old));
            }
        }
        if let Err(e) = self
            .write_journal(state)
            .and_then(|()| self.write_history(state))
        {
            eprintln!("warning: {e:#}");
        }
    }

    /// A listed job's content image or painted mask (`mask`), if it had one and it is kept.
    pub fn input(&self, id: &str, mask: bool) -> Option<PathBuf> {
        let state = self.lock();
        let job = state.jobs.get(id)?;
        let (has, path) = if mask {
            (job.sub.has_mask, self.mask_path(id))
        } else {
            (job.sub.has_image, self.content_path(id))
        };
        let plain = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        (has && plain).then_some(path)
    }

    /// Cancels a job: a queued one leaves the queue at once; a running one stops after
    /// its current step. `None` if there is no such job.
    pub fn cancel(&self, id: &str) -> Option<Status> {
        let mut state = self.lock();
        let status = state.jobs.get(id)?.status;
        match status {
            Status::Queued => {
                state.queue.retain(|q| q != id);
                let job = state.jobs.get_mut(id).expect("checked");
                job.end(Status::Cancelled, None);
                self.retire(&mut state, id);
                Some(Status::Cancelled)
            }
            Status::Running => {
                state.jobs[id].cancel.store(true, Ordering::SeqCst);
                Some(Status::Running)
            }
            done => Some(done),
        }
    }

    /// Stops handing out jobs and wakes the worker.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    fn view(state: &State, id: &str) -> Option<JobView> {
        let job = state.jobs.get(id)?;
        Some(JobView {
            id: id.to_string(),
            status: job.status,
            position: state.queue.iter().position(|q| q == id),
            settings: job.sub.settings.clone(),
            created: job.sub.created,
            error: job.error.clone(),
            results: job.results.clone(),
            progress: job.progress.clone(),
            sources: job.sub.sources.clone(),
            targets: job.sub.targets.clone(),
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
        })
    }

    /// One job.
    pub fn get(&self, id: &str) -> Option<JobView> {
        Self::view(&self.lock(), id)
    }

    /// Running, then queued in order, then finished, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let state = self.lock();
        state
            .running
            .iter()
            .chain(&state.queue)
            .chain(&state.finished)
            .filter_map(|id| Self::view(&state, id))
            .collect()
    }

    /// A receiver that changes with every event of the job.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<u64>> {
        Some(self.lock().jobs.get(id)?.changed.subscribe())
    }

    /// The job's events from index `from` of its log, the newest preview, and whether
    /// the log is complete (the job has ended).
    pub fn events(&self, id: &str, from: usize) -> (Vec<Event>, Option<Event>, bool) {
        let state = self.lock();
        match state.jobs.get(id) {
            None => (Vec::new(), None, true),
            Some(job) => (
                job.events.get(from..).unwrap_or_default().to_vec(),
                job.preview.clone(),
                job.status.is_final(),
            ),
        }
    }
}

/// Writes `value` as JSON to `path`, atomically (a crash leaves the old file or the new).
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())?;
        Ok(())
    })?;
    Ok(())
}

/// Ids are generated here; one read from a journal must still be a plain name.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() < 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

#[derive(Deserialize)]
struct ResultRefIn {
    source: usize,
    target: usize,
    name: String,
    url: String,
}

impl Job {
    fn new(sub: Submission) -> Self {
        Self {
            sub,
            status: Status::Queued,
            error: None,
            results: Vec::new(),
            progress: None,
            events: Vec::new(),
            preview: None,
            next_seq: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            changed: watch::channel(0).0,
            started_ms: None,
            finished_ms: None,
        }
    }

    fn push(&mut self, kind: &'static str, data: Value) {
        let event = Event {
            seq: self.next_seq,
            kind,
            data,
        };
        self.next_seq += 1;
        if kind == "preview" {
            self.preview = Some(event);
        } else {
            self.events.push(event);
        }
        self.changed.send_replace(self.next_seq);
    }

    fn end(&mut self, status: Status, error: Option<String>) {
        self.status = status;
        self.progress = None;
        self.finished_ms = Some(now_ms());
        let kind = match status {
            Status::Done => "done",
            Status::Failed => "failed",
            _ => "cancelled",
        };
        let data = match &error {
            Some(e) => json!({ "error": e }),
            None => json!({}),
        };
        self.error = error;
        self.push(kind, data);
    }
}
