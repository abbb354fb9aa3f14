#!/usr/bin/env python3
"""Generate the fixtures of `ditail eval` (tests/fixtures/eval/): the paper's metrics.

Reproduces MAPS-research/Ditail's src/ditail_metrics.py (CLIP score, DINO structure
distance, FID) with tiny random-weight models, so the Rust implementation can be checked
against transformers / torchvision / pytorch-fid without Python.  Writes, deterministically
(fixed seeds, 2 threads; a rerun gives byte-identical files):

  clip-tiny/                 random-weight transformers.CLIPModel (tiny widths, quick_gelu,
                             legacy eos_token_id 2 -> pooled token = argmax(input_ids)):
                             config.json, model.safetensors, preprocessor_config.json (the one
                             of openai/clip-vit-large-patch14), and the 1000-entry tokenizer of
                             tests/fixtures/models/tiny-a (vocab.json, merges.txt,
                             special_tokens_map.json, tokenizer_config.json)
  dino-tiny/                 random-weight transformers.ViTModel in facebook/dino-vitb8's
                             layout (3 layers, patch 8, no pooler): config.json, model.safetensors
  inception-tensors.json     the ordered [name, shape] list of pytorch-fid's FID Inception v3
                             state dict; its weights are NOT committed: every value follows from
                             a counter hash of (name, index) (see inception_value_rule in
                             meta.json), so the Rust test regenerates the full-size network
  images/content/{a,b,c}.png, d.jpg   4 procedural images of different sizes (W x H 96x64,
                             64x96, 300x200, 150x150; d is a JPEG, quality 95)
  images/results/{a,b,c,d}.png        4 procedural 256x256 "results" (one per content image)
  images/prompts.txt         `name<TAB>prompt`, one line per result
  golden.safetensors         every intermediate and result (see meta.json "tensors")
  meta.json                  shapes, what each tensor is, processing steps, versions, observed
                             tolerances, the Inception weight rule with test vectors, FID checks

Usage:  python scripts/make_eval_fixtures.py     (needs pytorch-fid and scipy; about 2 minutes on 2 cores)
        python scripts/make_eval_fixtures.py --full-size fixtures-full

Full-size mode (``--full-size OUTDIR``) writes OUTDIR/eval/ (not committed; fixtures-full/ is
git-ignored): random-weight models with the real configs, openai/clip-vit-large-patch14
(clip/: CLIPModel, the real CLIP vocab.json / merges.txt of models/clip, the same
preprocessor_config.json; 1.7 GB) and facebook/dino-vitb8 (dino/: ViTModel without pooler,
0.35 GB), and golden.safetensors + meta.json with the clip_* and dino_* tensors of the tiny
golden file (same names, same meaning), computed the same way on the committed images/ and
prompts.  The Inception / FID goldens are not repeated there: the tiny fixtures' InceptionV3
is already full-size.  About 1.5 minutes on 2 cores, 7.2 GiB peak RSS, 2.1 GB written;
a rerun gives byte-identical files.

No network: the Inception architecture comes from pytorch_fid.inception.fid_inception_v3()
with its weight download replaced by the hash-filled state dict.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (HF_HUB_OFFLINE, OMP_WAIT_POLICY, ftfy blocked, 2 threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(2)

log = mf.log
REPO = mf.REPO
OUT = mf.FIXTURES / "eval"
CLIP_DIR = OUT / "clip-tiny"
DINO_DIR = OUT / "dino-tiny"
IMG_DIR = OUT / "images"
TOKENIZER_SRC = mf.FIXTURES / "models" / "tiny-a" / "tokenizer"
MAX_LEN = 77

NAMES = ["a", "b", "c", "d"]
# content images: (file name, width, height); d is a JPEG
CONTENT = [("a.png", 96, 64), ("b.png", 64, 96), ("c.png", 300, 200), ("d.jpg", 150, 150)]
RESULT_SIZE = 256
JPEG_QUALITY = 95
PROMPTS = [
    "a watercolor painting of a red fox in the snow",
    "portrait of an old man, oil on canvas, dramatic lighting",
    "a cozy wooden cabin by the lake at sunset, pixel art",
    "anime style city street at night with neon signs and rain",
]

CLIP_TEXT = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, projection_dim=24,
                 # openai/clip-vit-large-patch14's legacy ids: eos_token_id == 2 makes the
                 # text pooler take position argmax(input_ids) (= the first <|endoftext|>, 999)
                 pad_token_id=1, bos_token_id=0, eos_token_id=2)
CLIP_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                   image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   projection_dim=24)
CLIP_PROJ = 24
CLIP_SEED = 0
# openai/clip-vit-large-patch14's preprocessor_config.json, verbatim (legacy int sizes:
# transformers reads size 224 as {"shortest_edge": 224} and crop_size 224 as 224x224;
# do_rescale / rescale_factor 1/255 / do_convert_rgb are the class defaults).
CLIP_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

DINO_CONFIG = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                   image_size=224, patch_size=8, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-12)
DINO_SEED = 1
DINO_MEAN = (0.485, 0.456, 0.406)
DINO_STD = (0.229, 0.224, 0.225)

# The real configs (full-size mode): openai/clip-vit-large-patch14 and facebook/dino-vitb8.
FULL_CLIP_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                      layer_norm_eps=1e-5, projection_dim=768, pad_token_id=1, bos_token_id=0, eos_token_id=2)
FULL_CLIP_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                        image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                        projection_dim=768)
FULL_CLIP_PROJ = 768
FULL_DINO_CONFIG = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        image_size=224, patch_size=8, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-12)
FULL_CLIP_VOCAB = mf.CLIP_DIR  # models/clip: vocab.json / merges.txt, byte-identical to the hub's


@dataclasses.dataclass(frozen=True)
class Spec:
    """What differs between the tiny (committed) and the full-size fixtures."""

    name: str
    out: Path
    clip_dir: Path
    dino_dir: Path
    clip_text: dict
    clip_vision: dict
    clip_proj: int
    # CLIPConfig.logit_scale_init_value (config.json only: the parameter is set to ln(100) in both modes)
    clip_logit_scale_init: float
    # (source file, name in clip_dir)
    tokenizer_files: tuple
    bos_token_id: int
    eos_token_id: int
    dino_config: dict
    # transformers' CLIP init scales q/k/v/fc2 by (2 L)^-1/2; with clip_depth_ref_layers = r they are
    # multiplied by sqrt(L / r), i.e. get the depth factor of an r-layer tower (no-op when L == r)
    clip_depth_ref_layers: int
    # the DINO recipe's residual-branch outputs (attention o_proj, mlp fc2) are multiplied by
    # sqrt(r / L) with r = dino_depth_ref_layers (no-op when L == r)
    dino_depth_ref_layers: int


TINY = Spec(
    name="tiny", out=OUT, clip_dir=CLIP_DIR, dino_dir=DINO_DIR,
    clip_text=CLIP_TEXT, clip_vision=CLIP_VISION, clip_proj=CLIP_PROJ, clip_logit_scale_init=math.log(100.0),
    tokenizer_files=tuple((TOKENIZER_SRC / f, f) for f in ("vocab.json", "merges.txt", "special_tokens_map.json",
                                                           "tokenizer_config.json")),
    bos_token_id=mf.TINY_BOS, eos_token_id=mf.TINY_EOS,
    dino_config=DINO_CONFIG, clip_depth_ref_layers=2, dino_depth_ref_layers=3,
)


def full_spec(outdir: Path) -> Spec:
    out = outdir / "eval"
    return Spec(
        name="full", out=out, clip_dir=out / "clip", dino_dir=out / "dino",
        clip_text=FULL_CLIP_TEXT, clip_vision=FULL_CLIP_VISION, clip_proj=FULL_CLIP_PROJ,
        clip_logit_scale_init=2.6592,  # the hub config.json's value (ln(1/0.07)); the weight is ln(100)
        tokenizer_files=((FULL_CLIP_VOCAB / "vocab.json", "vocab.json"), (FULL_CLIP_VOCAB / "merges.txt", "merges.txt"),
                         # vocabulary-independent: the special tokens and model_max_length 77
                         (TOKENIZER_SRC / "special_tokens_map.json", "special_tokens_map.json"),
                         (TOKENIZER_SRC / "tokenizer_config.json", "tokenizer_config.json")),
        bos_token_id=49406, eos_token_id=49407,
        dino_config=FULL_DINO_CONFIG, clip_depth_ref_layers=2, dino_depth_ref_layers=3,
    )


def dino_tokens(spec: Spec) -> int:
    return 1 + (spec.dino_config["image_size"] // spec.dino_config["patch_size"]) ** 2


FID_EPS = 1e-6  # pytorch-fid's calculate_frechet_distance default
SYNTH_SEED = 4242


# ---------------------------------------------------------------------------------------
# images


def _procedural(w: int, h: int, seed: int) -> Image.Image:
    """Smooth colour gradients + a little noise + a stripe patch + a few hard-edged shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
    coef = rng.uniform(0.0, 1.0, (3, 4))
    chans = []
    for k in range(3):
        a0, a1, a2, a3 = coef[k]
        v = (40.0 + 170.0 * (a0 * xx + (1.0 - a0) * yy)
             + 30.0 * np.sin(2 * np.pi * (1.0 + 3.0 * a1) * xx + 6.0 * a2) * np.cos(2 * np.pi * (1.0 + 2.0 * a3) * yy))
        chans.append(v)
    img = np.stack(chans, axis=-1) + rng.normal(0.0, 4.0, (h, w, 3))
    # 1-pixel stripes (aliases when downscaled without a low-pass filter)
    x0, y0, sw, sh = w // 10, h - h // 4 - 2, max(w // 4, 4), max(h // 6, 4)
    stripes = np.where((np.arange(sw) % 2) == 0, 225.0, 30.0)
    img[y0:y0 + sh, x0:x0 + sw, :] = stripes[None, :, None]
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img, "RGB")
    draw = ImageDraw.Draw(pil)
    for s in range(4):
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        rx, ry = rng.uniform(0.06, 0.2) * w, rng.uniform(0.06, 0.2) * h
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [int(cx - rx), int(cy - ry), int(cx + rx), int(cy + ry)]
        if s % 3 == 0:
            draw.ellipse(box, fill=color)
        elif s % 3 == 1:
            draw.rectangle(box, fill=color, outline=(255, 255, 255))
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=color)
    draw.line([(0, 0), (w - 1, h - 1)], fill=(10, 10, 10), width=1)
    return pil


