//! Kernel dispatches and device memory of one U-Net step and one VAE decode on a GPU
//! backend: hardware-independent counts (the same on lavapipe as on a GPU for the same
//! build and shapes), for comparing kernel settings where no GPU can be timed.
//!
//! ```text
//! cargo run --release --example gpu_counts -- --backend wgpu --dtype f16 --side 32 --batch 3
//! ```
//! SD1.5's full-size networks (`--model sdxl`: SDXL's, with its added conditioning for
//! `8 * side` px), randomly initialised (then cast to `--dtype`); the U-Net at
//! `--side` x `--side` latents, batch `--batch` (3: Ditail's sampling batch), with Ditail's
//! injection off (the counts of the hooks' copies are the pipeline's, not the kernels'); the
//! VAE decoder at `8 * side` px. Each is run once to warm up (autotune benchmarks its
//! candidates then, and is cached: `DITAIL_GPU_CACHE`), then counted. `--profile` also
//! times each kernel on the device (timestamps, read after the run: on a GPU, where the run
//! goes and how long the device waits between kernels; on lavapipe the times mean nothing).
//! `--json FILE` writes the figures. `--repeat N` then runs N more U-Net forwards between
//! two printed lines, for a profiler attached to the process (`perf record -p PID`) to
//! sample the host's side of a step: where the host's time goes besides the kernels. Built
//! alone this example runs on the system allocator; within `examples/gpu_tools.rs` (what
//! `scripts/gpu_bench.sh` runs) it has the `ditail` binary's, which `bench` brings.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType};
use ditail::models::cast::cast_floats;
use ditail::models::device::Backend;
use ditail::models::gpu::{self, Dispatches};
use ditail::models::{AddedConditioning, Conditioning, NoControl, UNetConfig, VaeConfig};

struct Args {
    backend: Backend,
    /// `sd15` or `sdxl`.
    model: String,
    dtype: FloatDType,
    side: usize,
    batch: usize,
    top: usize,
    profile: bool,
    json: Option<String>,
    repeat: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        backend: Backend::Wgpu,
        model: "sd15".into(),
        dtype: FloatDType::F16,
        side: 32,
        batch: 3,
        top: 12,
        profile: false,
        json: None,
        repeat: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = value()?.parse()?,
            "--model" => {
                a.model = value()?;
                if !matches!(a.model.as_str(), "sd15" | "sdxl") {
                    bail!("--model {}: sd15 or sdxl", a.model);
                }
            }
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f16" => FloatDType::F16,
                    "f32" => FloatDType::F32,
                    other => bail!("--dtype {other}: f16 or f32"),
                }
            }
            "--side" => a.side = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--top" => a.top = value()?.parse()?,
            "--profile" => a.profile = true,
            "--json" => a.json = Some(value()?),
            "--repeat" => a.repeat = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.backend == Backend::Cpu {
        bail!("dispatches are counted on a GPU backend (--backend wgpu or cuda)");
    }
    Ok(a)
}

fn show(name: &str, d: &Dispatches, seconds: f64, top: usize) {
    println!(
        "{name}: {} dispatches, pools hold {:.1} MiB ({:.1} MiB in live tensors); {seconds:.1} s \
         counted run",
        d.total,
        d.reserved_bytes as f64 / (1 << 20) as f64,
        d.in_use_bytes as f64 / (1 << 20) as f64,
    );
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    let Some(times) = &d.times else {
        let mut kinds: Vec<_> = d.by_kernel.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (kernel, n) in kinds.into_iter().take(top) {
            println!("  {n:6}  {kernel}");
        }
        return;
    };
    let clock = match times.device_clock {
        true => "device timestamps",
        false => "host time around blocking submits (no device timestamps)",
    };
    println!(
        "  device busy {:.2} ms of a {:.2} ms span ({:.0}% idle between kernels); {} of {} \
         launches timed ({clock})",
        ms(times.busy()),
        ms(times.span),
        100.0 * times.idle_share(),
        times.measured,
        times.measured + times.unmeasured,
    );
    let busy = times.busy().as_secs_f64().max(f64::MIN_POSITIVE);
    let mut kinds: Vec<_> = d.by_kernel.iter().collect();
    let time = |k: &str| times.by_kernel.get(k).copied().unwrap_or_default();
    kinds.sort_by(|a, b| time(b.0).cmp(&time(a.0)).then(a.0.cmp(b.0)));
    for (kernel, n) in kinds.into_iter().take(top) {
        let t = time(kernel);
        println!(
            "  {n:6}  {:9.3} ms {:5.1}%  {kernel}",
            ms(t),
            100.0 * t.as_secs_f64() / busy
        );
    }
}

/// Runs `work` once to warm up, then counts (and with `profile` times) a second run.
fn counted(device: &Device, profile: bool, mut work: impl FnMut()) -> (Dispatches, f64) {
    work();
    let start = Instant::now();
    let ((), d) = match profile {
        true => gpu::profile_dispatches(device, &mut work),
        false => gpu::count_dispatches(device, &mut work),
    };
    (d, start.elapsed().as_secs_f64())
}

