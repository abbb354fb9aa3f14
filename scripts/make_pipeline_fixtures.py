#!/usr/bin/env python3
"""Golden fixtures for ditail's pipeline (tests/fixtures/pipeline/), computed on CPU in float32.

A plain reference implementation of the Ditail method exactly as the repository's METHOD.md
(the project's spec) describes it, written from that text with diffusers' building blocks
(U-Net, VAE, text encoder, DDIMScheduler only for timesteps / alphas_cumprod and as a
cross-check).  It writes, deterministically (fixed seeds, 2 threads):

  scheduler.json                  DDIMScheduler timesteps / alphas_cumprod for several configs
  content.png                     a 96x72 procedural RGB test image
  preprocess.safetensors          the image after resize (uint8) and after crop + scaling (f32)
  ditail_<scenario>.safetensors   every intermediate of one Ditail run (inversion with the
                                  source model, injected sampling with the target model)
  t2i.safetensors                 DDIM text-to-image with classifier-free guidance
  meta.json                       what each file and tensor is, every setting, the checks made
                                  and where METHOD.md had to be interpreted

Models: "tame" versions of tests/fixtures/models/tiny-a (source S, f32) and tiny-b (target
T, fp16 files upcast to f32): the U-Net's conv_out.weight and conv_out.bias are multiplied
by 0.1 in memory (not saved; the Rust tests scale the same way at load), so that the random
networks' noise predictions are small and the 10..100-step trajectories stay bounded.

Usage:
  python scripts/make_pipeline_fixtures.py          (needs make_fixtures.py's models first)
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# make_fixtures sets HF_HUB_OFFLINE, OMP_WAIT_POLICY=PASSIVE, blocks ftfy, 2 torch threads.
import make_fixtures as mf  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

torch.set_num_threads(2)

OUT = mf.FIXTURES / "pipeline"
MODELS = mf.FIXTURES / "models"
MAX_LEN = mf.MAX_LEN
TAME = 0.1  # conv_out.weight and conv_out.bias are multiplied by this (f32) after loading
WORK_SIZE = 64  # preprocessing: shorter side -> 64 (METHOD.md says 512; tiny here)
IMG_W, IMG_H = 96, 72
ATTN_SITES = mf.ATTN_SITES  # (up block, attention index) of the 8 self-attention sites
CONV_SITE = "up_blocks.1.resnets.1"
SITE_NAMES = [CONV_SITE] + [f"up_blocks.{i}.attentions.{j}.{qk}" for i, j in ATTN_SITES for qk in ("q", "k")]
SEED_T2I_NOISE = 4242

DEFAULTS = dict(alpha=2.0, beta=0.5, omega=15.0, conv_ratio=0.8, attn_ratio=0.5,
                pos="a photo of a cat", neg="worst quality, blurry, NSFW")

SCENARIOS = [
    dict(name="full", n_inv=10, n_spl=10, mask="full", inject=True),
    dict(name="left", n_inv=10, n_spl=10, mask="left", inject=True),
    dict(name="noinj", n_inv=10, n_spl=10, mask="full", inject=False),
    dict(name="prompts", n_inv=10, n_spl=10, mask="top", inject=True, inv_pos="a cat on a sofa", inv_neg="",
         pos="a watercolor painting of a cat", neg="blurry", omega=7.5, alpha=1.5, beta=0.25),
    dict(name="steps100_50", n_inv=100, n_spl=50, mask="full", inject=True),
    # A prompt as Civitai users write them (AUTOMATIC1111's reading, scripts/make_prompt_fixtures.py):
    # weights, BREAK, 2 chunks; a textual-inversion embedding in the negative (T's width, 48).
    dict(name="civitai", n_inv=10, n_spl=10, mask="full", inject=True, a1111=True,
         inv_pos="a (photo:1.2) of a [cat]", inv_neg="blurry, (lowres:1.3)",
         pos="(masterpiece:1.2), ((best quality)), a watercolor painting of a cat on a sofa, soft morning "
             "light, [blurry], (dramatic shadows:0.8), intricate details, warm colours, a cozy living room "
             "BREAK a small bird by the window, (sunset:1.1)",
         neg="(NegB:0.9), worst quality, [blurry]"),
]
EMBEDDINGS = OUT / "embeddings"

T2I = dict(prompt="a cat", negative="blurry", omega=7.5, steps=10, latent_hw=(8, 10), noise_seed=SEED_T2I_NOISE)

# Where METHOD.md left something open, or where this fixture deviates from its defaults.
INTERPRETATIONS = [
    "Working size: the shorter side is resized to 64 (METHOD.md: 512) so the tiny models get an 8x10 latent.",
    "alphas_cumprod: the DDIM arithmetic uses diffusers' float32 alphas_cumprod (betas from torch.linspace in "
    "f32, cumprod in f32) and float32 scalar math (sqrt(a), sqrt(1-a) computed in f32); scheduler.json also has "
    "the float64 values for reference. The difference is ~1e-7 relative, far below the tolerance.",
    "DDIM update order: x0 = (x - sqrt(1-a_t)*eps) / sqrt(a_t); x' = sqrt(a_prev)*x0 + sqrt(1-a_prev)*eps, "
    "elementwise in f32 (the same for inversion, with a_t / a_prev as METHOD.md stage 1 step 4 defines them).",
    "Injection windows: sampling step i (0-based) injects conv features iff i < floor(conv_ratio*N_spl) and "
    "attention features iff i < floor(attn_ratio*N_spl) (floor in float64: 0.8*10 -> 8, 0.5*10 -> 5, "
    "0.8*50 -> 40, 0.5*50 -> 25).",
    "Masks: per layer at that layer's own h x w (conv site and attention tokens n = row*w + col); "
    "full = 1, left = 1 on columns [0, w div 2), top = 1 on rows [0, h div 2). At the 8x10 latent the "
    "injection layers are 2x3 (up_blocks.1), 4x5 (up_blocks.2) and 8x10 (up_blocks.3) because the U-Net "
    "resizes upsampled features to the skip connection's size (diffusers: nearest, to the skip's size). "
    "The mix m*h0 + (1-m)*h is computed literally in f32; with m in {0, 1} it is an exact selection.",
    "The attention mix is applied to the outputs of attn1.to_q / attn1.to_k (before the head split); "
    "the attention itself is diffusers' own (scaled_dot_product_attention, scale 1/sqrt(head_dim)).",
    "The conv mix is applied to the output of up_blocks[1].resnets[1].conv2, which in diffusers' "
    "ResnetBlock2D is directly followed by the shortcut add (output_scale_factor 1).",
    "U-Net timestep input: the scheduler's int64 timestep (a 0-d tensor, broadcast over the batch).",
    "Texts: each model tokenizes with its own tokenizer/ (the tiny 1000-entry CLIP BPE) and encodes with its "
    "own text encoder; E_M(p) = last_hidden_state (after the final layer norm). The inversion prompts use S, "
    "the sampling prompts and the empty prompt use T (METHOD.md stage 2 step 1).",
    "no-injection ablation: the batch of three is still run (the source branch just injects nothing); its "
    "step.0.injected.* tensors are therefore the unmodified site outputs.",
    "Only the masks full, left and top are used here. METHOD.md's 'and so on' for right / bottom is read as "
    "the complements (right = 1 on columns [w div 2, w), bottom on rows [h div 2, h)), which differs from a "
    "mirrored left/top when w or h is odd; not exercised by these fixtures. Note that at odd widths 'left' "
    "covers less than half (2x3 layer: column 0 only; 4x5: columns 0-1).",
    "Step-count check: every sampling timestep must be an inversion timestep; the script asserts it for each "
    "scenario (ditail.step_compatibility_examples lists a few pairs, e.g. 300/100 -> false).",
    "Decoding: image = clamp(T.vae.decode(final / 0.18215).sample / 2 + 0.5, 0, 1) in f32 (not quantised to 8 bits).",
    "Preprocessing: z0 = 0.18215 * S.vae.encode(image).latent_dist.mean (the scaling factor from S's VAE config).",
]


def log(msg: str) -> None:
    mf.log(msg)


# ---------------------------------------------------------------------------------------
# models


def load_tame(name: str, fp16: bool) -> dict:
    from transformers import CLIPTokenizer

    mdir = MODELS / name
    unet, vae, text = mf.load_models(mdir, fp16)
    with torch.no_grad():
        unet.conv_out.weight.mul_(TAME)
        unet.conv_out.bias.mul_(TAME)
    tok = CLIPTokenizer.from_pretrained(str(mdir / "tokenizer"))
    assert len(tok) == text.config.vocab_size
    return dict(name=name, dir=mdir, unet=unet, vae=vae, text=text, tok=tok)


def token_ids(model: dict, prompt: str) -> torch.Tensor:
    ids = model["tok"](prompt, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
    assert len(ids) == MAX_LEN and max(ids) < model["text"].config.vocab_size
    return torch.tensor([ids], dtype=torch.int64)


@torch.no_grad()
def embed(model: dict, prompt: str) -> torch.Tensor:
    return model["text"](input_ids=token_ids(model, prompt)).last_hidden_state.contiguous()


def make_embeddings() -> dict:
    """embeddings/NegB.safetensors: an A1111 embedding (emb_params [3, 48]) for T."""
    from safetensors.torch import save_file as save_st

    EMBEDDINGS.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(77)
    vectors = (torch.randn(3, 48, generator=g) * 0.3).contiguous()
    save_st({"emb_params": vectors}, str(EMBEDDINGS / "NegB.safetensors"))
    return {"NegB": [vectors]}


@torch.no_grad()
def embed_a1111(model: dict, prompt: str, db: dict) -> torch.Tensor:
    """AUTOMATIC1111's encoding (scripts/make_prompt_fixtures.py): chunks, emphasis, embeddings
    whose width fits the model's encoder."""
    import make_prompt_fixtures as mpf

    width = model["text"].config.hidden_size
    fits = {n: v for n, v in db.items() if v[0].shape[1] == width}
    zs = []
    for ids, ws, fixes in mpf.chunks(mpf.parse(prompt), model["tok"], fits):
        z = mpf.run_fixed(model["text"], ids, fixes, fits, 0).last_hidden_state
        zs.append(mpf.emphasis(z, torch.tensor(ws)))
    return torch.cat(zs, dim=1).contiguous()