def _result_from(content: Image.Image, seed: int) -> Image.Image:
    """A stylised 256x256 version of a content image (same layout, other colours, new noise)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(content.convert("RGB").resize((RESULT_SIZE, RESULT_SIZE), Image.BICUBIC), dtype=np.float64)
    mix = np.eye(3) * 0.6 + rng.uniform(-0.25, 0.45, (3, 3))
    img = base @ mix.T / mix.sum(axis=1)[None, None, :].clip(0.5, None)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    img += rng.normal(0.0, 6.0, img.shape)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img, "RGB")
    draw = ImageDraw.Draw(pil)
    cx, cy, r = (int(v) for v in rng.uniform(40, 216, 3))
    draw.ellipse([cx - r // 4, cy - r // 4, cx + r // 4, cy + r // 4],
                 outline=tuple(int(c) for c in rng.integers(0, 256, 3)), width=3)
    return pil


def make_images() -> dict:
    (IMG_DIR / "content").mkdir(parents=True)
    (IMG_DIR / "results").mkdir(parents=True)
    info = {"content": {}, "results": {}}
    for i, (fname, w, h) in enumerate(CONTENT):
        img = _procedural(w, h, seed=100 + i)
        path = IMG_DIR / "content" / fname
        if fname.endswith(".jpg"):
            # Pillow's default chroma subsampling for quality 95 is 4:2:0
            img.save(path, format="JPEG", quality=JPEG_QUALITY)
        else:
            img.save(path, format="PNG")
        res = _result_from(img, seed=200 + i)
        res.save(IMG_DIR / "results" / f"{NAMES[i]}.png", format="PNG")
        info["content"][fname] = {"width": w, "height": h, "mode": "RGB"}
        info["results"][f"{NAMES[i]}.png"] = {"width": RESULT_SIZE, "height": RESULT_SIZE, "mode": "RGB"}
    lines = [f"{n}\t{p}" for n, p in zip(NAMES, PROMPTS)]
    (IMG_DIR / "prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info


def content_paths() -> list[Path]:
    return [IMG_DIR / "content" / f for f, _, _ in CONTENT]


def result_paths() -> list[Path]:
    return [IMG_DIR / "results" / f"{n}.png" for n in NAMES]


def squash224(path: Path) -> Image.Image:
    """The reference's `transforms.Resize((224, 224), interpolation=3)(Image.open(p))`."""
    from torchvision import transforms

    img = Image.open(path)
    out = transforms.Resize((224, 224), interpolation=3)(img)
    # = Pillow's own bicubic resize (antialiased, support 2 * scale, a = -0.5), rounded to uint8
    direct = img.resize((224, 224), Image.BICUBIC)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(direct)), path
    return out


# ---------------------------------------------------------------------------------------
# models


@torch.no_grad()
def build_clip(spec: Spec) -> dict:
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(text_config=dict(spec.clip_text), vision_config=dict(spec.clip_vision),
                     projection_dim=spec.clip_proj, logit_scale_init_value=spec.clip_logit_scale_init)
    torch.manual_seed(CLIP_SEED)
    model = CLIPModel(cfg).eval()
    info = mf.perturb(model, torch.Generator().manual_seed(CLIP_SEED + 7))
    model.logit_scale.fill_(math.log(100.0))
    ref = spec.clip_depth_ref_layers
    depth = {}
    for tower in (model.text_model, model.vision_model):
        n_layers = tower.config.num_hidden_layers
        if n_layers == ref:
            continue
        f = math.sqrt(n_layers / ref)
        for layer in tower.encoder.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.mlp.fc2):
                lin.weight.mul_(f)
        depth[type(tower).__name__] = {"layers": n_layers, "factor": f}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    spec.clip_dir.mkdir(parents=True)
    model.save_pretrained(spec.clip_dir, safe_serialization=True)
    for src, name in spec.tokenizer_files:
        shutil.copyfile(src, spec.clip_dir / name)
    mf.write_json(spec.clip_dir / "preprocessor_config.json", CLIP_PREPROCESSOR)
    info["init"] = (f"transformers' CLIP init (torch.manual_seed({CLIP_SEED})), then make_fixtures.perturb: LayerNorm "
                    "weight = 1 + 0.1 randn, bias = 0.1 randn, all-zero parameters (biases) = 0.02 randn "
                    f"(generator seed {CLIP_SEED + 7}); logit_scale = ln(100) (exp = 100, as in the real model)")
    if depth:
        info["depth_scaling"] = {
            "what": f"q_proj / k_proj / v_proj / mlp.fc2 weights of every layer multiplied by sqrt(L / {ref}) after "
                    f"perturb: transformers' init gives them std (2 L)^-1/2 * width^-1/2, this makes it the depth "
                    f"factor of the {ref}-layer tiny towers, (2 * {ref})^-1/2",
            "why": "with transformers' depth factor the 24-layer vision tower barely changes its residual stream "
                   "(std 1.00 -> 1.23 over 24 layers) and the CLS token hardly depends on the image: the 4 image "
                   "embeddings had pairwise cosines 0.96..0.997",
            "towers": depth,
        }
    return info


