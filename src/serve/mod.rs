//! `ditail serve`: the web app. One page (embedded: `assets/`), the HTTP API it uses
//! ([`api`]), a FIFO job queue with a journal ([`jobs`]) fed to one worker thread that owns
//! the device ([`worker`]), the model folders' catalog ([`catalog`]) and the gallery read
//! from the output PNGs ([`gallery`]). Jobs are the application layer's (`ditail_app`), run
//! by its runner as the CLI's are, so a job's PNG is the command's PNG for the same settings.
//!
//! It listens on 127.0.0.1 unless told otherwise; see [`security`] for what every request
//! passes.

pub mod api;
mod args;
pub mod catalog;
mod error;
pub mod gallery;
pub mod jobs;
pub mod preview;
pub mod security;
pub mod settings;
pub mod worker;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ditail::models::LoadOptions;

use api::App;
pub use args::ServeArgs;
use catalog::Catalog;
use ditail::app::interrupt;
use ditail::app::output::check_output_dir;
use ditail::models::device::Compute;
use jobs::Jobs;
use worker::Worker;

/// Checks the folders, scans the models, binds the address; the run serves until Ctrl-C.
/// Startup lines go to stderr unless `quiet` (warnings always).
pub fn command<'a>(
    args: &'a ServeArgs,
    compute: &'a Compute,
    quiet: bool,
) -> Result<impl FnOnce() -> Result<()> + 'a> {
    for root in &args.models {
        if !root.is_dir() {
            bail!("--models {}: no such folder", root.display());
        }
    }
    check_output_dir(&args.output)?;
    if !args.cache_gb.is_finite() || args.cache_gb <= 0.0 {
        bail!("--cache-gb {}: must be a positive number", args.cache_gb);
    }
    let output = std::fs::canonicalize(&args.output)?;
    let (jobs, resumed) = Jobs::open(&output.join(".ditail"))?;
    let roots: Vec<PathBuf> = args.models.clone();
    let catalog = Catalog::scan(
        &roots,
        LoadOptions {
            dtype: compute.dtype,
        },
    );
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let loopback = args.host.is_loopback();
    if !loopback {
        eprintln!(
            "warning: listening on {} makes ditail reachable from other machines{}",
            args.host,
            if token(args).is_some() {
                ""
            } else {
                " without a token (--token)"
            }
        );
    }
    if !quiet {
        eprintln!(
            "{} models in {} folder(s); output in {}{}",
            catalog.len(),
            roots.len(),
            output.display(),
            if resumed > 0 {
                format!("; {resumed} queued job(s) resumed")
            } else {
                String::new()
            }
        );
    }
    let token = token(args);
    Ok(move || {
        serve(
            listener, local, loopback, token, roots, output, catalog, jobs, compute, args,
        )
    })
}

/// `--token`, else `DITAIL_TOKEN`.
fn token(args: &ServeArgs) -> Option<String> {
    args.token
        .clone()
        .or_else(|| std::env::var("DITAIL_TOKEN").ok())
        .filter(|t| !t.is_empty())
}

#[allow(clippy::too_many_arguments)]
fn serve(
    listener: TcpListener,
    local: SocketAddr,
    loopback: bool,
    token: Option<String>,
    roots: Vec<PathBuf>,
    output: PathBuf,
    catalog: Catalog,
    jobs: Jobs,
    compute: &Compute,
    args: &ServeArgs,
) -> Result<()> {
    let jobs = Arc::new(jobs);
    let catalog = Arc::new(RwLock::new(catalog));
    let budget = (args.cache_gb * (1u64 << 30) as f64) as u64;
    let worker = Worker::new(
        compute.clone(),
        catalog.clone(),
        jobs.clone(),
        output.clone(),
        budget,
    );
    let worker = std::thread::Builder::new()
        .name("ditail-worker".into())
        .spawn(move || worker.run())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        jobs: jobs.clone(),
        catalog,
        roots,
        output,
        compute: compute.clone(),
        access: Arc::new(api::Access {
            token: token.clone(),
            loopback,
        }),
        gallery: Mutex::new(Default::default()),
        shutdown: stop_rx,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Request checks (image decodes, model hashes) run here; a few threads keep their
        // buffers few too.
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    let host = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let url = format!("http://{host}:{}/", local.port());
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // Tests and scripts wait for this line.
        eprintln!("ditail serve: listening on {url}");
        let link = match &token {
            Some(t) => format!("{url}?token={t}"),
            None => url.clone(),
        };
        if token.is_some() {
            eprintln!("ditail serve: open {link}");
        }
        if args.open {
            open_browser(&link);
        }
        let stopping = async move {
            while !interrupt::requested() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = stop_tx.send(true);
        };
        axum::serve(listener, api::router(app))
            .with_graceful_shutdown(stopping)
            .await
            .context("serving")
    })?;
    jobs.stop();
    let _ = worker.join();
    eprintln!("ditail serve: stopped");
    Ok(())
}

/// Opens `url` in the desktop's browser (best effort).
fn open_browser(url: &str) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(program).arg(url).spawn() {
        eprintln!("warning: could not open a browser ({program}: {e}); open {url}");
    }
}
