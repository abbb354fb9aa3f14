//! Attention at SD1.5's sizes, three ways on one device: ditail's fused kernel (what the
//! U-Net runs; on wgpu the WGSL kernel), burn's `module::attention` on the split heads,
//! and the reference (the q/k mix in tensor ops, then burn's attention in query chunks).
//! Self-attention runs Ditail's sampling batch `[source, positive, negative]` with the
//! q/k injection under a half mask; cross-attention runs over 77 text tokens.
//!
//! Prints the median of N timed runs after a warm-up, and the memory one call adds beyond
//! its inputs (output and temporaries): the device pool's reserved bytes on a GPU, the peak
//! RSS on the CPU; every measurement runs in its own process so that pools start empty. `--json FILE` writes the figures for
//! `scripts/bench_attention.sh`, which sets them beside PyTorch's SDPA.
//!
//! ```text
//! cargo run --release --example bench_attention -- --backend wgpu --dtype f16
//! cargo run --release --example bench_attention -- --backend wgpu --tokens 1024,256 --runs 2
//! ```

mod common;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::attention as sdpa;
use burn::tensor::ops::AttentionModuleOptions;
use common::{current_rss, peak_rss, reset_peak_rss};
use ditail::models::QkInjection;
use ditail::models::device::Backend;
use ditail::models::kernels::attention::{attention, attention_reference, kernel_applies};

/// SD1.5's attention layers at 512x512: tokens, heads, head width.
const SD15: [(usize, usize, usize); 4] =
    [(4096, 8, 40), (1024, 8, 80), (256, 8, 160), (64, 8, 160)];

struct Args {
    backend: Backend,
    dtype: DType,
    runs: usize,
    tokens: Vec<usize>,
    json: Option<String>,
    skip_burn: bool,
    /// Internal: run only this measurement (a child process).
    one: Option<usize>,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        backend: Backend::Wgpu,
        dtype: DType::F32,
        runs: 5,
        tokens: SD15.iter().map(|s| s.0).collect(),
        json: None,
        skip_burn: false,
        one: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = value()?.parse()?,
            "--dtype" => {
                args.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    other => bail!("--dtype {other}: expected f32 or f16"),
                }
            }
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--tokens" => {
                args.tokens = value()?
                    .split(',')
                    .map(|t| t.trim().parse().context("--tokens"))
                    .collect::<Result<_>>()?
            }
            "--json" => args.json = Some(value()?),
            "--skip-burn" => args.skip_burn = true,
            "--one" => args.one = Some(value()?.parse().context("--one")?),
            "--help" | "-h" => {
                println!(
                    "bench_attention [--backend wgpu|cuda|cpu] [--dtype f32|f16] [--runs N] \
                     [--tokens 4096,1024,256,64] [--skip-burn] [--json FILE]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// Median seconds of `runs` calls after a warm-up, and the memory the first call added:
/// device pool bytes (GPU) or peak resident bytes (CPU) beyond what the inputs hold.
fn measure(device: &Device, runs: usize, f: impl Fn() -> Tensor<3>) -> Result<(f64, u64)> {
    let sync = || device.sync().map_err(|e| anyhow::anyhow!("{e:?}"));
    sync()?;
    reset_peak_rss();
    let pool_before = device.memory_pool_usage().map(|p| p.bytes_reserved);
    let rss_before = current_rss();
    let out = f();
    sync()?;
    let memory = match (pool_before, device.memory_pool_usage()) {
        (Some(before), Some(after)) => after.bytes_reserved.saturating_sub(before),
        _ => peak_rss().saturating_sub(rss_before),
    };
    drop(out);
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let out = f();
        sync()?;
        times.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], memory))
}

fn random(shape: [usize; 3], device: &Device, dtype: DType) -> Tensor<3> {
    Tensor::<3>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), device).cast(dtype)
}

/// burn's attention on the split heads, as a plain user of burn would call it.
fn burn_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, n_q, c] = q.dims();
    let n_kv = k.dims()[1];
    let split = |t: Tensor<3>, n: usize| t.reshape([b, n, heads, c / heads]).swap_dims(1, 2);
    let out = sdpa(
        split(q, n_q),
        split(k, n_kv),
        split(v, n_kv),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    out.swap_dims(1, 2).reshape([b, n_q, c])
}