pub(crate) fn main() -> Result<()> {
    let args = parse()?;
    let device = args.backend.device()?;
    let info = gpu::info(&device).context("not a GPU device")?;
    println!(
        "gpu_counts: {} ({}), {}, dtype {:?}, U-Net {}x{} batch {}, VAE decode {} px",
        args.backend,
        info.compiler,
        args.model,
        args.dtype,
        args.side,
        args.side,
        args.batch,
        8 * args.side
    );
    let dt: DType = args.dtype.into();
    let xl = args.model == "sdxl";
    let (unet_config, vae_config) = match xl {
        true => (UNetConfig::sdxl(), VaeConfig::sdxl()),
        false => (UNetConfig::sd15(), VaeConfig::sd15()),
    };
    let unet = cast_floats(unet_config.init(&device), args.dtype);
    let vae = cast_floats(vae_config.init(&device), args.dtype);
    let normal = Distribution::Normal(0.0, 1.0);
    let (b, s) = (args.batch, args.side);
    let x = Tensor::<4>::random([b, 4, s, s], normal, &device).cast(dt);
    let tokens = [b, 77, unet_config.cross_attention_dim];
    // SDXL's pooled text and sizes (the image's, uncropped).
    let pooled = unet_config
        .projection_class_embeddings_input_dim
        .zip(unet_config.addition_time_embed_dim)
        .map(|(input, t)| input - 6 * t);
    let px = (8 * s) as f32;
    let ctx = Conditioning {
        context: Tensor::<3>::random(tokens, normal, &device).cast(dt),
        added: pooled.map(|width| AddedConditioning {
            text_embeds: Tensor::<2>::random([b, width], normal, &device).cast(dt),
            time_ids: Tensor::<2>::from_data(
                TensorData::new([px, px, 0.0, 0.0, px, px].repeat(b), [b, 6]),
                (&device, dt),
            ),
        }),
    };
    // Prepared as a run's steps are (50 DDIM timesteps, 981 the fourth), so that the counted forward
    // (after the warm-up one) reads the cross-attention's keys and values and its rows of
    // the time embeddings kept from the first.
    let run: Vec<f32> = (0..50).map(|i| 999.0 - 6.0 * i as f32).collect();
    let prepared = unet.prepare(ctx).for_timesteps(&run);
    let (unet_counts, unet_s) = counted(&device, args.profile, || {
        prepared
            .forward(x.clone(), 981.0, &mut NoControl)
            .into_data();
    });
    show(
        &format!("unet {s}x{s} batch {b}"),
        &unet_counts,
        unet_s,
        args.top,
    );
    if args.repeat > 0 {
        use std::io::Write;
        println!("repeat: {} U-Net forwards start", args.repeat);
        std::io::stdout().flush()?;
        // Time for a profiler to attach after seeing the line.
        std::thread::sleep(Duration::from_secs(2));
        let start = Instant::now();
        for _ in 0..args.repeat {
            prepared
                .forward(x.clone(), 981.0, &mut NoControl)
                .into_data();
        }
        println!("repeat: done in {:.3} s", start.elapsed().as_secs_f64());
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(2));
    }
    let z = Tensor::<4>::random([1, 4, s, s], normal, &device).cast(dt);
    let (vae_counts, vae_s) = counted(&device, args.profile, || {
        vae.decode(z.clone()).into_data();
    });
    show(
        &format!("vae decode {} px", 8 * s),
        &vae_counts,
        vae_s,
        args.top,
    );

    if let Some(path) = &args.json {
        let entry = |d: &Dispatches| {
            let times = d.times.as_ref().map(|t| {
                let ms: BTreeMap<_, _> = t
                    .by_kernel
                    .iter()
                    .map(|(k, v)| (k, v.as_secs_f64() * 1e3))
                    .collect();
                serde_json::json!({
                    "busy_ms": t.busy().as_secs_f64() * 1e3,
                    "span_ms": t.span.as_secs_f64() * 1e3,
                    "idle_share": t.idle_share(),
                    "device_clock": t.device_clock,
                    "measured": t.measured,
                    "unmeasured": t.unmeasured,
                    "by_kernel_ms": ms,
                })
            });
            serde_json::json!({
                "dispatches": d.total,
                "reserved_bytes": d.reserved_bytes,
                "in_use_bytes": d.in_use_bytes,
                "by_kernel": d.by_kernel,
                "times": times,
            })
        };
        let mut out = BTreeMap::new();
        out.insert("compiler", serde_json::json!(info.compiler));
        out.insert("model", serde_json::json!(args.model));
        out.insert("dtype", serde_json::json!(format!("{:?}", args.dtype)));
        out.insert(
            "unet",
            serde_json::json!({ "side": s, "batch": b, "counts": entry(&unet_counts) }),
        );
        out.insert(
            "vae_decode",
            serde_json::json!({ "px": 8 * s, "counts": entry(&vae_counts) }),
        );
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