def pad_chunks(embs: list, empty: torch.Tensor) -> list:
    """Prompts of one batch (or one sum) to one length: empty-prompt chunks appended."""
    n = max(e.shape[1] for e in embs)
    return [torch.cat([e] + [empty] * ((n - e.shape[1]) // MAX_LEN), dim=1) for e in embs]


# ---------------------------------------------------------------------------------------
# scheduler


def ddim(config: dict | None = None, **overrides):
    from diffusers import DDIMScheduler

    if config is None:
        return DDIMScheduler(**overrides)
    return DDIMScheduler.from_config(config, **overrides)


def alphas_cumprod_f64(cfg: dict) -> np.ndarray:
    """alphas_cumprod in float64, from the formulas of diffusers' DDIMScheduler.__init__."""
    n = cfg["num_train_timesteps"]
    kind = cfg["beta_schedule"]
    if kind == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(math.sqrt(cfg["beta_start"]), math.sqrt(cfg["beta_end"]), n, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1.0 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                         dtype=np.float64)
    else:
        raise ValueError(kind)
    return np.cumprod(1.0 - betas)


SCHED_CASES = [
    ("sd15_leading", {}),
    ("trailing", {"timestep_spacing": "trailing"}),
    ("linspace", {"timestep_spacing": "linspace"}),
    ("linear_betas", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
    ("squaredcos_cap_v2", {"beta_schedule": "squaredcos_cap_v2"}),
    ("set_alpha_to_one", {"set_alpha_to_one": True}),
]
SCHED_STEPS = [10, 50, 100, 7]
SD15_DDIM = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
                 prediction_type="epsilon")


def scheduler_fixture() -> tuple[dict, dict]:
    cases = []
    for name, over in SCHED_CASES:
        s = ddim(**dict(SD15_DDIM, **over))
        # (diffusers' bookkeeping keys dropped: _use_default_values is an unordered set)
        cfg = {k: v for k, v in sorted(dict(s.config).items()) if k not in ("_use_default_values", "_diffusers_version")}
        cfg["_class_name"] = type(s).__name__
        ac32 = s.alphas_cumprod
        assert ac32.dtype == torch.float32 and ac32.shape == (1000,)
        ac64 = alphas_cumprod_f64(cfg)
        rel = float(np.max(np.abs(ac64 - ac32.double().numpy()) / ac64))
        assert rel < 2e-5, (name, rel)
        final32 = float(s.final_alpha_cumprod)
        final64 = 1.0 if cfg["set_alpha_to_one"] else float(ac64[0])
        ts = {}
        for n in SCHED_STEPS:
            s.set_timesteps(n)
            t = [int(x) for x in s.timesteps]
            assert s.timesteps.dtype == torch.int64 and len(t) == n
            ts[str(n)] = t
            if cfg["timestep_spacing"] == "leading":
                ratio = 1000 // n
                assert t == [(n - 1 - i) * ratio + cfg["steps_offset"] for i in range(n)], (name, n)
        cases.append({
            "name": name,
            "overrides": over,
            "config": cfg,
            "timesteps": ts,
            "final_alpha_cumprod": final64,
            "final_alpha_cumprod_f32": final32,
            "max_rel_diff_f64_vs_f32": rel,
            "alphas_cumprod": [float(x) for x in ac64],
            "alphas_cumprod_f32": [float(x) for x in ac32.numpy()],
        })
    doc = {
        "about": "diffusers DDIMScheduler(**config): config is the scheduler's full config dict; timesteps[N] = "
                 "[int(t) for t in set_timesteps(N) timesteps]; alphas_cumprod = cumprod(1 - betas) computed by this "
                 "script in float64 with numpy from diffusers' formulas (scaled_linear: linspace(sqrt(beta_start), "
                 "sqrt(beta_end), 1000)**2; linear: linspace(beta_start, beta_end, 1000); squaredcos_cap_v2: "
                 "beta_i = min(1 - f((i+1)/1000)/f(i/1000), 0.999), f(u) = cos((u+0.008)/1.008*pi/2)**2); "
                 "alphas_cumprod_f32 = diffusers' own float32 scheduler.alphas_cumprod (float32 values written as "
                 "exact doubles); final_alpha_cumprod = 1.0 if set_alpha_to_one else alphas_cumprod[0].",
        "steps": SCHED_STEPS,
        "cases": cases,
    }
    path = OUT / "scheduler.json"
    path.write_text(_dump_compact_json(doc), encoding="utf-8")
    summary = {c["name"]: {n: c["timesteps"][str(n)][:3] + ["..."] + c["timesteps"][str(n)][-2:] for n in (10, 7)}
               for c in cases}
    return doc, summary


def _dump_compact_json(doc: dict) -> str:
    """Indented JSON, but every list on one line (1000-element lists stay compact)."""
    def enc(v, ind):
        pad = "  " * ind
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = [f'{pad}  {json.dumps(k)}: {enc(x, ind + 1)}' for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, list) and any(isinstance(x, dict) for x in v):
            return "[\n" + ",\n".join(f"{pad}  " + enc(x, ind + 1) for x in v) + "\n" + pad + "]"
        return json.dumps(v)

    return enc(doc, 0) + "\n"


# ---------------------------------------------------------------------------------------
# content image and preprocessing


def make_content_image() -> Image.Image:
    """96x72 RGB: smooth gradients, filled shapes and 1-3 pixel stripes (aliasing-prone)."""
    w, h = IMG_W, IMG_H
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * xx / (w - 1)
    g = 255.0 * yy / (h - 1)
    b = 127.5 + 127.5 * np.sin(2 * np.pi * (xx + 2 * yy) / 40.0)
    arr = np.stack([r, g, b], axis=-1)
    # fine stripes: vertical 1-px in the lower-left, diagonal 2-px in the upper-right, checker 1-px
    stripes_v = (xx.astype(int) % 2 == 0) & (yy >= 48) & (xx < 40)
    arr[stripes_v] = [250, 250, 250]
    stripes_d = (((xx + yy).astype(int) // 2) % 2 == 0) & (yy < 24) & (xx >= 60)
    arr[stripes_d] = [10, 10, 40]
    checker = ((xx.astype(int) + yy.astype(int)) % 2 == 0) & (yy >= 52) & (xx >= 70) & (xx < 90)
    arr[checker] = [255, 0, 0]
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((30, 10, 58, 38), fill=(220, 40, 40))
    d.rectangle((8, 8, 24, 40), fill=(30, 60, 200))
    d.polygon([(62, 66), (92, 30), (95, 68)], fill=(20, 180, 60))
    d.line((0, 45, 95, 45), fill=(255, 255, 0), width=1)
    return img


def preprocess(img: Image.Image, size: int = WORK_SIZE) -> tuple[np.ndarray, torch.Tensor, dict]:
    w, h = img.size
    if w <= h:
        nw, nh = size, int(round(h * size / w))
    else:
        nw, nh = int(round(w * size / h)), size
    resized = img.resize((nw, nh), Image.BILINEAR)
    r = np.asarray(resized, dtype=np.uint8).copy()  # [nh, nw, 3]
    cw, ch = nw - nw % 8, nh - nh % 8
    ox, oy = (nw - cw) // 2, (nh - ch) // 2
    crop = r[oy:oy + ch, ox:ox + cw]
    x = torch.from_numpy(crop.copy()).to(torch.float32).permute(2, 0, 1).unsqueeze(0).contiguous()
    x = x / 127.5 - 1.0
    info = dict(resized_wh=[nw, nh], crop_wh=[cw, ch], crop_offset_xy=[ox, oy])
    return r, x, info


PIL_PRECISION_BITS = 22  # Pillow's fixed-point coefficient precision for 8-bit images


def bilinear_resize_emulated(u8: np.ndarray, out_w: int, out_h: int) -> tuple[np.ndarray, int]:
    """A re-implementation of Pillow's antialiased BILINEAR resize of uint8 RGB (for the check and
    the description in meta.json): separable triangle filter, horizontal pass first, 22-bit
    fixed-point weights, rounding and clamping to uint8 after each pass.  Also returns how far a
    float implementation without the intermediate rounding is off (max |diff| in uint8 steps)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = max(scale, 1.0)  # bilinear support 1, widened by the scale when downscaling
        inv = 1.0 / max(scale, 1.0)
        W = np.zeros((n_out, n_in), dtype=np.float64)
        for x in range(n_out):
            center = (x + 0.5) * scale
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            w = np.array([max(0.0, 1.0 - abs((i + lo - center + 0.5) * inv)) for i in range(hi - lo)])
            W[x, lo:hi] = w / w.sum()
        return W

    def fixed(W: np.ndarray) -> np.ndarray:
        k = W * (1 << PIL_PRECISION_BITS)
        return np.where(W >= 0, np.floor(k + 0.5), np.ceil(k - 0.5)).astype(np.int64)

    h_in, w_in, _ = u8.shape
    Wx, Wy = weights(w_in, out_w), weights(h_in, out_h)
    half = 1 << (PIL_PRECISION_BITS - 1)
    a = u8.astype(np.int64)
    tmp = np.clip((np.einsum("xj,ijc->ixc", fixed(Wx), a) + half) >> PIL_PRECISION_BITS, 0, 255)
    res = np.clip((np.einsum("yi,ixc->yxc", fixed(Wy), tmp) + half) >> PIL_PRECISION_BITS, 0, 255)
    flt = np.einsum("yi,ixc->yxc", Wy, np.einsum("xj,ijc->ixc", Wx, u8.astype(np.float64)))
    return res.astype(np.uint8), int(np.abs(np.clip(np.rint(flt), 0, 255) - res).max())


# ---------------------------------------------------------------------------------------
# feature injection


def layer_mask(kind: str, h: int, w: int) -> torch.Tensor:
    m = torch.zeros((h, w), dtype=torch.float32)
    if kind == "full":
        m[:] = 1.0
    elif kind == "left":
        m[:, : w // 2] = 1.0
    elif kind == "top":
        m[: h // 2, :] = 1.0
    else:
        raise ValueError(f"mask {kind!r} not used by these fixtures")
    return m


def mix(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Rows 1 and 2 of the batch become m*t[0] + (1-m)*t[i]; m broadcasts against t[0]."""
    assert t.shape[0] == 3
    out = t.clone()
    for i in (1, 2):
        out[i] = m * t[0] + (1.0 - m) * t[i]
    return out


class Injector:
    """Forward hooks on the 9 Ditail sites of a UNet2DConditionModel.

    conv site: output of up_blocks[1].resnets[1].conv2 ([3, C, h, w]).
    attention sites: outputs of transformer_blocks[0].attn1.to_q / .to_k ([3, h*w, inner]);
    the layer's h x w comes from a pre-hook on the enclosing Transformer2DModel.
    """

    def __init__(self, unet):
        self.conv_on = False
        self.attn_on = False
        self.mask = "full"
        self.capture: dict[str, torch.Tensor] | None = None
        self.calls = 0
        self.handles = []
        self.hw: dict[str, tuple[int, int]] = {}
        res = unet.up_blocks[1].resnets[1]
        self.handles.append(res.conv2.register_forward_hook(self._conv_hook()))
        for i, j in ATTN_SITES:
            site = f"up_blocks.{i}.attentions.{j}"
            tr = unet.up_blocks[i].attentions[j]
            attn1 = tr.transformer_blocks[0].attn1
            assert not attn1.is_cross_attention
            self.handles.append(tr.register_forward_pre_hook(self._hw_hook(site), with_kwargs=True))
            self.handles.append(attn1.to_q.register_forward_hook(self._attn_hook(site, "q")))
            self.handles.append(attn1.to_k.register_forward_hook(self._attn_hook(site, "k")))

    def remove(self):
        for h in self.handles:
            h.remove()

    def _hw_hook(self, site):
        def hook(_m, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            assert x.dim() == 4
            self.hw[site] = (int(x.shape[2]), int(x.shape[3]))

        return hook

    def _conv_hook(self):
        def hook(_m, _inp, out):
            self.calls += 1
            if self.conv_on:
                assert out.dim() == 4
                m = layer_mask(self.mask, out.shape[2], out.shape[3])
                out = mix(out, m)
            if self.capture is not None:
                self.capture[CONV_SITE] = out.detach().clone()
            return out

        return hook

    def _attn_hook(self, site, qk):
        def hook(_m, _inp, out):
            self.calls += 1
            h, w = self.hw[site]
            assert out.dim() == 3 and out.shape[1] == h * w, (site, out.shape, h, w)
            if self.attn_on:
                m = layer_mask(self.mask, h, w).reshape(h * w, 1)  # token n = row*w + col
                out = mix(out, m)
            if self.capture is not None:
                self.capture[f"{site}.{qk}"] = out.detach().clone()
            return out

        return hook


class MixingSelfAttention:
    """Independent second implementation of the attention injection, used only as a check.

    A diffusers attention processor for attn1 that projects q/k/v itself, applies the masked
    mix to q and k, and computes softmax(q k^T / sqrt(d)) v per head explicitly.
    """

    def __init__(self, hw: tuple[int, int], mask: str | None):
        self.hw, self.mask = hw, mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert encoder_hidden_states is None and attention_mask is None and hidden_states.dim() == 3
        assert attn.group_norm is None and attn.spatial_norm is None and not attn.residual_connection
        assert attn.rescale_output_factor == 1.0 and attn.norm_q is None and attn.norm_k is None
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.mask is not None:
            h, w = self.hw
            m = layer_mask(self.mask, h, w).reshape(h * w, 1)
            q, k = mix(q, m), mix(k, m)
        heads = attn.heads
        d = q.shape[-1] // heads

        def split(x):
            return x.reshape(b, n, heads, d).permute(0, 2, 1, 3)

        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
        o = (scores.softmax(dim=-1) @ split(v)).permute(0, 2, 1, 3).reshape(b, n, heads * d)
        return attn.to_out[1](attn.to_out[0](o))


@torch.no_grad()
def check_with_processors(unet, latents, t, cond, mask, conv_on, attn_on, hw) -> float:
    """noise_pred with MixingSelfAttention on the 8 sites and a plain conv2 hook."""
    originals = []
    for i, j in ATTN_SITES:
        attn1 = unet.up_blocks[i].attentions[j].transformer_blocks[0].attn1
        originals.append((attn1, attn1.processor))
        attn1.set_processor(MixingSelfAttention(tuple(hw[f"up_blocks.{i}.attentions.{j}"]), mask if attn_on else None))

    def conv_hook(_m, _i, out):
        return mix(out, layer_mask(mask, out.shape[2], out.shape[3])) if conv_on else out

    h = unet.up_blocks[1].resnets[1].conv2.register_forward_hook(conv_hook)
    try:
        return unet(latents, t, encoder_hidden_states=cond).sample
    finally:
        h.remove()
        for attn1, proc in originals:
            attn1.set_processor(proc)


def check_injected(capture: dict, mask: str, conv_on: bool, attn_on: bool, hw: dict) -> None:
    """Rows 1, 2 of each captured site equal row 0 exactly where m = 1, and differ where m = 0."""
    for name, x in capture.items():
        on = conv_on if name == CONV_SITE else attn_on
        if name == CONV_SITE:
            m = layer_mask(mask, x.shape[2], x.shape[3]).bool().expand(x.shape[1], -1, -1)
        else:
            h, w = hw[name.rsplit(".", 1)[0]]
            m = layer_mask(mask, h, w).bool().reshape(h * w, 1).expand(-1, x.shape[2])
        for i in (1, 2):
            if on:
                assert torch.equal(x[i][m], x[0][m]), name
                if (~m).any():
                    assert not torch.equal(x[i][~m], x[0][~m]), name
            else:
                assert not torch.equal(x[i], x[0]), name


# ---------------------------------------------------------------------------------------
# DDIM arithmetic (METHOD.md, f32)


def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
    """x0 = (x - sqrt(1-a_from) eps) / sqrt(a_from); return sqrt(a_to) x0 + sqrt(1-a_to) eps."""
    assert a_from.dtype == a_to.dtype == torch.float32
    x0 = (x - torch.sqrt(1.0 - a_from) * eps) / torch.sqrt(a_from)
    return torch.sqrt(a_to) * x0 + torch.sqrt(1.0 - a_to) * eps


def leading_timesteps(sched, n: int) -> list[int]:
    sched.set_timesteps(n)
    ts = [int(t) for t in sched.timesteps]
    ratio = 1000 // n
    assert ts == [(n - 1 - i) * ratio + 1 for i in range(n)], ts  # METHOD.md's formula
    return ts


def compatible(n_inv: int, n_spl: int) -> bool:
    """Every sampling timestep must be an inversion timestep (METHOD.md stage 2)."""
    inv = {(n_inv - 1 - i) * (1000 // n_inv) + 1 for i in range(n_inv)}
    return all((n_spl - 1 - i) * (1000 // n_spl) + 1 in inv for i in range(n_spl))


@torch.no_grad()
def run_ditail(sc: dict, S: dict, T: dict, image: torch.Tensor, checks: dict) -> tuple[dict, dict]:
    p = dict(DEFAULTS, **sc)
    inv_pos, inv_neg = sc.get("inv_pos", p["pos"]), sc.get("inv_neg", p["neg"])
    n_inv, n_spl = p["n_inv"], p["n_spl"]
    assert compatible(n_inv, n_spl), (n_inv, n_spl)
    sched = ddim(mf.SCHEDULER_CONFIG)
    assert sched.config.steps_offset == 1 and not sched.config.set_alpha_to_one
    ac = sched.alphas_cumprod  # float32 [1000]
    final_ac = sched.final_alpha_cumprod.to(torch.float32)
    inv_ts = leading_timesteps(sched, n_inv)[::-1]  # increasing 1, ...
    spl_ts = leading_timesteps(sched, n_spl)  # decreasing
    assert set(spl_ts) <= set(inv_ts)
    ratio_spl = 1000 // n_spl
    n_conv = math.floor(p["conv_ratio"] * n_spl) if p["inject"] else 0
    n_attn = math.floor(p["attn_ratio"] * n_spl) if p["inject"] else 0
    out: dict[str, torch.Tensor] = {"image": image}

    # stage 1: encode and invert with S
    z0 = S["vae"].config.scaling_factor * S["vae"].encode(image).latent_dist.mean
    out["z0"] = z0
    if p.get("a1111"):
        db = make_embeddings()
        enc = lambda m, text: embed_a1111(m, text, db)  # noqa: E731
        pos_s, neg_s = pad_chunks([enc(S, inv_pos), enc(S, inv_neg)], enc(S, ""))
        cond_inv = p["alpha"] * pos_s - p["beta"] * neg_s
    else:
        enc = embed
        cond_inv = p["alpha"] * embed(S, inv_pos) - p["beta"] * embed(S, inv_neg)
    out["cond_inv"] = cond_inv
    z = z0
    Z = {}
    prev_a = final_ac
    inv_diff = 0.0
    from diffusers import DDIMInverseScheduler

    isched = DDIMInverseScheduler.from_config(mf.SCHEDULER_CONFIG)
    isched.set_timesteps(n_inv)
    assert [int(t) for t in isched.timesteps] == inv_ts, isched.timesteps
    for t in inv_ts:
        eps = S["unet"](z, torch.tensor(t, dtype=torch.int64), encoder_hidden_states=cond_inv).sample
        z_new = ddim_move(z, eps, prev_a, ac[t])
        ref = isched.step(eps, t, z).prev_sample  # cross-check with diffusers' DDIMInverseScheduler
        inv_diff = max(inv_diff, float((ref - z_new).abs().max()))
        z = z_new
        prev_a = ac[t]
        Z[t] = z
        out[f"inverted.{t}"] = z
        out[f"inv_eps.{t}"] = eps

    # stage 2: sample with T, injecting the source branch's features
    e_unc, e_pos, e_neg = pad_chunks([enc(T, ""), enc(T, p["pos"]), enc(T, p["neg"])], enc(T, ""))
    out.update(emb_uncond=e_unc, emb_pos=e_pos, emb_neg=e_neg)
    cond = torch.cat([e_unc, e_pos, e_neg])
    unet = T["unet"]

    # the hooks, switched off, must not change anything
    x_probe = Z[spl_ts[0]]
    probe_in = torch.cat([Z[spl_ts[0]], x_probe, x_probe])
    t_probe = torch.tensor(spl_ts[0], dtype=torch.int64)
    plain = unet(probe_in, t_probe, encoder_hidden_states=cond).sample
    inj = Injector(unet)
    try:
        hooked = unet(probe_in, t_probe, encoder_hidden_states=cond).sample
        assert torch.equal(plain, hooked) and inj.calls == 17, inj.calls
        inj.mask = p["mask"]
        dsched = ddim(mf.SCHEDULER_CONFIG)
        dsched.set_timesteps(n_spl)
        step_diff = 0.0
        x = Z[spl_ts[0]]
        growth = []
        for i, t in enumerate(spl_ts):
            inj.conv_on = i < n_conv
            inj.attn_on = i < n_attn
            inj.capture = {} if i == 0 else None
            inj.calls = 0
            tt = torch.tensor(t, dtype=torch.int64)
            noise_pred = unet(torch.cat([Z[t], x, x]), tt, encoder_hidden_states=cond).sample
            assert inj.calls == 17
            eps = noise_pred[2:3] + p["omega"] * (noise_pred[1:2] - noise_pred[2:3])
            prev = t - ratio_spl
            a_prev = ac[prev] if prev >= 0 else final_ac
            x_new = ddim_move(x, eps, ac[t], a_prev)
            ref = dsched.step(eps, tt, x, eta=0.0).prev_sample  # cross-check with diffusers
            step_diff = max(step_diff, float((ref - x_new).abs().max()))
            out[f"step.{i}.t"] = torch.tensor([t], dtype=torch.int64)
            out[f"step.{i}.x_in"] = x
            out[f"step.{i}.noise_pred"] = noise_pred
            out[f"step.{i}.eps"] = eps
            out[f"step.{i}.x_out"] = x_new
            if i == 0:
                assert set(inj.capture) == set(SITE_NAMES), sorted(inj.capture)
                for k in SITE_NAMES:
                    out[f"step.0.injected.{k}"] = inj.capture[k]
                hw0 = dict(inj.hw)
                check_injected(inj.capture, p["mask"], inj.conv_on, inj.attn_on, hw0)
                inj.remove()
                alt = check_with_processors(unet, torch.cat([Z[t], x, x]), tt, cond, p["mask"], inj.conv_on,
                                            inj.attn_on, hw0)
                inj = Injector(unet)
                inj.mask = p["mask"]
                proc_diff = float((alt - noise_pred).abs().max())
                assert proc_diff <= 1e-5 * float(noise_pred.abs().max()), proc_diff
                if p["inject"]:  # injection must change the target branches
                    plain0 = check_with_processors(unet, torch.cat([Z[t], x, x]), tt, cond, "full", False, False,
                                                   hw0)
                    # (plain0 uses the explicit attention, noise_pred diffusers' SDPA: equal up to rounding)
                    tol = 1e-5 * float(noise_pred.abs().max())
                    assert float((plain0[1:] - noise_pred[1:]).abs().max()) > 100 * tol
                    assert float((plain0[0] - noise_pred[0]).abs().max()) <= tol
            growth.append(float(x_new.abs().max()))
            x = x_new
        inj.capture = None
    finally:
        inj.remove()
    out["final"] = x
    dec = T["vae"].decode(x / T["vae"].config.scaling_factor).sample
    out["decoded"] = torch.clamp(dec / 2 + 0.5, 0.0, 1.0)
    checks[sc["name"]] = {"max_abs_diff_vs_DDIMScheduler_step": step_diff,
                          "step0_max_abs_diff_hooks_vs_explicit_attention_processor": proc_diff,
                          "max_abs_diff_inversion_vs_DDIMInverseScheduler_step": inv_diff}
    assert step_diff <= 1e-6, step_diff
    assert inv_diff <= 1e-6, inv_diff
    settings = {
        "n_inv": n_inv, "n_spl": n_spl, "mask": p["mask"], "inject": p["inject"],
        "alpha": p["alpha"], "beta": p["beta"], "omega": p["omega"],
        "conv_ratio": p["conv_ratio"], "attn_ratio": p["attn_ratio"],
        "conv_steps": n_conv, "attn_steps": n_attn,
        "inversion_prompts": {"pos": inv_pos, "neg": inv_neg},
        "sampling_prompts": {"pos": p["pos"], "neg": p["neg"]},
        "inversion_timesteps": inv_ts, "sampling_timesteps": spl_ts,
        "layer_hw": {k: list(v) for k, v in sorted(hw0.items())},
        "token_ids": {"S_inv_pos": token_ids(S, inv_pos)[0].tolist(), "S_inv_neg": token_ids(S, inv_neg)[0].tolist(),
                      "T_pos": token_ids(T, p["pos"])[0].tolist(), "T_neg": token_ids(T, p["neg"])[0].tolist(),
                      "T_empty": token_ids(T, "")[0].tolist()},
    }
    stats = {"max_abs_final": float(x.abs().max()), "max_abs_x_out_per_step": [round(g, 5) for g in growth],
             "max_abs_z0": float(z0.abs().max()), "max_abs_Z_start": float(Z[spl_ts[0]].abs().max()),
             "max_abs_decoded_minus_half": float((out["decoded"] - 0.5).abs().max())}
    return out, dict(settings=settings, stats=stats)


@torch.no_grad()
def run_t2i(T: dict, checks: dict) -> tuple[dict, dict]:
    c = T2I
    h, w = c["latent_hw"]
    noise = torch.randn((1, 4, h, w), generator=torch.Generator().manual_seed(c["noise_seed"]), dtype=torch.float32)
    sched = ddim(mf.SCHEDULER_CONFIG)
    ac, final_ac = sched.alphas_cumprod, sched.final_alpha_cumprod.to(torch.float32)
    ts = leading_timesteps(sched, c["steps"])
    ratio = 1000 // c["steps"]
    e_pos, e_neg = embed(T, c["prompt"]), embed(T, c["negative"])
    cond = torch.cat([e_neg, e_pos])
    out = {"noise": noise, "emb_pos": e_pos, "emb_neg": e_neg}
    x = noise * sched.init_noise_sigma
    for i, t in enumerate(ts):
        tt = torch.tensor(t, dtype=torch.int64)
        npred = T["unet"](torch.cat([x, x]), tt, encoder_hidden_states=cond).sample
        eps = npred[0:1] + c["omega"] * (npred[1:2] - npred[0:1])
        prev = t - ratio
        x_new = ddim_move(x, eps, ac[t], ac[prev] if prev >= 0 else final_ac)
        out[f"step.{i}.t"] = torch.tensor([t], dtype=torch.int64)
        out[f"step.{i}.x_in"] = x
        out[f"step.{i}.eps"] = eps
        out[f"step.{i}.x_out"] = x_new
        x = x_new
    out["final"] = x

    # cross-check with diffusers' StableDiffusionPipeline (DDIM, same noise, same tame weights)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=T["vae"], text_encoder=T["text"], tokenizer=T["tok"], unet=T["unet"],
                                   scheduler=ddim(mf.SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    lat = pipe(c["prompt"], negative_prompt=c["negative"], height=8 * h, width=8 * w,
               num_inference_steps=c["steps"], guidance_scale=c["omega"], eta=0.0, latents=noise.clone(),
               output_type="latent").images
    d = float((lat - x).abs().max())
    checks["t2i"] = {"max_abs_diff_final_vs_StableDiffusionPipeline": d}
    assert d <= 1e-5 * max(1.0, float(x.abs().max())), d
    settings = dict(c, latent_hw=[h, w], timesteps=ts,
                    token_ids={"pos": token_ids(T, c["prompt"])[0].tolist(),
                               "neg": token_ids(T, c["negative"])[0].tolist()},
                    batch="[emb_neg, emb_pos]; eps = eps_neg + omega * (eps_pos - eps_neg)",
                    noise_call=f"torch.randn((1, 4, {h}, {w}), generator=torch.Generator().manual_seed("
                               f"{c['noise_seed']}), dtype=torch.float32); x_start = noise (init_noise_sigma 1)")
    growth = [round(float(out[f"step.{i}.x_out"].abs().max()), 5) for i in range(len(ts))]
    return out, dict(settings=settings, stats={"max_abs_final": float(x.abs().max()),
                                               "max_abs_noise": float(noise.abs().max()),
                                               "max_abs_x_out_per_step": growth})


# ---------------------------------------------------------------------------------------


def save(name: str, tensors: dict) -> dict:
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64, torch.uint8), (k, v.dtype)
    # clones: several names hold the same tensor (x_out of step i = x_in of step i+1, ...)
    info = mf.write_golden(OUT / name, {k: v.clone() for k, v in tensors.items()}, {})
    # one entry per name pattern (step.{i}.x_in, inverted.{t}, ...), with shape, dtype and count
    pats: dict[str, dict] = {}
    for k, v in info.items():
        parts = k.split(".")
        if parts[0] == "step" and parts[1] != "0" or parts[0] == "step" and parts[2] != "injected":
            parts[1] = "{i}"
        if parts[0] in ("inverted", "inv_eps"):
            parts[1] = "{t}"
        pat = ".".join(parts)
        e = pats.setdefault(pat, dict(v, count=0))
        assert e["shape"] == v["shape"] and e["dtype"] == v["dtype"], (k, e, v)
        e["count"] += 1
    return {"size": (OUT / name).stat().st_size, "n_tensors": len(info), "tensors": dict(sorted(pats.items()))}


def main() -> None:
    mf._install_log_capture()
    t0 = time.time()
    import diffusers
    import PIL
    import safetensors
    import transformers

    transformers.utils.logging.disable_progress_bar()
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"Pillow {PIL.__version__}, threads {torch.get_num_threads()}")
    for m in ("tiny-a", "tiny-b"):
        if not (MODELS / m / "tokenizer" / "vocab.json").is_file():
            sys.exit(f"error: {MODELS / m}/tokenizer missing; run scripts/make_fixtures.py first")
    if OUT.exists():
        for f in OUT.iterdir():
            f.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    checks: dict[str, dict] = {}

    # scheduler
    sdoc, ssum = scheduler_fixture()
    files["scheduler.json"] = {"size": (OUT / "scheduler.json").stat().st_size}
    log(f"scheduler.json: {len(sdoc['cases'])} configs x N in {SCHED_STEPS}")
    for k, v in ssum.items():
        log(f"  {k}: {v}")

    # content image + preprocessing
    img = make_content_image()
    img.save(OUT / "content.png", format="PNG")
    back = Image.open(OUT / "content.png")
    assert back.mode == "RGB" and back.size == (IMG_W, IMG_H)
    resized, image, pinfo = preprocess(back)
    assert np.array_equal(np.asarray(back), np.asarray(img))
    assert tuple(image.shape) == (1, 3, 64, 80), image.shape
    assert pinfo == {"resized_wh": [85, 64], "crop_wh": [80, 64], "crop_offset_xy": [2, 0]}, pinfo
    emu, float_off = bilinear_resize_emulated(np.asarray(back), *pinfo["resized_wh"])
    assert np.array_equal(emu, resized), "the Pillow resize emulation does not match"
    checks["preprocess"] = {"fixed_point_emulation_equals_pillow": True,
                            "float_triangle_filter_without_intermediate_rounding_max_abs_diff_u8": float_off}
    files["content.png"] = {"size": (OUT / "content.png").stat().st_size, "width": IMG_W, "height": IMG_H}
    files["preprocess.safetensors"] = save("preprocess.safetensors",
                                           {"resized_u8": torch.from_numpy(resized), "image": image})
    log(f"preprocess: {IMG_W}x{IMG_H} -> resize {pinfo['resized_wh']} -> crop {pinfo['crop_wh']} at "
        f"{pinfo['crop_offset_xy']}")

    S = load_tame("tiny-a", fp16=False)
    T = load_tame("tiny-b", fp16=True)

    scen_meta = {}
    for sc in SCENARIOS:
        t1 = time.time()
        tensors, info = run_ditail(sc, S, T, image, checks)
        fname = f"ditail_{sc['name']}.safetensors"
        files[fname] = save(fname, tensors)
        scen_meta[sc["name"]] = dict(file=fname, **info)
        st = info["stats"]
        log(f"ditail {sc['name']}: {len(tensors)} tensors, {files[fname]['size']:,} bytes, "
            f"max|final| {st['max_abs_final']:.4f}, max|Z_start| {st['max_abs_Z_start']:.4f} "
            f"({time.time() - t1:.1f}s); checks {checks[sc['name']]}")
        log(f"  max|x_out| per step: {st['max_abs_x_out_per_step']}")

    t1 = time.time()
    tensors, tinfo = run_t2i(T, checks)
    files["t2i.safetensors"] = save("t2i.safetensors", tensors)
    log(f"t2i: max|final| {tinfo['stats']['max_abs_final']:.4f} ({time.time() - t1:.1f}s); checks {checks['t2i']}")
    log(f"  max|x_out| per step: {tinfo['stats']['max_abs_x_out_per_step']}")

    meta = {
        "about": "Golden fixtures for ditail's pipeline, written by scripts/make_pipeline_fixtures.py from "
                 "METHOD.md (float32 on CPU). Tolerance for the Rust side: " + mf.TOLERANCE,
        "models": {
            "source_S": "tests/fixtures/models/tiny-a (float32 files)",
            "target_T": "tests/fixtures/models/tiny-b (fp16 variant files, upcast to float32)",
            "tame": f"after loading, unet.conv_out.weight *= {TAME} and unet.conv_out.bias *= {TAME} (float32) in "
                    "both U-Nets; not saved (the Rust tests scale the same way)",
            "tokenizer": "each model's own tokenizer/ (transformers CLIPTokenizer), "
                         'tok(p, padding="max_length", max_length=77, truncation=True)',
            "text_embedding": "E_M(p) = text_encoder(ids).last_hidden_state (after the final layer norm); "
                              "scenario civitai reads prompts as AUTOMATIC1111 does (embed_a1111: 75-token "
                              "chunks, emphasis, the embedding embeddings/NegB.safetensors in T's negative) and "
                              "pads the prompts of one batch or sum with empty-prompt chunks (pad_chunks)",
        },
        "scheduler": {
            "ditail_and_t2i": "DDIMScheduler.from_config(SD1.5 scheduler config of the tiny models): scaled_linear "
                              "0.00085..0.012, steps_offset 1, set_alpha_to_one false, leading; float32 "
                              "alphas_cumprod = scheduler.json cases[0].alphas_cumprod_f32",
            "file": "scheduler.json: " + sdoc["about"],
        },
        "preprocess": {
            "content.png": f"{IMG_W}x{IMG_H} RGB, procedural (gradients, filled shapes, 1-2 px stripes)",
            "resize": f"PIL.Image.open('content.png').resize(({pinfo['resized_wh'][0]}, {pinfo['resized_wh'][1]}), "
                      "Image.BILINEAR) with Pillow " + PIL.__version__ + " (reducing_gap=None, box=None): "
                      "shorter side -> 64, longer side = round(longer * 64 / shorter) = round(85.33) = 85.",
            "resize_algorithm": "Pillow's BILINEAR downscale is antialiased and works on uint8 in two separable "
                                "passes, horizontal first (96 -> 85 columns, all 72 rows), then vertical (72 -> 64 "
                                "rows). Per axis with scale = in/out (96/85, 72/64) and support = max(scale, 1): "
                                "for output x, center = (x + 0.5) * scale, lo = max(int(center - support + 0.5), 0), "
                                "hi = min(int(center + support + 0.5), in); w_i = max(0, 1 - |(i + lo - center + 0.5) "
                                "/ max(scale, 1)|) for i in 0..hi-lo, normalised to sum 1; fixed point k_i = "
                                "round-half-away(w_i * 2^22); out = clamp((sum k_i * in[lo + i] + 2^21) >> 22, 0, "
                                "255) after each pass (the intermediate image is uint8). This emulation "
                                "(bilinear_resize_emulated in the script) equals Pillow's output exactly; a float "
                                "version without the intermediate rounding differs by up to 1 (see checks).",
            "crop": "center crop each side down to a multiple of 8: offset = (size - size8) // 2 -> "
                    f"width {pinfo['resized_wh'][0]} -> {pinfo['crop_wh'][0]} at x = {pinfo['crop_offset_xy'][0]}, "
                    f"height {pinfo['resized_wh'][1]} -> {pinfo['crop_wh'][1]} at y = {pinfo['crop_offset_xy'][1]}",
            "scale": "image = float32(u8) / 127.5 - 1.0, NCHW",
            "tensors": {"resized_u8": "uint8 [h, w, 3] after resize, before crop",
                        "image": "float32 [1, 3, 64, 80] after crop and scaling"},
            **pinfo,
        },
        "ditail": {
            "defaults": DEFAULTS,
            "scenarios": scen_meta,
            "tensors": {
                "image": "[1,3,64,80] the preprocessed image (= preprocess.safetensors image)",
                "z0": "0.18215 * S.vae.encode(image).latent_dist.mean [1,4,8,10]",
                "cond_inv": "alpha * E_S(inv p+) - beta * E_S(inv p-) [1,77,32]",
                "inverted.{t}": "Z[t] after the inversion step at timestep t (t increasing) [1,4,8,10]",
                "inv_eps.{t}": "U_S(z, t, cond_inv) used in that step [1,4,8,10]",
                "emb_uncond / emb_pos / emb_neg": "E_T(''), E_T(p+), E_T(p-) [1,77,48]",
                "step.{i}.t": "sampling timestep of step i (0-based, decreasing), int64 [1]",
                "step.{i}.x_in": "x before the step [1,4,8,10] (step 0: Z[t_0])",
                "step.{i}.noise_pred": "T's U-Net on latents [Z[t], x, x] with conditions [emb_uncond, emb_pos, "
                                       "emb_neg], with injection [3,4,8,10]",
                "step.{i}.eps": "eps_neg + omega * (eps_pos - eps_neg) = noise_pred[2] + omega * (noise_pred[1] - "
                                "noise_pred[2]) [1,4,8,10]",
                "step.{i}.x_out": "x after the DDIM step [1,4,8,10]",
                "step.0.injected.up_blocks.1.resnets.1": "step 0: output of up_blocks[1].resnets[1].conv2 after "
                                                         "the masked mix (before the shortcut add) [3,C,h,w]",
                "step.0.injected.up_blocks.{i}.attentions.{j}.q / .k": "step 0: attn1.to_q / to_k output of "
                    "transformer_blocks[0] after the masked mix [3, h*w, inner], token n = row*w + col",
                "final": "x after the last step [1,4,8,10]",
                "decoded": "clamp(T.vae.decode(final / 0.18215).sample / 2 + 0.5, 0, 1) [1,3,64,80]",
            },
            "injection_sites": [CONV_SITE] + [f"up_blocks.{i}.attentions.{j}" for i, j in ATTN_SITES],
            "step_compatibility_examples": {f"{a}/{b}": compatible(a, b)
                                            for a, b in [(10, 10), (100, 50), (50, 50), (300, 100), (50, 7),
                                                         (50, 25), (20, 50)]},
        },
        "t2i": dict(tinfo, tensors={
            "noise": "start latent [1,4,8,10]", "emb_pos / emb_neg": "E_T(prompt), E_T(negative) [1,77,48]",
            "step.{i}.t": "int64 [1]", "step.{i}.x_in / x_out": "[1,4,8,10]",
            "step.{i}.eps": "guided eps [1,4,8,10]", "final": "x after the last step [1,4,8,10]"}),
        "interpretations": INTERPRETATIONS,
        "checks": checks,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__, "Pillow": PIL.__version__},
        "files": files,
    }  # no timings: a rerun must reproduce every file byte for byte
    (OUT / "meta.json").write_text(_dump_compact_json(meta), encoding="utf-8")

    log("sizes:")
    total = mf.report_sizes(OUT)
    if mf.COLLECTED:
        log(f"warnings from diffusers/transformers/python ({len(mf.COLLECTED)}):")
        for w in dict.fromkeys(mf.COLLECTED):
            log(f"  {w}")
    else:
        log("no warnings from diffusers/transformers")
    log(f"total {total:,} bytes; time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