struct Row {
    layer: String,
    method: String,
    seconds: f64,
    bytes: u64,
}

/// One measurement: a layer of SD1.5 and a way to run it.
struct Job {
    tokens: usize,
    heads: usize,
    head_dim: usize,
    cross: bool,
    method: &'static str,
}

impl Job {
    fn layer(&self) -> String {
        let (kind, n_kv) = match self.cross {
            true => ("cross", 77),
            false => ("self", self.tokens),
        };
        format!(
            "{kind} {}x{n_kv} {}x{}",
            self.tokens, self.heads, self.head_dim
        )
    }
}

fn jobs(args: &Args) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &(tokens, heads, head_dim) in SD15.iter().filter(|s| args.tokens.contains(&s.0)) {
        for cross in [false, true] {
            let methods: &[&str] = match args.skip_burn {
                true => &["fused", "reference"],
                false => &["fused", "reference", "burn attention"],
            };
            for &method in methods {
                jobs.push(Job {
                    tokens,
                    heads,
                    head_dim,
                    cross,
                    method,
                });
            }
        }
    }
    jobs
}

/// Runs one job in this process: (seconds, bytes).
fn run_job(job: &Job, args: &Args, device: &Device) -> Result<(f64, u64)> {
    let (n, heads, c) = (job.tokens, job.heads, job.heads * job.head_dim);
    let n_kv = if job.cross { 77 } else { n };
    let (q, k, v) = (
        random([3, n, c], device, args.dtype),
        random([3, n_kv, c], device, args.dtype),
        random([3, n_kv, c], device, args.dtype),
    );
    let side = (n as f64).sqrt() as usize;
    let mask: Vec<f32> = (0..n).map(|i| f32::from(i % side < side / 2)).collect();
    let mask = Tensor::<1>::from_data(TensorData::new(mask, [n]), device).cast(args.dtype);
    let inject = (!job.cross).then(|| QkInjection {
        source: None,
        mask: Some(mask),
    });
    match job.method {
        "fused" => measure(device, args.runs, || {
            attention(q.clone(), k.clone(), v.clone(), heads, inject.clone())
        }),
        "reference" => measure(device, args.runs, || {
            attention_reference(q.clone(), k.clone(), v.clone(), heads, inject.clone())
        }),
        // burn's attention knows no injection: the plain attention, for its cost.
        _ => measure(device, args.runs, || {
            burn_attention(q.clone(), k.clone(), v.clone(), heads)
        }),
    }
}

pub(crate) fn main() -> Result<()> {
    let args = parse()?;
    let device = args.backend.device()?;
    let jobs = jobs(&args);
    if let Some(i) = args.one {
        // A child: one measurement, so that its memory figure is its own.
        let job = jobs.get(i).with_context(|| format!("no measurement {i}"))?;
        let (seconds, bytes) = run_job(job, &args, &device)?;
        println!("{seconds} {bytes}");
        return Ok(());
    }
    println!(
        "attention on {} ({:?}), batch 3, median of {} runs; memory: what one call adds \
         (device pool on a GPU, peak RSS on the CPU), each measured in its own process",
        args.backend, args.dtype, args.runs
    );
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .args(std::env::args().skip(1))
            .args(["--one", &i.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running a measurement")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let (Some(seconds), Some(bytes)) = (it.next(), it.next()) else {
            bail!("measurement {} ({}) failed", job.layer(), job.method);
        };
        let (seconds, bytes): (f64, u64) = (seconds.parse()?, bytes.parse()?);
        let method = match job.method {
            "fused" if kernel_applies(&device, args.dtype, job.head_dim) => "fused kernel",
            "fused" => "fused (reference)",
            other => other,
        };
        println!(
            "{:>26}  {method:<18} {:>10.3} ms  {:>9.1} MiB",
            job.layer(),
            seconds * 1e3,
            bytes as f64 / (1 << 20) as f64
        );
        rows.push(Row {
            layer: job.layer(),
            method: method.to_string(),
            seconds,
            bytes,
        });
    }
    if let Some(path) = &args.json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "layer": r.layer, "method": r.method, "seconds": r.seconds, "bytes": r.bytes,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "backend": args.backend.to_string(),
            "dtype": format!("{:?}", args.dtype),
            "rows": json,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
