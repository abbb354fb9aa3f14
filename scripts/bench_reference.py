#!/usr/bin/env python3
"""The reference side of ditail's benchmarks: the same measurements as examples/bench.rs,
with diffusers / PyTorch on the same weights, written as the same JSON.

  clip                       text encoder on one 77-token prompt
  unet {32,64}x.. batch {1,3}  one U-Net forward (t = 981, random latents and context)
  vae decode {size}px        VAE decoder
  ditail {size}px N+N steps  the reference implementation's forward schedule: VAE encode,
                             N batch-1 inversion forwards, N batch-3 sampling forwards
                             ([source, positive, negative], as the official Ditail code runs
                             every step), guidance, VAE decode.  The feature copies of the
                             injection itself are left out, which favours the reference
                             slightly.

Timing: median of --runs timed runs after one warm-up; peak memory: RSS high-water mark
(reset before each measurement through /proc/self/clear_refs) on CPU, torch's peak
allocated CUDA memory on GPU.

Usage (CPU, as scripts/bench.sh runs it):
  OMP_WAIT_POLICY=PASSIVE python scripts/bench_reference.py --weights fixtures-full/model \
      --device cpu --threads 2 --json reference.json
On a GPU: --device cuda --dtype fp16.  --make-weights writes a random SD1.5 diffusers folder
at --weights first when it does not exist (no hub access needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak(device: str) -> dict:
    if device == "cuda":
        return {"peak_vram_bytes": torch.cuda.max_memory_allocated(), "peak_rss_bytes": peak_rss()}
    return {"peak_rss_bytes": peak_rss()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn, runs: int, device: str) -> dict:
    reset_peak(device)
    with torch.inference_mode():
        fn()
        sync(device)
        times = []
        for _ in range(max(1, runs)):
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "runs_s": times, **peak(device)}


def make_weights(path: Path) -> None:
    """A random SD1.5 diffusers folder (the real configs), seed 0."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, scaling_factor=0.18215,
    )
    text = CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", projection_dim=768))
    for m in (unet, vae, text):  # keep activations in range, like the fixture script
        for p in m.parameters():
            p.data.mul_(0.5)
    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vae")
    text.save_pretrained(path / "text_encoder")
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--make-weights", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--ditail-size", type=int, default=256)
    ap.add_argument("--ditail-steps", type=int, default=10)
    ap.add_argument("--ditail-runs", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.make_weights and not a.weights.exists():
        make_weights(a.weights)

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    dev, dt = a.device, (torch.float16 if a.dtype == "fp16" else torch.float32)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(a.weights / "unet", torch_dtype=dt).to(dev).eval()
    vae = AutoencoderKL.from_pretrained(a.weights / "vae", torch_dtype=dt).to(dev).eval()
    text = CLIPTextModel.from_pretrained(a.weights / "text_encoder", torch_dtype=dt).to(dev).eval()
    load_s = time.perf_counter() - t0
    wants = lambda w: not a.only or w in a.only.split(",")  # noqa: E731
    print(f"diffusers bench: device {dev} dtype {a.dtype}, {a.threads} torch threads, "
          f"torch {torch.__version__}; load {load_s:.1f} s", flush=True)
    results: dict = {}

    def report(name: str, r: dict) -> None:
        mem = r.get("peak_vram_bytes", r["peak_rss_bytes"]) / 2**30
        label = "peak VRAM" if "peak_vram_bytes" in r else "peak RSS"
        print(f"{name:<28} median {r['median_s']:>8.3f} s   runs {[round(t, 3) for t in r['runs_s']]}   "
              f"{label} {mem:.2f} GiB", flush=True)
        results[name] = r

    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g).to(dev, dt)  # noqa: E731
    if wants("clip"):
        ids = torch.randint(0, 49408, (1, 77), generator=g).to(dev)
        report("clip", measure(lambda: text(ids), a.runs, dev))
    if wants("unet"):
        ctx = rand(3, 77, 768)
        for side in (32, 64):
            for batch in (1, 3):
                x = rand(batch, 4, side, side)
                c = ctx[:batch]
                report(f"unet {side}x{side} batch {batch}",
                       measure(lambda: unet(x, 981, encoder_hidden_states=c).sample, a.runs, dev))
    side = a.ditail_size
    if wants("vae"):
        z = rand(1, 4, side // 8, side // 8)
        report(f"vae decode {side}px", measure(lambda: vae.decode(z).sample, a.runs, dev))
    if wants("ditail"):
        sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        sched.set_timesteps(a.ditail_steps)
        ts = sched.timesteps.tolist()
        ac = sched.alphas_cumprod.to(dev)
        img = rand(1, 3, side, side).clamp(-1, 1)
        ids = torch.randint(0, 49408, (3, 77), generator=g).to(dev)

        def run() -> None:
            emb = text(ids)[0]  # uncond, positive, negative
            cond = 2.0 * emb[1:2] - 0.5 * emb[2:3]
            z = vae.encode(img).latent_dist.mean * 0.18215
            prev = torch.tensor(float(sched.final_alpha_cumprod), device=dev)
            inverted = {}
            for t in reversed(ts):  # increasing noise
                eps = unet(z, t, encoder_hidden_states=cond).sample
                a_t = ac[t]
                x0 = (z - (1 - prev).sqrt() * eps) / prev.sqrt()
                z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
                prev = a_t
                inverted[t] = z
            x = z
            ratio = 1000 // a.ditail_steps
            for t in ts:
                batch = torch.cat([inverted[t], x, x])
                ctx = torch.cat([emb[0:1], emb[1:2], emb[2:3]])
                eps = unet(batch, t, encoder_hidden_states=ctx).sample
                e = eps[2] + 15.0 * (eps[1] - eps[2])
                a_t = ac[t]
                a_p = ac[t - ratio] if t - ratio >= 0 else torch.tensor(float(sched.final_alpha_cumprod), device=dev)
                x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
                x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * e
            vae.decode(x / 0.18215).sample

        report(f"ditail {side}px {a.ditail_steps}+{a.ditail_steps} steps", measure(run, a.ditail_runs, dev))
    if a.json:
        a.json.write_text(json.dumps({"tool": "diffusers", "device": dev, "dtype": a.dtype,
                                      "threads": a.threads, "torch": torch.__version__,
                                      "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