@torch.no_grad()
def build_dino(spec: Spec) -> dict:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(DINO_SEED)
    model = ViTModel(ViTConfig(**spec.dino_config), add_pooling_layer=False).eval()
    gen = torch.Generator().manual_seed(DINO_SEED + 7)
    # ViT's default init (std 0.02) makes a 32-wide network nearly linear in its input and
    # the attention / MLP branches negligible; use fan-in scaled weights so every layer matters.
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(fan_in))
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    emb = model.embeddings
    emb.cls_token.copy_(0.5 * torch.randn(emb.cls_token.shape, generator=gen))
    emb.position_embeddings.copy_(0.2 * torch.randn(emb.position_embeddings.shape, generator=gen))
    info = mf.perturb(model, gen)
    ref, n_layers = spec.dino_depth_ref_layers, spec.dino_config["num_hidden_layers"]
    if n_layers != ref:
        f = math.sqrt(ref / n_layers)
        for i in range(n_layers):
            attn_out, mlp_out = _dino_branch_outputs(model, i)
            attn_out.weight.mul_(f)
            mlp_out.weight.mul_(f)
        info["depth_scaling"] = {
            "what": f"the residual branches' output projections (attention output dense / o_proj, mlp output "
                    f"dense / fc2) of every layer multiplied by sqrt({ref} / L) = {f:.6g} after perturb, so the "
                    f"summed branch variance over the L = {n_layers} layers is that of the {ref}-layer tiny model",
            "why": f"unscaled, the residual stream grew 3.7x over {n_layers} layers and the last-layer keys "
                   "collapsed towards one direction (self-similarity off-diagonal mean 0.71, tiny model 0.42)",
            "factor": f,
        }
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["init"] = (f"torch.manual_seed({DINO_SEED}); Linear/Conv2d weights = randn / sqrt(fan_in), biases = 0.1 randn, "
                    "cls_token = 0.5 randn, position_embeddings = 0.2 randn, then make_fixtures.perturb "
                    f"(LayerNorm weight = 1 + 0.1 randn, bias = 0.1 randn); generator seed {DINO_SEED + 7}")
    spec.dino_dir.mkdir(parents=True)
    model.save_pretrained(spec.dino_dir, safe_serialization=True)
    return info


def _dino_branch_outputs(model, i: int):
    """(attention output projection, MLP output projection) of layer i."""
    if hasattr(model, "layers"):  # transformers >= 5.x layout
        layer = model.layers[i]
        return layer.attention.o_proj, layer.mlp.fc2
    layer = model.encoder.layer[i]
    return layer.attention.output.dense, layer.output.dense


def load_clip(spec: Spec):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(spec.clip_dir, attn_implementation="eager").eval()
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, n
    return model


def load_dino(spec: Spec):
    from transformers import ViTModel

    model = ViTModel.from_pretrained(spec.dino_dir, add_pooling_layer=False, attn_implementation="eager").eval()
    return model


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _stats(t: torch.Tensor) -> dict:
    t = t.double()
    return {"mean": float(t.mean()), "std": float(t.std()), "min": float(t.min()), "max": float(t.max())}


# ---------------------------------------------------------------------------------------
# CLIP score


