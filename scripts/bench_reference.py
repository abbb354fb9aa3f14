#!/usr/bin/env python3
"""The reference side of ditail's benchmarks: the same measurements as examples/bench.rs,
with diffusers / PyTorch on the same weights, written as the same JSON.

  clip                       text encoder on one 77-token prompt (SDXL: both text encoders as
                             StableDiffusionXLPipeline.encode_prompt runs them: penultimate
                             hidden states of both, concatenated, + text_encoder_2's pooled
                             projection)
  unet {32,64}x.. batch {1,3}  one U-Net forward (t = 981, random latents and context; SDXL also
                             added_cond_kwargs: random pooled text_embeds and time_ids
                             [8h, 8w, 0, 0, 8h, 8w]); sides and batches from --unet-sides /
                             --batches
  vae decode {size}px        VAE decoder
  ditail {size}px N+N steps  the reference implementation's forward schedule: VAE encode,
                             N batch-1 inversion forwards, N batch-3 sampling forwards
                             ([source, positive, negative], as the official Ditail code runs
                             every step), guidance, VAE decode.  The feature copies of the
                             injection itself are left out, which favours the reference
                             slightly.  SD1.5 only: skipped (with a note) for SDXL weights.

SDXL folders (unet config addition_embed_type "text_time") are detected; a component saved only
as the fp16 variant (*.fp16.safetensors) is loaded with variant="fp16" and upcast to --dtype.

Timing: median of --runs timed runs after one warm-up; peak memory: RSS high-water mark
(reset before each measurement through /proc/self/clear_refs) on CPU, torch's peak
allocated CUDA memory on GPU.

Usage (CPU, as scripts/bench.sh runs it):
  OMP_WAIT_POLICY=PASSIVE python scripts/bench_reference.py --weights fixtures-full/model \
      --device cpu --threads 2 --json reference.json
SDXL, the U-Net at one size only:
  ... --weights fixtures-full/sdxl/model --only unet,clip --unet-sides 64 --batches 1
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


def int_list(text: str) -> list[int]:
    vals = [int(v) for v in text.split(",") if v.strip()]
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
    return vals


def variant_of(folder: Path, stem: str) -> str | None:
    """None when folder has the plain weights file, "fp16" when it only has the fp16 variant."""
    if (folder / f"{stem}.safetensors").exists() or (folder / f"{stem}.safetensors.index.json").exists():
        return None
    if (folder / f"{stem}.fp16.safetensors").exists() or (folder / f"{stem}.safetensors.index.fp16.json").exists():
        return "fp16"
    return None


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
    ap.add_argument("--unet-sides", type=int_list, default=[32, 64], metavar="32,64",
                    help="latent sides of the U-Net rows (comma list)")
    ap.add_argument("--batches", type=int_list, default=[1, 3], metavar="1,3",
                    help="batch sizes of the U-Net rows (comma list)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.make_weights and not a.weights.exists():
        make_weights(a.weights)

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    dev, dt = a.device, (torch.float16 if a.dtype == "fp16" else torch.float32)
    wdir = a.weights
    t0 = time.perf_counter()
    # the U-Net first: while it loads, only its own state dict is in memory beside it
    unet = UNet2DConditionModel.from_pretrained(
        wdir / "unet", torch_dtype=dt, variant=variant_of(wdir / "unet", "diffusion_pytorch_model")).to(dev).eval()
    xl = unet.config.get("addition_embed_type") == "text_time"
    vae = AutoencoderKL.from_pretrained(
        wdir / "vae", torch_dtype=dt, variant=variant_of(wdir / "vae", "diffusion_pytorch_model")).to(dev).eval()
    text = CLIPTextModel.from_pretrained(
        wdir / "text_encoder", torch_dtype=dt, variant=variant_of(wdir / "text_encoder", "model")).to(dev).eval()
    text_2 = None
    if xl:
        from transformers import CLIPTextModelWithProjection

        text_2 = CLIPTextModelWithProjection.from_pretrained(
            wdir / "text_encoder_2", torch_dtype=dt, variant=variant_of(wdir / "text_encoder_2", "model"))
        text_2 = text_2.to(dev).eval()
    load_s = time.perf_counter() - t0
    wants = lambda w: not a.only or w in a.only.split(",")  # noqa: E731
    print(f"diffusers bench: {'SDXL' if xl else 'SD1.5'}, device {dev} dtype {a.dtype}, {a.threads} torch threads, "
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
    if wants("clip") and xl:
        # as examples/bench.rs: one prompt through both tokenizers (when the folder has them) and
        # both encoders, as StableDiffusionXLPipeline.encode_prompt (clip_skip None) runs them
        prompt = "a photo of a cat sitting on a sofa, best quality"
        ids_all = []
        for sub in ("tokenizer", "tokenizer_2"):
            if (wdir / sub / "vocab.json").exists():
                from transformers import CLIPTokenizer

                tok = CLIPTokenizer.from_pretrained(str(wdir / sub))
                ids_all.append(tok(prompt, padding="max_length", max_length=77, truncation=True,
                                   return_tensors="pt").input_ids.to(dev))
            else:
                ids_all.append(torch.randint(0, text.config.vocab_size, (1, 77), generator=g).to(dev))
        ids1, ids2 = ids_all

        def encode_xl():
            o1 = text(ids1, output_hidden_states=True)
            o2 = text_2(ids2, output_hidden_states=True)
            return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), o2.text_embeds

        report("clip", measure(encode_xl, a.runs, dev))
    elif wants("clip"):
        ids = torch.randint(0, 49408, (1, 77), generator=g).to(dev)
        report("clip", measure(lambda: text(ids), a.runs, dev))
    if wants("unet"):
        ctx = rand(max(a.batches), 77, unet.config.cross_attention_dim)
        if xl:  # width of the pooled text embedding: SDXL 2816 - 6 * 256 = 1280
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        for side in a.unet_sides:
            for batch in a.batches:
                x = rand(batch, 4, side, side)
                c = ctx[:batch]
                kw = {}
                if xl:
                    px = 8.0 * side  # a square image of 8x the latent side
                    kw["added_cond_kwargs"] = {
                        "text_embeds": rand(batch, pooled),
                        "time_ids": torch.tensor([[px, px, 0.0, 0.0, px, px]] * batch).to(dev, dt),
                    }
                report(f"unet {side}x{side} batch {batch}",
                       measure(lambda: unet(x, 981, encoder_hidden_states=c, **kw).sample, a.runs, dev))
    side = a.ditail_size
    if wants("vae"):
        z = rand(1, 4, side // 8, side // 8)
        report(f"vae decode {side}px", measure(lambda: vae.decode(z).sample, a.runs, dev))
    if wants("ditail") and xl:
        print(f"ditail {side}px: skipped (the reference Ditail schedule here is SD1.5's)", flush=True)
    elif wants("ditail"):
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
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"tool": "diffusers", "family": "sdxl" if xl else "sd15",
                                      "device": dev, "dtype": a.dtype,
                                      "threads": a.threads, "torch": torch.__version__,
                                      "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