@torch.no_grad()
def clip_golden(model, spec: Spec) -> tuple[dict, dict]:
    from transformers import CLIPProcessor

    proc = CLIPProcessor.from_pretrained(spec.clip_dir, backend="pil")
    proc_fast = CLIPProcessor.from_pretrained(spec.clip_dir, backend="torchvision")
    images = [squash224(p) for p in result_paths()]

    # the reference call
    ref_inputs = proc(text=PROMPTS, images=images, return_tensors="pt", padding=True)
    pixel_values = ref_inputs["pixel_values"]
    assert pixel_values.shape == (4, 3, 224, 224) and pixel_values.dtype == torch.float32
    fast_pv = proc_fast(images=images, return_tensors="pt")["pixel_values"]
    slow_fast = float((fast_pv - pixel_values).abs().max())
    # and by hand: uint8 / 255, (x - mean) / std (resize and crop are no-ops at 224x224)
    u8 = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in images])
    mean = torch.tensor(CLIP_PREPROCESSOR["image_mean"], dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(CLIP_PREPROCESSOR["image_std"], dtype=torch.float64)[None, :, None, None]
    by_hand64 = (u8.double() / 255.0 - mean) / std
    by_hand_diff = float((by_hand64 - pixel_values.double()).abs().max())

    tok = proc.tokenizer
    ids = tok(PROMPTS, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt")
    input_ids, attn_mask = ids["input_ids"].to(torch.int64), ids["attention_mask"].to(torch.int64)
    lens = [int(m.sum()) for m in attn_mask]
    assert max(lens) < 40, lens
    ref_ids = ref_inputs["input_ids"]
    assert ref_ids.shape[1] == max(lens)
    assert torch.equal(ref_ids, input_ids[:, :ref_ids.shape[1]])
    pad_id = tok.pad_token_id
    assert (tok.bos_token_id, tok.eos_token_id, pad_id) == (spec.bos_token_id, spec.eos_token_id, spec.eos_token_id)
    for row, n in zip(input_ids.tolist(), lens):
        assert row[0] == tok.bos_token_id and row[n - 1] == tok.eos_token_id
        assert row[n:] == [pad_id] * (MAX_LEN - n)
        assert int(np.argmax(row)) == n - 1  # the legacy pooler position

    logits_ref = model(**ref_inputs).logits_per_text
    out77 = model(input_ids=input_ids, attention_mask=attn_mask, pixel_values=pixel_values)
    logits77 = out77.logits_per_text
    logits77_nomask = model(input_ids=input_ids, pixel_values=pixel_values).logits_per_text

    text = model.get_text_features(input_ids=input_ids)  # no attention mask: causal mask only
    text_masked = model.get_text_features(input_ids=input_ids, attention_mask=attn_mask)
    image = model.get_image_features(pixel_values=pixel_values)
    te, ie = text.pooler_output, image.pooler_output
    assert te.shape == (4, spec.clip_proj) and ie.shape == (4, spec.clip_proj)
    # logits_per_text = exp(logit_scale) * normalize(text) @ normalize(image)^T
    scale = model.logit_scale.exp()
    by_formula = scale * (te / te.norm(dim=-1, keepdim=True)) @ (ie / ie.norm(dim=-1, keepdim=True)).T
    formula_diff = _max_rel(by_formula, logits77)
    assert formula_diff < 1e-5, formula_diff

    diag = torch.diagonal(logits77)
    scores = diag / 100.0
    score = diag.mean() / 100.0
    ref_score = torch.diag(logits_ref).mean().item() / 100  # exactly as ditail_metrics.py

    # float64 run (tolerance estimate)
    m64 = load_clip(spec).double()
    l64 = m64(input_ids=input_ids, attention_mask=attn_mask, pixel_values=pixel_values.double()).logits_per_text
    t64 = m64.get_text_features(input_ids=input_ids)
    i64 = m64.get_image_features(pixel_values=pixel_values.double())

    tensors = {
        # One image: the four results share a size, and the file stays small.
        "clip_pixel_values_0": pixel_values[:1],
        "clip_input_ids": input_ids,
        "clip_attention_mask": attn_mask,
        "clip_text_embeds": te,
        "clip_image_embeds": ie,
        "clip_logits_per_text": logits77,
        "clip_scores": scores,
        "clip_score": score.reshape(1),
        "clip_text_last_hidden": text.last_hidden_state,
        "clip_vision_last_hidden": image.last_hidden_state,
    }
    meta = {
        "processor_classes": {"slow (reference, golden)": type(proc.image_processor).__name__,
                              "fast": type(proc_fast.image_processor).__name__,
                              "tokenizer": type(tok).__name__},
        "processor_note": "transformers 5.24 names the PIL processor CLIPImageProcessorPil (backend='pil', "
                          "formerly use_fast=False) and the torchvision one CLIPImageProcessor (the default)",
        "pixel_values_slow_vs_fast_max_abs_diff": slow_fast,
        "pixel_values_vs_float64_by_hand_max_abs_diff": by_hand_diff,
        "pixel_values_by_hand": "(uint8 / 255 - mean) / std on the 224x224 squashed image (the processor's "
                                "shortest-edge resize to 224 and 224x224 center crop are no-ops)",
        "pad_token": tok.pad_token, "pad_token_id": pad_id,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "token_counts_with_bos_eos": lens,
        "pooled_token": f"position argmax(input_ids) = the first <|endoftext|> ({spec.eos_token_id}), since config "
                        "eos_token_id is the legacy 2",
        "logits_per_text_padding_max_length_vs_padding_true_max_abs_diff":
            float((logits77 - logits_ref).abs().max()),
        "logits_per_text_padding_max_length_equal_to_padding_true": bool(torch.equal(logits77, logits_ref)),
        "logits_per_text_without_vs_with_attention_mask_max_abs_diff":
            float((logits77_nomask - logits77).abs().max()),
        "text_embeds_without_vs_with_attention_mask_max_abs_diff":
            float((text.pooler_output - text_masked.pooler_output).abs().max()),
        "text_last_hidden_note": "clip_text_last_hidden is computed WITHOUT attention_mask (causal mask only, "
                                 "as SD text encoders run); with the mask, positions after the first "
                                 "<|endoftext|> differ, positions up to it agree",
        "vision_last_hidden_note": "vision_model last_hidden_state: encoder output (after pre_layrnorm + layers), "
                                   "before post_layernorm (which only the pooled CLS token gets)",
        "logits_formula_max_rel_diff": formula_diff,
        "clip_score": float(score),
        "clip_score_reference_float64": ref_score,
        "clip_scores": [float(s) for s in scores],
        "float32_vs_float64_max_rel_diff": {
            "logits_per_text": _max_rel(logits77, l64),
            "text_embeds": _max_rel(te, t64.pooler_output),
            "image_embeds": _max_rel(ie, i64.pooler_output),
            "text_last_hidden": _max_rel(text.last_hidden_state, t64.last_hidden_state),
            "vision_last_hidden": _max_rel(image.last_hidden_state, i64.last_hidden_state),
        },
        "stats": {"text_embeds": _stats(te), "image_embeds": _stats(ie), "logits_per_text": _stats(logits77)},
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------
# DINO structure distance


def attn_cosine_sim(x, eps=1e-08):
    """Ditail's src/helper/extractor.py (from DiffuseIT), unchanged."""
    x = x[0]
    norm1 = x.norm(dim=2, keepdim=True)
    factor = torch.clamp(norm1 @ norm1.permute(0, 2, 1), min=eps)
    sim_matrix = (x @ x.permute(0, 2, 1)) / factor
    return sim_matrix


def dino_transform(antialias: bool):
    """The reference's DINO transform. Its environment pins torchvision 0.16.1, whose
    `Resize` of a tensor defaults to antialias=None, i.e. False (its
    `_check_antialias` / `_functional_tensor.resize`); torchvision >= 0.17 defaults to True.
    `antialias=False` here reproduces the pinned environment with the torchvision installed."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Resize((224, 224), interpolation=3, antialias=antialias),
        transforms.Normalize(DINO_MEAN, DINO_STD),
    ])


def _key_module(model):
    last = model.config.num_hidden_layers - 1
    if hasattr(model, "layers"):  # transformers >= 5.x layout (saved as the hub layout)
        return model.layers[last].attention.k_proj, model.layers[last]
    return model.encoder.layer[last].attention.attention.key, model.encoder.layer[last]


@torch.no_grad()
def dino_keys(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Keys of the last layer for one image [1, 3, 224, 224] -> [tokens, hidden]."""
    key_mod, layer = _key_module(model)
    store = []
    h = key_mod.register_forward_hook(lambda _m, _i, out: store.append(out.detach().clone()))
    try:
        out = model(pixel_values=pixel_values, output_hidden_states=True)
    finally:
        h.remove()
    assert len(store) == 1
    keys = store[0]
    # = key projection of the last block's pre-attention LayerNorm of its input
    manual = key_mod(layer.layernorm_before(out.hidden_states[-2]))
    atol = 1e-6 * max(1.0, float(keys.abs().max()))
    assert torch.allclose(manual, keys, rtol=0, atol=atol), float((manual - keys).abs().max())
    return keys[0]


def _dino_distances(model, pv_c: torch.Tensor, pv_r: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Keys and the reference's loop (batch of one image each, loss accumulated in a tensor)."""
    keys_c = torch.stack([dino_keys(model, pv_c[i:i + 1]) for i in range(4)])
    keys_r = torch.stack([dino_keys(model, pv_r[i:i + 1]) for i in range(4)])
    ssim_loss = 0.0
    dists = []
    for i in range(4):
        src = attn_cosine_sim(keys_c[i][None, None])
        tgt = attn_cosine_sim(keys_r[i][None, None])
        d = F.mse_loss(src, tgt)
        dists.append(d)
        ssim_loss += d
    return (keys_c, keys_r, ssim_loss / 4), dists


@torch.no_grad()
def dino_golden(model, spec: Spec) -> tuple[dict, dict]:
    tf, tf_aa = dino_transform(antialias=False), dino_transform(antialias=True)
    pv_c = torch.stack([tf(Image.open(p)) for p in content_paths()])
    pv_r = torch.stack([tf(Image.open(p)) for p in result_paths()])
    pv_c_aa = torch.stack([tf_aa(Image.open(p)) for p in content_paths()])
    pv_r_aa = torch.stack([tf_aa(Image.open(p)) for p in result_paths()])
    # Resize on a float tensor, by hand: PyTorch's bicubic (a = -0.75, 4 taps, indices clamped)
    # without antialiasing, and with it (Pillow-like kernel, a = -0.5, support scaled when
    # downscaling); no clamping, no uint8 rounding either way.
    plain = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
                         for p in result_paths()]).float() / 255.0
    m = torch.tensor(DINO_MEAN)[None, :, None, None]
    s = torch.tensor(DINO_STD)[None, :, None, None]
    by_hand = {}
    for aa, pv in ((False, pv_r), (True, pv_r_aa)):
        x = F.interpolate(plain, size=(224, 224), mode="bicubic", align_corners=False, antialias=aa)
        by_hand[aa] = float(((x - m) / s - pv).abs().max())
        assert by_hand[aa] < 1e-5, by_hand
    (keys_c, keys_r, distance), dists = _dino_distances(model, pv_c, pv_r)
    (_, _, distance_aa), dists_aa = _dino_distances(model, pv_c_aa, pv_r_aa)
    tokens, width, n_layers = dino_tokens(spec), spec.dino_config["hidden_size"], spec.dino_config["num_hidden_layers"]
    assert keys_c.shape == (4, tokens, width)
    self_sim_0 = attn_cosine_sim(keys_r[0][None, None])[0]

    m64 = load_dino(spec).double()
    k64 = torch.stack([dino_keys(m64, pv_r[i:i + 1].double()) for i in range(4)])
    k64c = torch.stack([dino_keys(m64, pv_c[i:i + 1].double()) for i in range(4)])
    d64 = torch.stack([F.mse_loss(attn_cosine_sim(k64c[i][None, None]), attn_cosine_sim(k64[i][None, None]))
                       for i in range(4)])

    tensors = {
        "dino_pixel_values_content": pv_c,
        "dino_pixel_values_results_0": pv_r[:1],
        "dino_keys_content": keys_c,
        "dino_keys_results": keys_r,
        "dino_self_sim_0_corner": self_sim_0[..., :64, :64].reshape(64, 64).contiguous(),
        "dino_distances": torch.stack(dists),
        "dino_distance": distance.reshape(1),
        "dino_pixel_values_content_2_antialias": pv_c_aa[2:3],
        "dino_pixel_values_results_0_antialias": pv_r_aa[:1],
        "dino_distances_antialias": torch.stack(dists_aa),
        "dino_distance_antialias": distance_aa.reshape(1),
    }
    meta = {
        "key_site": "output of the last layer's key projection (layer index "
                    f"{n_layers - 1} of {n_layers}; the reference "
                    f"uses 11 of 12): file keys encoder.layer.{n_layers - 1}.attention.attention.key.{{weight,bias}} "
                    f"(hub layout); transformers 5.24 holds it as layers[{n_layers - 1}].attention.k_proj; its input is "
                    "layernorm_before of the block's input (checked)",
        "self_sim": f"attn_cosine_sim: K K^T / clamp(|k_i| |k_j|, min 1e-8), K = [{tokens}, {width}] incl. CLS",
        "distance": "F.mse_loss(self_sim(content_i), self_sim(result_i)) per pair (a-a, b-b, c-c, d-d); "
                    "dino_distance = sum / 4 (float32)",
        "transform_by_hand_max_abs_diff": {"no_antialias": by_hand[False], "antialias": by_hand[True]},
        "transform_note": "ToTensor (uint8/255) -> torchvision Resize((224,224), BICUBIC) on the float tensor = "
                          "F.interpolate(mode='bicubic', align_corners=False, antialias=False) in the reference's "
                          "pinned torchvision 0.16.1 (antialias 'warn' -> None -> False for tensors): PyTorch's "
                          "cubic (a = -0.75), 4 taps at any scale, indices clamped; no clamp to [0, 1], no rounding; "
                          "then Normalize(ImageNet mean/std). The *_antialias tensors use antialias=True "
                          "(torchvision >= 0.17's default): Pillow-style kernel (a = -0.5) with support widened by "
                          "the scale when downscaling",
        "pixel_value_ranges": {"content": _stats(pv_c), "results": _stats(pv_r)},
        "distances": [float(d) for d in dists],
        "distance": float(distance),
        "distances_antialias": [float(d) for d in dists_aa],
        "distance_antialias": float(distance_aa),
        "float32_vs_float64_max_rel_diff": {
            "keys_results": _max_rel(keys_r, k64),
            "distances": _max_rel(torch.stack(dists), d64),
        },
        "stats": {"keys_results": _stats(keys_r), "self_sim_0": _stats(self_sim_0)},
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------
# Inception (pytorch-fid) with hash-generated weights

M64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
SM_GAMMA = 0x9E3779B97F4A7C15
SM_M1 = 0xBF58476D1CE4E5B9
SM_M2 = 0x94D049BB133111EB


def fnv1a64(name: str) -> int:
    h = FNV_OFFSET
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * FNV_PRIME) & M64
    return h


def splitmix64_np(x: np.ndarray) -> np.ndarray:
    assert x.dtype == np.uint64
    with np.errstate(over="ignore"):
        x = x + np.uint64(SM_GAMMA)
        z = (x ^ (x >> np.uint64(30))) * np.uint64(SM_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(SM_M2)
        return z ^ (z >> np.uint64(31))


def splitmix64_int(x: int) -> int:
    x = (x + SM_GAMMA) & M64
    z = ((x ^ (x >> 30)) * SM_M1) & M64
    z = ((z ^ (z >> 27)) * SM_M2) & M64
    return z ^ (z >> 31)


def inception_range(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    if name.endswith(".conv.weight"):
        assert len(shape) == 4, (name, shape)
        fan_in = shape[1] * shape[2] * shape[3]
        a = math.sqrt(6.0 / fan_in)
        return -a, a
    if name.endswith(".bn.weight") or name.endswith(".bn.running_var"):
        return 0.9, 1.1
    if name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
        return -0.1, 0.1
    if name in ("fc.weight", "fc.bias"):
        return -0.01, 0.01
    raise AssertionError(f"no value range for Inception tensor {name} {shape}")


def inception_fill(name: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    lo, hi = inception_range(name, shape)
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name))
    z = splitmix64_np(x)
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


def inception_value_scalar(name: str, shape: tuple[int, ...], i: int) -> float:
    """One element, in plain Python integers (cross-checks the numpy version)."""
    lo, hi = inception_range(name, shape)
    z = splitmix64_int((fnv1a64(name) + i) & M64)
    u = (z >> 40) / float(1 << 24)
    return float(np.float32(lo + (hi - lo) * u))


INCEPTION_RULE = [
    "Tensors: pytorch_fid.inception.fid_inception_v3().state_dict() in its order, without "
    "*.num_batches_tracked (and any non-float tensor); inception-tensors.json lists [name, shape].",
    "fnv1a64(name): h = 0xcbf29ce484222325; for each UTF-8 byte b of name: h ^= b; h *= 0x100000001b3 (mod 2^64).",
    "splitmix64(x): x += 0x9E3779B97F4A7C15; z = x; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; "
    "z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31) (all mod 2^64).",
    "element i (flat row-major index from 0) of tensor `name`: u = (splitmix64(fnv1a64(name) + i mod 2^64) >> 40) "
    "as f64 / 2^24 (in [0, 1)); value = f32(lo + (hi - lo) * u), evaluated in f64 in that order "
    "((hi - lo) first, then * u, then + lo), rounded to nearest f32.",
    "[lo, hi]: names ending '.conv.weight' (shape [o, i, kh, kw]): a = sqrt(6.0 / (i*kh*kw)) in f64, [-a, a]; "
    "'.bn.weight' [0.9, 1.1]; '.bn.bias' [-0.1, 0.1]; '.bn.running_mean' [-0.1, 0.1]; '.bn.running_var' "
    "[0.9, 1.1]; 'fc.weight' and 'fc.bias' [-0.01, 0.01]; any other name is an error.",
    "BatchNorm eps is 0.001 (torchvision BasicConv2d); fc is not used by the 2048-d pool features.",
]


def build_inception():
    """pytorch-fid's InceptionV3([3]) whose fid_inception_v3() weights come from inception_fill."""
    import pytorch_fid.inception as pfi

    captured: dict = {}
    orig_iv3, orig_load = pfi._inception_v3, pfi.load_state_dict_from_url

    def iv3(*args, **kwargs):
        m = orig_iv3(*args, **kwargs)
        captured["inception"] = m
        return m

    def load(url, *args, **kwargs):
        captured["url"] = url
        sd = captured["inception"].state_dict()
        filled, order = {}, []
        for name, t in sd.items():
            if name.endswith("num_batches_tracked") or not t.is_floating_point():
                continue
            assert t.dtype == torch.float32, (name, t.dtype)
            filled[name] = torch.from_numpy(inception_fill(name, tuple(t.shape)))
            order.append([name, list(t.shape)])
        captured["filled"], captured["order"] = filled, order
        return dict(filled)  # a plain dict: BatchNorm fills the missing num_batches_tracked with 0

    pfi._inception_v3, pfi.load_state_dict_from_url = iv3, load
    try:
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    finally:
        pfi._inception_v3, pfi.load_state_dict_from_url = orig_iv3, orig_load
    net.eval()
    assert captured["url"] == pfi.FID_WEIGHTS_URL
    # the network's tensors are the filled ones
    inc = captured["inception"]
    for name, t in inc.state_dict().items():
        if name in captured["filled"]:
            assert torch.equal(t, captured["filled"][name]), name
    assert net.blocks[0][0] is inc.Conv2d_1a_3x3 and net.blocks[3][2] is inc.Mixed_7c
    return net, captured["order"], captured["filled"]


def to_tensor(img: Image.Image) -> torch.Tensor:
    from torchvision import transforms

    return transforms.ToTensor()(img.convert("RGB"))


@torch.no_grad()
def inception_features(net, batch: torch.Tensor) -> torch.Tensor:
    pred = net(batch)[0]
    assert pred.shape[2:] == (1, 1)
    return pred[:, :, 0, 0]


def fid_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_pytorch_fid(mu1, s1, mu2, s2) -> dict:
    """pytorch-fid's calculate_frechet_distance, with what it printed / warned and its sqrtm results recorded."""
    import types

    import pytorch_fid.fid_score as pfs
    from scipy import linalg

    calls = []

    def sqrtm(a, *args, **kwargs):
        r = linalg.sqrtm(a, *args, **kwargs)
        calls.append(r[0] if isinstance(r, tuple) else r)
        return r

    out = io.StringIO()
    orig = pfs.linalg
    pfs.linalg = types.SimpleNamespace(sqrtm=sqrtm)
    try:
        with warnings.catch_warnings(record=True) as w, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            value = pfs.calculate_frechet_distance(mu1, s1, mu2, s2, eps=FID_EPS)
    finally:
        pfs.linalg = orig
    covmean = calls[0]
    finite = bool(np.isfinite(covmean).all())
    return {
        "value": float(value),
        "printed": out.getvalue().strip(),
        "eps_offset_path_taken": len(calls) > 1,
        "warnings": sorted({f"{x.category.__name__}: {x.message}" for x in w}),
        "first_sqrtm": {
            "finite": finite,
            "complex": bool(np.iscomplexobj(covmean)),
            "max_abs_imag": float(np.max(np.abs(np.imag(covmean)))) if finite else None,
            "max_abs_imag_diagonal": float(np.max(np.abs(np.imag(np.diagonal(covmean))))) if finite else None,
            "trace_real": float(np.real(np.trace(covmean))) if finite else None,
        },
    }


def frechet_exact(mu1, s1, mu2, s2) -> dict:
    """||mu1-mu2||^2 + tr(s1) + tr(s2) - 2 tr sqrt(s1 s2), with tr sqrt(s1 s2) = sum sqrt(eig(S s2 S)),
    S = sqrt(s1) (symmetric PSD square root via eigh); eigenvalues below n * eps * max are taken as 0."""
    diff = mu1 - mu2
    w, v = np.linalg.eigh(s1)
    w = np.clip(w, 0.0, None)
    sq = (v * np.sqrt(w)) @ v.T
    m = sq @ s2 @ sq
    m = 0.5 * (m + m.T)
    ev = np.linalg.eigvalsh(m)
    tol = ev.max() * m.shape[0] * np.finfo(np.float64).eps
    ev_kept = np.where(ev > tol, ev, 0.0)
    tr = float(np.sum(np.sqrt(ev_kept)))
    value = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * tr)
    return {"value": value, "tr_sqrt": tr, "eigenvalues_kept": int((ev > tol).sum()),
            "min_eigenvalue": float(ev.min()), "threshold": float(tol)}


def frechet_svd(x1: np.ndarray, x2: np.ndarray) -> float:
    """Exact for sample covariances: tr sqrt(s1 s2) = nuclear norm of X1c X2c^T / sqrt((n1-1)(n2-1))."""
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    tr = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / math.sqrt((len(x1) - 1) * (len(x2) - 1))
    diff = x1.mean(0) - x2.mean(0)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * tr)


def fid_case(x1: np.ndarray, x2: np.ndarray) -> dict:
    mu1, s1 = fid_stats(x1)
    mu2, s2 = fid_stats(x2)
    ref = frechet_pytorch_fid(mu1, s1, mu2, s2)
    exact = frechet_exact(mu1, s1, mu2, s2)
    svd = frechet_svd(x1, x2)
    return {
        "n1": len(x1), "n2": len(x2), "dims": x1.shape[1],
        "pytorch_fid": ref,
        "exact_eigh": exact,
        "exact_svd": svd,
        "rel_diff_pytorch_fid_vs_exact_eigh": abs(ref["value"] - exact["value"]) / abs(exact["value"]),
        "rel_diff_exact_eigh_vs_svd": abs(svd - exact["value"]) / abs(exact["value"]),
    }


@torch.no_grad()
def inception_golden() -> tuple[dict, dict]:
    t0 = time.time()
    net, order, filled = build_inception()
    log(f"  inception built and filled ({len(order)} tensors, "
        f"{sum(int(np.prod(s)) for _, s in order):,} values) in {time.time() - t0:.1f}s")
    # test vectors of the rule (numpy vs plain-integer implementation)
    assert splitmix64_int(0) == 0xE220A8397B1DCDAF  # splitmix64's first output from state 0
    vectors = []
    for name, shape in (order[0], order[1], order[3], order[4], order[-2], order[-1]):
        flat = filled[name].reshape(-1)
        n = flat.numel()
        for i in sorted({0, 1, n // 2, n - 1}):
            v = inception_value_scalar(name, tuple(shape), i)
            assert np.float32(v) == flat[i].numpy(), (name, i)
            vectors.append({"name": name, "index": i, "value": v, "f32_bits": f"{np.float32(v).view(np.uint32):08x}"})
    fnv_vectors = {s: f"{fnv1a64(s):016x}" for s in ("", "a", "fc.bias", order[0][0])}
    tensor_sha = hashlib.sha256()
    for name, _ in order:
        tensor_sha.update(filled[name].numpy().astype("<f4").tobytes())

    # Ditail reference flow: PIL bicubic 224x224 squash (uint8), ToTensor, batch of all images
    r224 = torch.stack([to_tensor(squash224(p)) for p in result_paths()])
    c224 = torch.stack([to_tensor(squash224(p)) for p in content_paths()])
    t1 = time.time()
    feats_r = inception_features(net, r224)
    feats_c = inception_features(net, c224)
    # standard pytorch-fid flow: ToTensor of the original image, one image at a time
    native_c = torch.cat([inception_features(net, to_tensor(Image.open(p))[None]) for p in content_paths()])
    native_r = torch.cat([inception_features(net, to_tensor(Image.open(p))[None]) for p in result_paths()])
    single_r = torch.cat([inception_features(net, r224[i:i + 1]) for i in range(4)])
    log(f"  inception features in {time.time() - t1:.1f}s")
    net64 = net.double()
    feats_r64 = inception_features(net64, r224.double())
    feats_c64 = inception_features(net64, c224.double())
    net.float()

    for nm, f in (("results", feats_r), ("content", feats_c), ("content_native", native_c)):
        st = _stats(f)
        assert st["std"] > 1e-3 and st["max"] < 1e3 and torch.isfinite(f).all(), (nm, st)

    fr, fc = feats_r.double().numpy(), feats_c.double().numpy()
    fid_ref = fid_case(fr, fc)
    fid_nat = fid_case(native_r.double().numpy(), native_c.double().numpy())
    fid_64 = frechet_exact(*fid_stats(feats_r64.numpy()), *fid_stats(feats_c64.numpy()))["value"]

    # synthetic FID math goldens
    rng = np.random.default_rng(SYNTH_SEED)
    mix_a, mix_b = rng.normal(0, 1, (8, 8)), rng.normal(0, 1, (8, 8))
    fa = rng.normal(0, 1, (50, 8)) @ mix_a
    fb = 0.5 + 1.3 * rng.normal(0, 1, (40, 8)) @ mix_b
    fcc = rng.normal(0, 1, (5, 8)) @ mix_a
    fd = -0.3 + 0.8 * rng.normal(0, 1, (6, 8)) @ mix_b
    case_ab, case_cd = fid_case(fa, fb), fid_case(fcc, fd)

    tensors = {
        "fid_input_0": r224[:1],
        "inception_features_results": feats_r,
        "inception_features_content": feats_c,
        "inception_features_content_native": native_c,
        "inception_features_results_native": native_r,
        "fid": torch.tensor([fid_ref["pytorch_fid"]["value"]], dtype=torch.float64),
        "fid_native": torch.tensor([fid_nat["pytorch_fid"]["value"]], dtype=torch.float64),
        "fid_feats_a": torch.from_numpy(fa), "fid_feats_b": torch.from_numpy(fb),
        "fid_ab": torch.tensor([case_ab["pytorch_fid"]["value"]], dtype=torch.float64),
        "fid_feats_c": torch.from_numpy(fcc), "fid_feats_d": torch.from_numpy(fd),
        "fid_cd": torch.tensor([case_cd["pytorch_fid"]["value"]], dtype=torch.float64),
    }
    meta = {
        "inception_value_rule": INCEPTION_RULE,
        "inception_tensors": len(order),
        "inception_values": sum(int(np.prod(s)) for _, s in order),
        "inception_weights_sha256": {"what": "sha256 of all filled tensors' little-endian f32 bytes, "
                                             "concatenated in inception-tensors.json order",
                                     "value": tensor_sha.hexdigest()},
        "inception_test_vectors": {"splitmix64(0)": "e220a8397b1dcdaf", "fnv1a64": fnv_vectors,
                                   "values": vectors},
        "inception_model": "pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True) "
                           "(blocks = fid_inception_v3's Conv2d_1a..Mixed_7c + MaxPool/AdaptiveAvgPool), eval mode, "
                           "float32; input in [0, 1] -> F.interpolate(299x299, bilinear, align_corners=False, "
                           "no antialias) -> 2x - 1",
        "reference_flow": "Ditail's helper/fid_score.py: Image.open(p).convert('RGB') -> torchvision "
                          "Resize((224,224), BICUBIC) on the PIL image (= Pillow bicubic, uint8) -> ToTensor; "
                          "one batch of all 4 images",
        "native_flow": "pytorch-fid 0.3.0: ToTensor of the original image (no 224 squash), one image at a time "
                       "(sizes differ); the 299x299 bilinear resize then both up- and downscales (c: 300 wide)",
        "fid_definition": "pytorch-fid's calculate_frechet_distance(mu1, s1, mu2, s2) with mu = mean over images, "
                          "s = np.cov(features as float64, rowvar=False); 1 = results, 2 = content",
        "feature_stats": {"results": _stats(feats_r), "content": _stats(feats_c),
                          "content_native": _stats(native_c), "results_native": _stats(native_r)},
        "features_batch4_vs_single_max_abs_diff": float((feats_r - single_r).abs().max()),
        "float32_vs_float64_max_rel_diff": {"features_results": _max_rel(feats_r, feats_r64),
                                            "features_content": _max_rel(feats_c, feats_c64)},
        "fid_exact_from_float64_features": fid_64,
        "fid_reference_flow": fid_ref,
        "fid_native_flow": fid_nat,
        "synthetic": {
            "seed": SYNTH_SEED,
            "how": "numpy default_rng(seed): mix_a, mix_b = normal(8x8); a = normal(50x8) @ mix_a; "
                   "b = 0.5 + 1.3 * normal(40x8) @ mix_b; c = normal(5x8) @ mix_a; d = -0.3 + 0.8 * normal(6x8) @ "
                   "mix_b (drawn in that order); fid_ab / fid_cd = pytorch-fid's value",
            "ab": case_ab, "cd": case_cd,
        },
    }
    return tensors, meta, order


# ---------------------------------------------------------------------------------------


def write_golden(path: Path, tensors: dict) -> dict:
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous()
        assert torch.isfinite(v.double()).all(), k
        out[k] = v
    save_file(dict(sorted(out.items())), str(path))
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(out)
        for k, v in out.items():
            assert torch.equal(f.get_tensor(k), v), k
    return {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in sorted(out.items())}


def tensor_docs(spec: Spec) -> dict:
    tokens, width = dino_tokens(spec), spec.dino_config["hidden_size"]
    return {
        "clip_pixel_values_0": "CLIPProcessor (PIL backend) pixel_values of results/a.png after the reference's PIL "
                               "bicubic squash to 224x224",
        "clip_input_ids": "CLIPTokenizer ids of the 4 prompts, padding='max_length', max_length=77 "
                          f"(pad = {spec.eos_token_id})",
        "clip_attention_mask": "the tokenizer's attention_mask for clip_input_ids",
        "clip_text_embeds": "CLIPModel.get_text_features(input_ids) pooler_output: text_projection of the pooled "
                            "token (projected, not normalised)",
        "clip_image_embeds": "CLIPModel.get_image_features(pixel_values) pooler_output (projected, not normalised)",
        "clip_logits_per_text": "CLIPModel(input_ids, attention_mask, pixel_values).logits_per_text [text, image]",
        "clip_scores": "diag(logits_per_text) / 100, per (result, prompt) pair",
        "clip_score": "mean(diag(logits_per_text)) / 100 (the paper's CLIP score)",
        "clip_text_last_hidden": "text_model last_hidden_state (after final_layer_norm), no attention mask",
        "clip_vision_last_hidden": "vision_model last_hidden_state (before post_layernorm)",
        "dino_pixel_values_content": "DINO transform of the 4 content images (ToTensor, tensor bicubic resize to "
                                     "224x224 without antialiasing as torchvision 0.16.1, ImageNet Normalize)",
        "dino_pixel_values_content_2_antialias": "the same with the antialiased resize (torchvision >= 0.17), "
                                                 "content/c.png only (300x200: narrowed and widened)",
        "dino_pixel_values_results_0_antialias": "the same for results/a.png",
        "dino_distances_antialias": "dino_distances with the antialiased resize",
        "dino_distance_antialias": "mean of dino_distances_antialias",
        "dino_pixel_values_results_0": "the same for results/a.png",
        "dino_keys_content": f"last-layer key projections [{tokens} tokens incl. CLS, {width}] per content image",
        "dino_keys_results": "the same per result",
        "dino_self_sim_0_corner": "attn_cosine_sim of dino_keys_results[0], its first 64 x 64 entries",
        "dino_distances": "MSE between the content and result self-similarity matrices, per pair",
        "dino_distance": "mean of dino_distances (the paper's structure distance)",
        "fid_input_0": "ToTensor of results/a.png after the PIL bicubic 224x224 squash (what enters InceptionV3)",
        "inception_features_results": "2048-d pool features, reference flow (224 squash), results",
        "inception_features_content": "the same, content",
        "inception_features_content_native": "2048-d pool features, standard pytorch-fid flow (original size), "
                                             "content",
        "inception_features_results_native": "the same, results",
        "fid": "pytorch-fid calculate_frechet_distance(results, content), reference-flow features (float64)",
        "fid_native": "the same with the native-flow features (float64)",
        "fid_feats_a": "synthetic features [50, 8] (float64)",
        "fid_feats_b": "synthetic features [40, 8] (float64)",
        "fid_ab": "calculate_frechet_distance of (a, b) stats (float64)",
        "fid_feats_c": "synthetic features [5, 8] (rank-deficient covariance, float64)",
        "fid_feats_d": "synthetic features [6, 8] (rank-deficient covariance, float64)",
        "fid_cd": "calculate_frechet_distance of (c, d) stats (float64)",
    }


def _cos_matrix(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    x = x / x.norm(dim=-1, keepdim=True)
    return x @ x.transpose(-1, -2)


def _offdiag(m: torch.Tensor) -> dict:
    n = m.shape[-1]
    vals = m[~torch.eye(n, dtype=torch.bool)]
    return {"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max())}


@torch.no_grad()
def activation_checks(clip_model, dino_model, tensors: dict) -> dict:
    """Is the random network degenerate?  Residual-stream std per layer, how much the outputs depend
    on the input (pairwise cosines), token diversity."""
    vis = clip_model.vision_model(pixel_values=tensors["clip_pixel_values_0"], output_hidden_states=True)
    txt = clip_model.text_model(input_ids=tensors["clip_input_ids"], output_hidden_states=True)
    dino = dino_model(pixel_values=tensors["dino_pixel_values_results_0"], output_hidden_states=True)
    std = lambda hs: [round(float(h.double().std()), 4) for h in hs]  # noqa: E731
    keys_r = tensors["dino_keys_results"].double()
    keys_r = keys_r / keys_r.norm(dim=-1, keepdim=True)
    same_token = torch.einsum("itd,jtd->ijt", keys_r, keys_r).mean(-1)
    self_sim = _cos_matrix(tensors["dino_keys_results"][0])
    logits = tensors["clip_logits_per_text"].double()
    return {
        "clip_vision_hidden_std_per_layer": std(vis.hidden_states),
        "clip_vision_last_layer_token_cosine_offdiag": _offdiag(_cos_matrix(vis.hidden_states[-1][0])),
        "clip_text_hidden_std_per_layer": std(txt.hidden_states),
        "clip_image_embeds_pairwise_cosine": _offdiag(_cos_matrix(tensors["clip_image_embeds"])),
        "clip_text_embeds_pairwise_cosine": _offdiag(_cos_matrix(tensors["clip_text_embeds"])),
        "clip_logits_per_text": {"std": float(logits.std()),
                                 "std_over_images_mean_over_texts": float(logits.std(dim=1).mean()),
                                 "std_over_texts_mean_over_images": float(logits.std(dim=0).mean())},
        "dino_hidden_std_per_layer": std(dino.hidden_states),
        "dino_self_sim_0_offdiag": _offdiag(self_sim),
        "dino_keys_results_same_token_cosine_across_images": _offdiag(same_token),
    }


def models_and_goldens(spec: Spec) -> dict:
    """Build and save both models, then the clip_* and dino_* goldens from the files loaded back."""
    t0 = time.time()
    clip_info = build_clip(spec)
    dino_info = build_dino(spec)
    log(f"== models built and saved ({time.time() - t0:.1f}s): CLIP {clip_info['parameters']:,} parameters, "
        f"DINO {dino_info['parameters']:,}")

    t0 = time.time()
    clip_model = load_clip(spec)
    clip_t, clip_m = clip_golden(clip_model, spec)
    log(f"== CLIP ({time.time() - t0:.1f}s): score {clip_m['clip_score']:.6f}, pad id {clip_m['pad_token_id']}, "
        f"slow vs fast pixel values {clip_m['pixel_values_slow_vs_fast_max_abs_diff']:.3g}")

    t0 = time.time()
    dino_model = load_dino(spec)
    dino_t, dino_m = dino_golden(dino_model, spec)
    log(f"== DINO ({time.time() - t0:.1f}s): distances {[round(d, 6) for d in dino_m['distances']]}")

    tensors = {**clip_t, **dino_t}
    checks = activation_checks(clip_model, dino_model, tensors)
    del clip_model, dino_model
    log(f"   activation checks: {json.dumps(checks)}")
    log(f"   float32 vs float64 max rel diff: CLIP {json.dumps(clip_m['float32_vs_float64_max_rel_diff'])}, "
        f"DINO {json.dumps(dino_m['float32_vs_float64_max_rel_diff'])}")
    return {"tensors": tensors, "clip_info": clip_info, "clip_meta": clip_m, "dino_info": dino_info,
            "dino_meta": dino_m, "checks": checks}


def versions() -> dict:
    import PIL
    import pytorch_fid
    import safetensors
    import scipy
    import torchvision
    import transformers

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "pytorch-fid": pytorch_fid.__version__,
            "scipy": scipy.__version__, "Pillow": PIL.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__}


def common_meta(spec: Spec, images: dict, r: dict, files: dict) -> dict:
    """meta.json without the FID part."""
    tokens, width = dino_tokens(spec), spec.dino_config["hidden_size"]
    bos, eos = spec.bos_token_id, spec.eos_token_id
    return {
        "reference": "MAPS-research/Ditail src/ditail_metrics.py (+ helper/extractor.py, helper/fid_score.py)",
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "images": dict(images, prompts=dict(zip(NAMES, PROMPTS)), jpeg_quality=JPEG_QUALITY,
                       sizes="width x height"),
        "processing": {
            "clip": ["img = Image.open(result)", "img = transforms.Resize((224,224), interpolation=3)(img): Pillow "
                     "bicubic squash (antialiased), uint8",
                     "CLIPProcessor(text=prompts, images=imgs, return_tensors='pt', padding=True): pixel_values = "
                     f"(uint8/255 - mean)/std; input_ids with bos {bos} / eos {eos} / pad {eos}",
                     "CLIPModel(**inputs).logits_per_text; score = mean(diag) / 100"],
            "dino": ["x = ToTensor(Image.open(p))", "Resize((224,224), interpolation=3) on the float tensor "
                     "(bicubic; torchvision 0.16.1, pinned by the reference: antialias=False; the *_antialias "
                     "goldens: antialias=True)", "Normalize(ImageNet mean, std)",
                     f"keys = last layer's key projection, [{tokens}, {width}]",
                     "d = mse(cos_self_sim(keys_content), cos_self_sim(keys_result)); mean over pairs"],
        },
        "clip": {"model_dir": mf._rel(spec.clip_dir), "text_config": spec.clip_text,
                 "vision_config": spec.clip_vision, "projection_dim": spec.clip_proj, "logit_scale": math.log(100.0),
                 "init": r["clip_info"], "attn_implementation": "eager", **r["clip_meta"]},
        "dino": {"model_dir": mf._rel(spec.dino_dir), "config": spec.dino_config, "init": r["dino_info"],
                 "attn_implementation": "eager", "mean": DINO_MEAN, "std": DINO_STD, **r["dino_meta"]},
        "tensors": files,
    }


def finish(out: Path, t_start: float) -> None:
    log("fixture sizes:")
    total = mf.report_sizes(out)
    if mf.COLLECTED:
        log(f"warnings ({len(mf.COLLECTED)}):")
        for w in dict.fromkeys(mf.COLLECTED):
            log(f"  {w}")
    log(f"total {total:,} bytes; time {time.time() - t_start:.1f}s")


def run_tiny(t_start: float) -> None:
    spec = TINY
    if not (TOKENIZER_SRC / "vocab.json").is_file():
        sys.exit("error: tests/fixtures/models/tiny-a/tokenizer missing; run scripts/make_fixtures.py first")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    t0 = time.time()
    images = make_images()
    jpeg_decoded = torch.from_numpy(np.asarray(Image.open(IMG_DIR / "content" / "d.jpg").convert("RGB")).copy())
    log(f"== images ({time.time() - t0:.1f}s)")

    r = models_and_goldens(spec)

    t0 = time.time()
    fid_t, fid_m, order = inception_golden()
    log(f"== FID ({time.time() - t0:.1f}s): fid {fid_m['fid_reference_flow']['pytorch_fid']['value']:.6g} "
        f"(exact {fid_m['fid_reference_flow']['exact_eigh']['value']:.6g}), native "
        f"{fid_m['fid_native_flow']['pytorch_fid']['value']:.6g}")
    log(f"   features: {json.dumps(fid_m['feature_stats'])}")

    (OUT / "inception-tensors.json").write_text(
        "[\n" + ",\n".join("  " + json.dumps(e) for e in order) + "\n]\n", encoding="utf-8")

    tensors = {**r["tensors"], **fid_t, "jpeg_d_decoded": jpeg_decoded}
    docs = dict(tensor_docs(spec),
                jpeg_d_decoded="content/d.jpg as Pillow (libjpeg-turbo) decodes it, uint8 [H, W, 3]")
    files = write_golden(OUT / "golden.safetensors", tensors)
    for k in files:
        files[k]["what"] = docs[k]

    meta = common_meta(spec, images, r, files)
    meta["processing"]["fid"] = [
        "reference: Image.open(p).convert('RGB') -> Resize((224,224), BICUBIC) (Pillow) -> ToTensor",
        "InceptionV3: bilinear 299x299 (align_corners=False) -> 2x-1 -> pool3 2048-d",
        "mu, sigma = mean, np.cov(rowvar=False) in float64; pytorch-fid calculate_frechet_distance"]
    meta["fid"] = fid_m
    meta["tolerance"] = ("suggested: compare float32 tensors with max|a-b| <= 1e-4 * max|b| (float32_vs_float64 "
                         "entries show the float32 rounding noise); float64 FID values to 1e-9 relative, except where "
                         "pytorch-fid's sqrtm is itself inaccurate (see fid.*.rel_diff_pytorch_fid_vs_exact_eigh)")
    mf.write_json(OUT / "meta.json", meta)
    finish(OUT, t_start)


def committed_images() -> dict:
    """The committed images/ and prompts.txt (full-size mode reads them, never rewrites them)."""
    lines = (IMG_DIR / "prompts.txt").read_text(encoding="utf-8").splitlines()
    assert [ln.split("\t", 1) for ln in lines] == [[n, p] for n, p in zip(NAMES, PROMPTS)], \
        "tests/fixtures/eval/images/prompts.txt differs from PROMPTS"
    info = {"content": {}, "results": {}}
    for (fname, w, h), name in zip(CONTENT, NAMES):
        for kind, f, size in (("content", fname, (w, h)), ("results", f"{name}.png", (RESULT_SIZE, RESULT_SIZE))):
            with Image.open(IMG_DIR / kind / f) as im:
                assert im.size == size and im.mode == "RGB", (kind, f, im.size, im.mode)
                info[kind][f] = {"width": im.size[0], "height": im.size[1], "mode": im.mode}
    return info


def run_full(outdir: Path, t_start: float) -> None:
    spec = full_spec(outdir.resolve())
    for src, _ in spec.tokenizer_files:
        if not src.is_file():
            sys.exit(f"error: {mf._rel(src)} missing (models/clip: scripts/convert_clip_vocab.py; "
                     "tiny-a tokenizer: scripts/make_fixtures.py)")
    images = committed_images()
    if spec.out.exists():
        shutil.rmtree(spec.out)
    spec.out.mkdir(parents=True)

    r = models_and_goldens(spec)
    docs = tensor_docs(spec)
    files = write_golden(spec.out / "golden.safetensors", r["tensors"])
    for k in files:
        files[k]["what"] = docs[k]
    meta = common_meta(spec, images, r, files)
    meta["images"]["dir"] = mf._rel(IMG_DIR)
    meta["full_size"] = ("random-weight models with the real configs of openai/clip-vit-large-patch14 and "
                         "facebook/dino-vitb8; the clip_* / dino_* tensors of tests/fixtures/eval/golden.safetensors "
                         "(same names, same meaning), computed by the same code on the committed images and prompts; "
                         "the tokenizer is the real CLIP one (models/clip), so the ids differ from the tiny fixtures'. "
                         "No Inception / FID part: the tiny fixtures' InceptionV3 is already full-size.")
    meta["activation_checks"] = r["checks"]
    meta["tolerance"] = ("suggested: compare float32 tensors with max|a-b| <= 1e-4 * max|b|; the "
                         "float32_vs_float64_max_rel_diff entries show the float32 rounding noise of these deeper "
                         "networks")
    mf.write_json(spec.out / "meta.json", meta)
    finish(spec.out, t_start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", type=Path, metavar="OUTDIR",
                    help="random-weight CLIP ViT-L/14 and DINO ViT-B/8 with the real configs and their golden "
                         "tensors in OUTDIR/eval (not committed)")
    args = ap.parse_args()
    mf._install_log_capture()
    t_start = time.time()
    v = versions()
    log(f"torch {v['torch']}, torchvision {v['torchvision']}, transformers {v['transformers']}, "
        f"pytorch-fid {v['pytorch-fid']}, scipy {v['scipy']}, Pillow {v['Pillow']}, threads {torch.get_num_threads()}")
    if args.full_size is None:
        run_tiny(t_start)
    else:
        run_full(args.full_size, t_start)


if __name__ == "__main__":
    main()
