#!/usr/bin/env python3
"""Generate ditail's golden-tensor test fixtures (tests/fixtures/) with diffusers on CPU.

Small mode (default) writes, deterministically (fixed seeds; a rerun gives identical
files):

  tests/fixtures/tokenizer.json          CLIP tokenizer ids for tricky prompts (slow and
                                         fast Hugging Face tokenizers; see tokenizer_ids.py)
  tests/fixtures/models/tiny-a/          random-weight diffusers folder, SD1.5 block
                                         structure, tiny widths, f32 safetensors, and a
                                         1000-entry CLIP BPE in tokenizer/ (ids < vocab_size)
  tests/fixtures/models/tiny-b/          same, other widths / per-block head counts,
                                         saved only as the fp16 variant
  tests/fixtures/golden/<model>/         text.safetensors, vae.safetensors,
                                         unet_<case>.safetensors, meta.json

Golden outputs are computed in float32 from the model files *loaded back from disk*
(tiny-b: the fp16 files upcast to f32), so both sides see the same rounded weights.

Full-size mode (``--full-size OUTDIR``) builds the real SD1.5 configs with random
weights, saves them to OUTDIR/model (f32, plus tokenizer/) and writes golden files of the
same format to OUTDIR/golden.  About 4.3 GB; not committed.

Usage:
  python scripts/make_fixtures.py [--tokenizer-python PY]
  python scripts/make_fixtures.py --full-size fixtures-full

The slow (pure-Python) CLIPTokenizer only exists in transformers < 5, which cannot share
an environment with diffusers 0.42 (huggingface-hub >= 1.32 vs < 1.0), so the tokenizer
ids come from scripts/tokenizer_ids.py run under a second interpreter (``--tokenizer-python``,
default $DITAIL_TOKENIZER_PYTHON or .venv-tok/bin/python), set up from
scripts/requirements-tokenizer.txt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never touch the hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Idle OpenMP threads sleep instead of spinning: with 2 threads on a busy 2-core machine,
# spinning made forward passes ~50x slower.  Does not change any result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.modules["ftfy"] = None  # keep ftfy out of every tokenizer (see tokenizer_ids.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
FIXTURES = REPO / "tests" / "fixtures"
CLIP_DIR = REPO / "models" / "clip"
TOLERANCE = "compare with max|a-b| <= 1e-4 * max|b|"
MAX_LEN = 77

# ---------------------------------------------------------------------------------------
# warnings from diffusers / transformers are collected and printed at the end

COLLECTED: list[str] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        COLLECTED.append(f"[{record.name}] {record.levelname}: {record.getMessage()}")


def _install_log_capture() -> None:
    h = _Collect(level=logging.WARNING)
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(h)
    orig = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        COLLECTED.append(f"[python warning] {category.__name__}: {message} ({Path(filename).name}:{lineno})")
        orig(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------
# tokenizer fixture

LONG_PROMPT = (
    "masterpiece, best quality, ultra-detailed, 8k wallpaper, a breathtaking panoramic view of an "
    "ancient floating city above the clouds at golden hour, intricate gothic spires, waterfalls "
    "pouring off the edges into the mist, flocks of birds, airships with brass propellers, warm "
    "volumetric light rays, cinematic composition, sharp focus, highly detailed stonework, by a "
    "famous concept artist, trending on artstation, octane render, depth of field, vivid colors"
)

PROMPTS: list[str] = [
    "a photo of a cat",
    "a photo of an astronaut riding a horse on mars",
    "A Photo Of A CAT",
    "HELLO WORLD, THIS IS LOUD",
    "wow!!! really... ?!?! ---> ok",
    "!!!",
    "...",
    "a,b;c",
    "(masterpiece:1.2), [bad]",
    "((best quality)), (detailed eyes:1.4), [[lowres]], {extra}",
    "it's a cat, they'll see, I'M HERE, we'd've, you're",
    "'s 't 're 've 'm 'll 'd",
    "1024x768 3.5 0.125 2024-01-31 100%",
    "café naïve Ångström résumé",
    "Straße STRASSE",
    "日本語のテキスト",
    "中文",
    "한국어 텍스트",
    "🍸🐱‍👤",
    "🇯🇵🇺🇸🏳️‍🌈",
    "tabs\tand\nnewlines\r\nand   multiple    spaces",
    "   leading and trailing whitespace   ",
    "",
    LONG_PROMPT,
    "salt &amp; pepper &lt;3 &quot;quoted&quot;",
    "zero\u200bwidth space and a\u200db joiner",
    "null\x00byte and bell\x07 and del\x7f",
    "cafe\u0301 vs caf\u00e9",
    "x-ray, e-mail, state-of-the-art, $100 #hashtag @user",
    "<|endoftext|> in the middle <|startoftext|>",
    "\u00a0non-breaking\u00a0space",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01ligature",
    "İstanbul ΣΊΣΥΦΟΣ",
    "supercalifragilisticexpialidocious",
]


def tokenizer_fixture(tok_python: str | None) -> dict:
    """Slow + fast ids from transformers < 5 (subprocess), checked against transformers 5."""
    prompts_json = json.dumps(PROMPTS)
    helper = SCRIPTS / "tokenizer_ids.py"

    # In this process (transformers of requirements.txt, the one diffusers 0.42 uses).
    here = subprocess.run(
        [sys.executable, str(helper), "--vocab-dir", str(CLIP_DIR)],
        input=prompts_json, capture_output=True, text=True, check=True,
    )
    cur = json.loads(here.stdout)

    ref = cur
    if cur["slow"] is None:
        if not tok_python or not Path(tok_python).exists():
            sys.exit(
                f"error: transformers {cur['transformers']} has no pure-Python CLIPTokenizer; pass "
                "--tokenizer-python (a python with scripts/requirements-tokenizer.txt installed)"
            )
        out = subprocess.run(
            [tok_python, str(helper), "--vocab-dir", str(CLIP_DIR)],
            input=prompts_json, capture_output=True, text=True, check=True,
        )
        ref = json.loads(out.stdout)
        assert ref["slow"] is not None, "the tokenizer python has transformers >= 5 too"
    assert not ref["ftfy"], "ftfy was importable while tokenizing"

    cases = []
    slow_fast_diff = []
    fast_vs_current = []
    for i, p in enumerate(PROMPTS):
        ids, fast = ref["slow"][i], ref["fast"][i]
        cases.append({"prompt": p, "ids": ids, "fast_ids": fast})
        if ids != fast:
            slow_fast_diff.append(i)
        if cur is not ref and cur["fast"][i] != fast:
            fast_vs_current.append(i)

    doc = {
        "ftfy": False,
        "transformers": ref["transformers"],
        "tokenizers": ref["tokenizers"],
        "ids_from": f"{ref['slow_class']} (pure Python, transformers {ref['transformers']}, ftfy not importable)",
        "fast_ids_from": f"{ref['fast_class']} converted from the same vocab.json/merges.txt "
        f"(tokenizers {ref['tokenizers']})",
        "call": 'tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]',
        "vocab": "models/clip/vocab.json + models/clip/merges.txt",
        "pad_id": 49407,
        "cross_check": {
            "transformers": cur["transformers"],
            "tokenizers": cur["tokenizers"],
            "class": cur["fast_class"],
            "prompts_differing_from_fast_ids": [PROMPTS[i] for i in fast_vs_current],
        }
        if cur is not ref
        else None,
        "prompts_where_slow_and_fast_differ": [PROMPTS[i] for i in slow_fast_diff],
        "cases": cases,
    }
    path = FIXTURES / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dump_tokenizer_json(doc), encoding="utf-8")
    log(f"wrote {path.relative_to(REPO)}: {len(cases)} prompts")

    # Human-readable report of the differences.
    vocab = json.loads((CLIP_DIR / "vocab.json").read_text(encoding="utf-8"))
    inv = {v: k for k, v in vocab.items()}

    def toks(ids: list[int]) -> list[str]:
        body = [i for i in ids[1:] if i != 49407]
        return [inv[i] for i in body]

    log(f"slow vs fast CLIPTokenizer: {len(slow_fast_diff)} of {len(PROMPTS)} prompts differ")
    for i in slow_fast_diff:
        c = cases[i]
        log(f"  {c['prompt']!r}")
        log(f"    slow: {toks(c['ids'])}")
        log(f"    fast: {toks(c['fast_ids'])}")
    if cur is not ref:
        log(
            f"transformers {cur['transformers']} CLIPTokenizer vs transformers {ref['transformers']} "
            f"CLIPTokenizerFast: {len(fast_vs_current)} prompts differ"
        )
        for i in fast_vs_current:
            log(f"  {PROMPTS[i]!r}: {toks(cur['fast'][i])} vs {toks(ref['fast'][i])}")
    return doc


def _dump_tokenizer_json(doc: dict) -> str:
    """JSON with one case per line (ASCII only, so invisible characters stay visible)."""
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": [')
    cs = doc["cases"]
    for i, c in enumerate(cs):
        lines.append("    " + json.dumps(c) + ("," if i + 1 < len(cs) else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# model configs

DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]


def unet_config(block_out_channels, attention_head_dim, norm_num_groups, cross_attention_dim, sample_size):
    # The values of SD1.5's unet/config.json, with the widths swapped.
    return dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=list(DOWN),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=list(UP),
        only_cross_attention=False,
        block_out_channels=list(block_out_channels),
        layers_per_block=2,
        downsample_padding=1,
        mid_block_scale_factor=1,
        act_fn="silu",
        norm_num_groups=norm_num_groups,
        norm_eps=1e-5,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        use_linear_projection=False,
    )


def vae_config(block_out_channels, norm_num_groups, sample_size):
    # SD1.5's vae/config.json with the widths swapped.
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=list(block_out_channels),
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def text_config(hidden, intermediate, layers, heads, vocab, projection_dim, special_ids=(1, 0, 2)):
    # SD1.5's text_encoder/config.json (CLIP ViT-L/14 text tower) with the widths swapped.
    # special_ids = (pad, bos, eos); SD1.5's config has the legacy (1, 0, 2).  They only
    # steer the pooled output (first eos position), which ditail does not use.
    pad_id, bos_id, eos_id = special_ids
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        projection_dim=projection_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )


SCHEDULER_CONFIG = {
    # SD1.5's scheduler/scheduler_config.json (PNDM, DDIM-compatible keys).
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

TINY = {
    "tiny-a": dict(
        unet=unet_config((16, 32, 32, 32), 4, 16, 32, sample_size=8),
        vae=vae_config((8, 16, 16, 16), 4, sample_size=32),
        text=text_config(32, 64, 2, 4, 1000, 32, special_ids=(999, 998, 999)),
        fp16=False,
        tokenizer="tiny",
        seed=1000,
        image_hw=(32, 32),
        timestep_dtype=torch.float32,
        cases=[("square", (8, 8), 981), ("wide", (8, 16), 501), ("odd", (9, 13), 1)],
    ),
    "tiny-b": dict(
        unet=unet_config((16, 32, 48, 48), [2, 4, 4, 4], 8, 48, sample_size=16),
        vae=vae_config((8, 16, 32, 32), 4, sample_size=40),
        text=text_config(48, 96, 3, 6, 1000, 48, special_ids=(999, 998, 999)),
        fp16=True,
        tokenizer="tiny",
        seed=2000,
        image_hw=(24, 40),
        timestep_dtype=torch.int64,
        cases=[("square", (16, 16), 761), ("tall", (24, 8), 21), ("odd", (7, 11), 981)],
    ),
}

FULL = dict(
    unet=unet_config((320, 640, 1280, 1280), 8, 32, 768, sample_size=64),
    vae=vae_config((128, 256, 512, 512), 32, sample_size=512),
    text=text_config(768, 3072, 12, 12, 49408, 768),
    seed=3000,
)

# Ditail's injection sites: (up block, attention index) of the self-attention layers.
ATTN_SITES = [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]
RESNET_SITE = "site.up_blocks.1.resnets.1"


def check_unet_config(cfg: dict) -> list[str]:
    """Head dims must divide and GroupNorm groups must divide every normalised width."""
    notes = []
    boc = cfg["block_out_channels"]
    g = cfg["norm_num_groups"]
    heads = cfg["attention_head_dim"]
    heads = [heads] * len(boc) if isinstance(heads, int) else list(heads)
    assert len(heads) == len(boc)
    for i, (c, h) in enumerate(zip(boc, heads)):
        if cfg["down_block_types"][i].startswith("CrossAttn"):
            assert c % h == 0, f"down block {i}: {c} channels, {h} heads"
            notes.append(f"down_blocks.{i}: {c} ch, {h} heads x {c // h}")
    assert boc[-1] % heads[-1] == 0
    notes.append(f"mid_block: {boc[-1]} ch, {heads[-1]} heads x {boc[-1] // heads[-1]}")
    rev_c, rev_h = boc[::-1], heads[::-1]
    for i, t in enumerate(cfg["up_block_types"]):
        if t.startswith("CrossAttn"):
            assert rev_c[i] % rev_h[i] == 0
            notes.append(f"up_blocks.{i}: {rev_c[i]} ch, {rev_h[i]} heads x {rev_c[i] // rev_h[i]}")
    # every width a GroupNorm sees: block widths, and the up-block resnet inputs (concat with skips)
    widths = set(boc)
    prev = boc[-1]
    for i in range(len(boc)):
        out_c = rev_c[i]
        skip_in = rev_c[min(i + 1, len(boc) - 1)]
        for j in range(cfg["layers_per_block"] + 1):
            skip = skip_in if j == cfg["layers_per_block"] else out_c
            res_in = prev if j == 0 else out_c
            widths.add(res_in + skip)
        prev = out_c
    for w in sorted(widths):
        assert w % g == 0, f"GroupNorm({g}) does not divide {w}"
    notes.append(f"GroupNorm({g}) divides widths {sorted(widths)}")
    return notes


def check_vae_config(cfg: dict) -> list[str]:
    g = cfg["norm_num_groups"]
    for c in cfg["block_out_channels"]:
        assert c % g == 0, f"VAE GroupNorm({g}) does not divide {c}"
    return [f"VAE GroupNorm({g}) divides {cfg['block_out_channels']}"]


def check_text_config(cfg: dict) -> list[str]:
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    return [f"text: {cfg['num_attention_heads']} heads x {cfg['hidden_size'] // cfg['num_attention_heads']}"]


# ---------------------------------------------------------------------------------------
# building and saving


@torch.no_grad()
def perturb(model: torch.nn.Module, gen: torch.Generator) -> dict:
    """Norm gammas -> 1 + 0.1 randn, betas -> 0.1 randn; no all-zero parameter left."""
    n_norm = 0
    for m in model.modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if m.weight is not None:
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=gen))
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            n_norm += 1
    zero = []
    for name, p in model.named_parameters():
        if not bool(p.any()):
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            zero.append(name)
    for name, p in model.named_parameters():
        assert bool(p.any()), name
        assert torch.isfinite(p).all(), name
    return {"norms_perturbed": n_norm, "zero_params_refilled": len(zero), "zero_param_examples": zero[:6]}


def build_models(spec: dict, seed: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    gen = torch.Generator().manual_seed(seed + 7)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**spec["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**spec["vae"])
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    info = {}
    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        m.eval()
        info[name] = perturb(m, gen)
        info[name]["parameters"] = sum(p.numel() for p in m.parameters())
    return unet, vae, text, info


def model_index(with_tokenizer: bool) -> dict:
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"] if with_tokenizer else [None, None],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


TINY_VOCAB = 1000
TINY_MERGES = TINY_VOCAB - 2 * 256 - 2  # 486: 256 bytes + 256 "</w>" bytes + merges + 2 specials
TINY_BOS, TINY_EOS = TINY_VOCAB - 2, TINY_VOCAB - 1  # 998, 999 (pad = eos)


def tiny_tokenizer_files() -> tuple[bytes, bytes]:
    """vocab.json / merges.txt of a 1000-entry CLIP BPE for the tiny text encoders.

    Cut from models/clip: the 256 byte-level characters (ids 0..255), their 256 "</w>"
    variants (256..511), the first 486 merges and their merged tokens (512..997, in the
    same order as in CLIP's vocab), then <|startoftext|> = 998 and <|endoftext|> = 999.
    Written in the format of models/clip (one-line JSON, sorted keys, raw UTF-8;
    "#version: 0.2" header, one merge per line, final newline).
    """
    vocab = json.loads((CLIP_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (CLIP_DIR / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2", lines[0]
    merges = [tuple(m.split(" ")) for m in lines[1:1 + TINY_MERGES]]
    keep = {tok: i for tok, i in vocab.items() if i < 512 + TINY_MERGES}
    assert len(keep) == 512 + TINY_MERGES
    for i, (a, b) in enumerate(merges):
        assert vocab[a + b] == 512 + i, (a, b)  # CLIP's merged tokens follow the merge order
        assert a in keep and b in keep
    keep["<|startoftext|>"] = TINY_BOS
    keep["<|endoftext|>"] = TINY_EOS
    assert sorted(keep.values()) == list(range(TINY_VOCAB))
    vocab_bytes = json.dumps(keep, sort_keys=True, ensure_ascii=False).encode("utf-8")
    merges_bytes = ("\n".join(["#version: 0.2"] + [f"{a} {b}" for a, b in merges]) + "\n").encode("utf-8")
    return vocab_bytes, merges_bytes


def save_model_dir(out: Path, unet, vae, text, fp16: bool, tokenizer: str | None) -> None:
    """tokenizer: None (no tokenizer/), "clip" (the full CLIP files) or "tiny" (tiny_tokenizer_files)."""
    import diffusers

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    variant = "fp16" if fp16 else None
    if fp16:
        # .half() rather than .to(torch.float16): diffusers' .to() warns about
        # _keep_in_fp32_modules, which is empty for these classes.
        unet, vae, text = unet.half(), vae.half(), text.half()
    unet.save_pretrained(out / "unet", safe_serialization=True, variant=variant)
    vae.save_pretrained(out / "vae", safe_serialization=True, variant=variant)
    text.save_pretrained(out / "text_encoder", safe_serialization=True, variant=variant)
    _canonical_text_encoder_keys(out / "text_encoder" / ("model.fp16.safetensors" if fp16 else "model.safetensors"))
    sched = dict(SCHEDULER_CONFIG, _diffusers_version=diffusers.__version__)
    write_json(out / "scheduler" / "scheduler_config.json", sched)
    write_json(out / "model_index.json", model_index(tokenizer is not None))
    if tokenizer is not None:
        tok = out / "tokenizer"
        tok.mkdir()
        if tokenizer == "clip":
            shutil.copyfile(CLIP_DIR / "vocab.json", tok / "vocab.json")
            shutil.copyfile(CLIP_DIR / "merges.txt", tok / "merges.txt")
        elif tokenizer == "tiny":
            vocab_bytes, merges_bytes = tiny_tokenizer_files()
            (tok / "vocab.json").write_bytes(vocab_bytes)
            (tok / "merges.txt").write_bytes(merges_bytes)
        else:
            raise ValueError(tokenizer)
        special = {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        }
        write_json(tok / "special_tokens_map.json", special)
        write_json(
            tok / "tokenizer_config.json",
            dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
                 add_prefix_space=False, errors="replace"),
        )
    # Files expected on disk.
    suffix = ".fp16.safetensors" if fp16 else ".safetensors"
    for f in (f"unet/diffusion_pytorch_model{suffix}", f"vae/diffusion_pytorch_model{suffix}",
              f"text_encoder/model{suffix}"):
        assert (out / f).is_file(), f"missing {f}"
    stray = [p.name for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt")]
    assert not stray, stray


def _canonical_text_encoder_keys(path: Path) -> None:
    """Rewrite the CLIPTextModel weights with SD1.5's key names (`text_model.` prefix).

    transformers 5 keeps CLIPTextModel's tower unwrapped and, for a model built from scratch,
    saves keys without the `text_model.` prefix that every SD1.5 checkpoint has (it strips
    the prefix again when loading).  Rewrite the file so the fixture has the real layout.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if all(k.startswith("text_model.") for k in tensors):
        return
    assert not any(k.startswith("text_model.") for k in tensors)
    tensors = {"text_model." + k: v.contiguous() for k, v in tensors.items()}
    save_file(dict(sorted(tensors.items())), str(path), metadata=meta or {"format": "pt"})


def load_models(out: Path, fp16: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    variant = "fp16" if fp16 else None
    # `dtype=` is diffusers 0.42's name for the older `torch_dtype=` (same meaning).
    unet = UNet2DConditionModel.from_pretrained(out, subfolder="unet", dtype=torch.float32, variant=variant)
    vae = AutoencoderKL.from_pretrained(out, subfolder="vae", dtype=torch.float32, variant=variant)
    text = CLIPTextModel.from_pretrained(out / "text_encoder", dtype=torch.float32, variant=variant)
    for m in (unet, vae, text):
        m.eval()
        for n, p in m.named_parameters():
            assert p.dtype == torch.float32, (n, p.dtype)
    return unet, vae, text


@torch.no_grad()
def check_roundtrip(saved: torch.nn.Module, loaded: torch.nn.Module, fp16: bool, name: str) -> None:
    a, b = saved.state_dict(), loaded.state_dict()
    ka = {k for k in a if not k.endswith("position_ids")}
    kb = {k for k in b if not k.endswith("position_ids")}
    assert ka == kb, f"{name}: key mismatch {sorted(ka ^ kb)[:5]}"
    for k in ka:
        want = a[k].to(torch.float16).to(torch.float32) if fp16 else a[k].to(torch.float32)
        assert torch.equal(want, b[k]), f"{name}.{k} changed on the way through the files"


def check_processors(unet) -> list[str]:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    kinds = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    for p in unet.attn_processors.values():
        assert type(p) in (AttnProcessor, AttnProcessor2_0), type(p)
    return kinds


# ---------------------------------------------------------------------------------------
# golden files


def _randn(shape, seed) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def write_golden(path: Path, inputs: dict, outputs: dict) -> dict:
    tensors = {}
    for k, v in {**inputs, **outputs}.items():
        assert k not in tensors
        tensors[k] = v.detach().to("cpu").contiguous()
        assert torch.isfinite(tensors[k].float()).all(), f"{path.name}: {k} not finite"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    # Inputs must come back bit-exact, with their dtype (Rust feeds them as stored).
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tensors)
        for k, v in tensors.items():
            back = f.get_tensor(k)
            assert back.dtype == v.dtype and back.shape == v.shape and torch.equal(back, v), k
    return {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in tensors.items()}


@torch.no_grad()
def golden_text(text, input_ids: torch.Tensor) -> dict:
    out = text(input_ids=input_ids, output_hidden_states=True)
    last = out.last_hidden_state
    hs = out.hidden_states
    assert len(hs) == text.config.num_hidden_layers + 1
    # transformers < 5 wraps the tower in `.text_model`; 5.x does not
    final_ln = getattr(text, "text_model", text).final_layer_norm
    # sanity: last_hidden_state is the final layer norm of the last layer's output
    assert torch.allclose(final_ln(hs[-1]), last, atol=1e-5, rtol=0)
    pen = final_ln(hs[-2])
    return {"text_embeddings": last, "text_embeddings_penultimate": pen}


@torch.no_grad()
def golden_vae(vae, image: torch.Tensor, latents: torch.Tensor) -> dict:
    mean = vae.encode(image).latent_dist.mean
    decoded = vae.decode(latents).sample
    return {"posterior_mean": mean, "decoded": decoded}


@torch.no_grad()
def golden_unet(unet, sample, timestep, ehs) -> dict:
    # Reference pass without hooks, then the pass with hooks: the hooks must not change anything.
    plain = unet(sample, timestep, encoder_hidden_states=ehs).sample
    store: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    handles = []

    def grab(key):
        def hook(_module, _inputs, output):
            store[key] = output.detach().clone()
            calls[key] = calls.get(key, 0) + 1
            # returning None leaves the output untouched

        return hook

    handles.append(unet.up_blocks[1].resnets[1].conv2.register_forward_hook(grab(RESNET_SITE)))
    for i, j in ATTN_SITES:
        attn1 = unet.up_blocks[i].attentions[j].transformer_blocks[0].attn1
        assert not attn1.is_cross_attention
        handles.append(attn1.to_q.register_forward_hook(grab(f"site.up_blocks.{i}.attentions.{j}.q")))
        handles.append(attn1.to_k.register_forward_hook(grab(f"site.up_blocks.{i}.attentions.{j}.k")))
    try:
        hooked = unet(sample, timestep, encoder_hidden_states=ehs).sample
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(plain, hooked), "forward hooks changed the output"
    assert len(store) == 1 + 2 * len(ATTN_SITES) and all(c == 1 for c in calls.values()), calls

    b = sample.shape[0]
    for i, j in ATTN_SITES:
        q = store[f"site.up_blocks.{i}.attentions.{j}.q"]
        k = store[f"site.up_blocks.{i}.attentions.{j}.k"]
        assert q.dim() == 3 and q.shape[0] == b and q.shape == k.shape, q.shape
    r = store[RESNET_SITE]
    assert r.dim() == 4 and r.shape[0] == b
    return {"noise_pred": plain, **dict(sorted(store.items()))}


def run_model(name: str, spec: dict, models_root: Path, golden_root: Path, text_ids=None,
              full=False) -> dict:
    t0 = time.time()
    notes = check_unet_config(spec["unet"]) + check_vae_config(spec["vae"]) + check_text_config(spec["text"])
    for n in notes:
        log(f"  [{name}] {n}")
    fp16 = spec.get("fp16", False)
    seed = spec["seed"]

    unet, vae, text, init_info = build_models(spec, seed)
    log(f"  [{name}] built in {time.time() - t0:.1f}s: "
        + ", ".join(f"{k} {v['parameters']:,} params" for k, v in init_info.items()))
    t1 = time.time()
    mdir = models_root
    save_model_dir(mdir, unet, vae, text, fp16=fp16, tokenizer=spec.get("tokenizer"))
    log(f"  [{name}] saved {mdir} in {time.time() - t1:.1f}s")

    t1 = time.time()
    l_unet, l_vae, l_text = load_models(mdir, fp16)
    for a, b, n in ((unet, l_unet, "unet"), (vae, l_vae, "vae"), (text, l_text, "text_encoder")):
        check_roundtrip(a, b, fp16, n)
    del unet, vae, text
    processors = check_processors(l_unet)
    log(f"  [{name}] loaded back in {time.time() - t1:.1f}s (f32; weights identical to the "
        f"{'f16-rounded ' if fp16 else ''}saved ones); attention processors: {processors}")

    gdir = golden_root
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    files = {}
    timings = {}
    text_hidden = spec["text"]["hidden_size"]
    cross = spec["unet"]["cross_attention_dim"]

    # text encoder
    t1 = time.time()
    if text_ids is None:
        text_ids = torch.randint(0, spec["text"]["vocab_size"], (2, MAX_LEN),
                                 generator=torch.Generator().manual_seed(seed + 10), dtype=torch.int64)
    out = golden_text(l_text, text_ids)
    assert out["text_embeddings"].shape == (text_ids.shape[0], MAX_LEN, text_hidden)
    files["text.safetensors"] = write_golden(gdir / "text.safetensors", {"input_ids": text_ids}, out)
    timings["text"] = time.time() - t1

    # VAE
    t1 = time.time()
    ih, iw = spec["image_hw"]
    bsz = spec.get("vae_batch", 2)
    g = torch.Generator().manual_seed(seed + 20)
    image = torch.rand((bsz, 3, ih, iw), generator=g, dtype=torch.float32) * 2.0 - 1.0
    lh, lw = spec.get("latent_hw", (ih // 8, iw // 8))
    latents = _randn((bsz, 4, lh, lw), seed + 21)
    out = golden_vae(l_vae, image, latents)
    assert out["posterior_mean"].shape == (bsz, 4, ih // 8, iw // 8), out["posterior_mean"].shape
    assert out["decoded"].shape == (bsz, 3, lh * 8, lw * 8)
    files["vae.safetensors"] = write_golden(gdir / "vae.safetensors", {"image": image, "latents": latents}, out)
    timings["vae"] = time.time() - t1

    # U-Net
    cases_meta = []
    for ci, (case, (h, w), t) in enumerate(spec["cases"]):
        t1 = time.time()
        sample = _randn((3, 4, h, w), seed + 100 + ci)
        ehs = _randn((3, MAX_LEN, cross), seed + 200 + ci)
        timestep = torch.tensor([t], dtype=spec["timestep_dtype"])
        out = golden_unet(l_unet, sample, timestep, ehs)
        assert out["noise_pred"].shape == sample.shape
        fname = f"unet_{case}.safetensors"
        files[fname] = write_golden(
            gdir / fname, {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs}, out
        )
        timings[f"unet_{case}"] = time.time() - t1
        cases_meta.append({"case": case, "file": fname, "latent_hw": [h, w], "timestep": t,
                           "timestep_dtype": str(timestep.dtype).replace("torch.", "")})
        log(f"  [{name}] unet {case} {h}x{w} t={t}: |noise_pred|max={out['noise_pred'].abs().max():.4g} "
            f"({timings[f'unet_{case}']:.1f}s)")

    import diffusers
    import safetensors
    import transformers

    model_files = sorted(p for p in mdir.rglob("*") if p.is_file())
    meta = {
        "model": name,
        "model_dir": _rel(mdir),
        "weights_dtype_on_disk": "float16 (variant fp16)" if fp16 else "float32",
        "compute_dtype": "float32",
        "tolerance": TOLERANCE,
        "seed": seed,
        "config": {"unet": spec["unet"], "vae": spec["vae"], "text_encoder": spec["text"],
                   "scheduler": SCHEDULER_CONFIG},
        "config_checks": notes,
        "init": {"norm_perturbation": "GroupNorm/LayerNorm weight = 1 + 0.1*randn, bias = 0.1*randn; "
                                      "all-zero parameters refilled with 0.02*randn",
                 **init_info},
        "attention_processors": processors,
        "text": {"input_ids": "random ids in [0, vocab_size)" if not full else "CLIP tokenizer ids",
                 "text_embeddings": "last_hidden_state (after final_layer_norm)",
                 "text_embeddings_penultimate": "text_model.final_layer_norm(hidden_states[-2])"},
        "vae": {"image": f"uniform in [-1, 1], {ih}x{iw}",
                "posterior_mean": "vae.encode(image).latent_dist.mean (no scaling factor)",
                "latents": "randn", "decoded": "vae.decode(latents).sample (no scaling factor)"},
        "unet_cases": cases_meta,
        "sites": {
            RESNET_SITE: "output of up_blocks[1].resnets[1].conv2 (residual branch, before the shortcut add)",
            "site.up_blocks.{i}.attentions.{j}.q/.k": "outputs of transformer_blocks[0].attn1.to_q / .to_k, "
            "[batch, tokens, inner_dim], token = row*w + col",
            "attention_sites": [f"up_blocks.{i}.attentions.{j}" for i, j in ATTN_SITES],
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "golden_files": files,
        "model_files": {_rel(p, mdir): p.stat().st_size for p in model_files},
    }  # no timings in here: a rerun must reproduce every file byte for byte
    write_json(gdir / "meta.json", meta)
    log(f"  [{name}] golden timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    log(f"  [{name}] done in {time.time() - t0:.1f}s")
    return meta


def _rel(p: Path, base: Path = REPO) -> str:
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def pipeline_smoke_test(mdir: Path, fp16: bool, tokenizer: str) -> None:
    """The folder must load as a diffusers StableDiffusionPipeline, with its own tokenizer/.

    tokenizer "clip": the full CLIP vocabulary; "tiny": tiny_tokenizer_files() (ids < 1000).
    """
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(
        mdir, dtype=torch.float32, variant="fp16" if fp16 else None,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    prompt = "a photo of a cat"
    if tokenizer == "clip":
        assert pipe.tokenizer(prompt).input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    else:
        tok = CLIPTokenizer.from_pretrained(str(mdir / "tokenizer"))
        assert len(tok) == TINY_VOCAB == pipe.text_encoder.config.vocab_size, len(tok)
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (TINY_BOS, TINY_EOS, TINY_EOS)
        cfg = pipe.text_encoder.config
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (TINY_BOS, TINY_EOS, TINY_EOS)
        ids = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        assert len(ids) == MAX_LEN and ids[0] == TINY_BOS and max(ids) < TINY_VOCAB, ids
        body = ids[1:ids.index(TINY_EOS)]
        assert ids[1 + len(body):] == [TINY_EOS] * (MAX_LEN - 1 - len(body)), ids
        assert tok.decode(body).strip() == prompt, tok.decode(body)
        assert pipe.tokenizer(prompt, padding="max_length", max_length=MAX_LEN,
                              truncation=True).input_ids == ids
        log(f"  tiny tokenizer: {prompt!r} -> {ids[:1 + len(body) + 2]}... "
            f"({tok.convert_ids_to_tokens(body)})")
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.vae.config.scaling_factor == 0.18215
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_pretrained(mdir, subfolder="scheduler")
    assert ddim.config.steps_offset == 1 and not ddim.config.clip_sample and not ddim.config.set_alpha_to_one
    del pipe


def report_sizes(root: Path) -> int:
    total = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            s = p.stat().st_size
            total += s
            log(f"  {s:>12,}  {_rel(p)}")
    log(f"  {total:>12,}  total under {_rel(root)}")
    return total


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", type=Path, metavar="OUTDIR",
                    help="build the real SD1.5 configs (random weights) into OUTDIR/model and OUTDIR/golden")
    ap.add_argument("--tokenizer-python", default=os.environ.get("DITAIL_TOKENIZER_PYTHON",
                                                                 str(REPO / ".venv-tok" / "bin" / "python")),
                    help="python with scripts/requirements-tokenizer.txt (transformers < 5) installed")
    ap.add_argument("--skip-tokenizer", action="store_true", help="small mode: leave tokenizer.json alone")
    args = ap.parse_args()
    _install_log_capture()
    t_start = time.time()

    import diffusers
    import transformers

    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}")
    if not (CLIP_DIR / "vocab.json").is_file():
        sys.exit("error: models/clip/vocab.json missing; run scripts/convert_clip_vocab.py first")

    if args.full_size is None:
        if not args.skip_tokenizer:
            t0 = time.time()
            tokenizer_fixture(args.tokenizer_python)
            log(f"tokenizer fixture: {time.time() - t0:.1f}s")
        for name, spec in TINY.items():
            log(f"== {name}")
            mdir = FIXTURES / "models" / name
            run_model(name, spec, mdir, FIXTURES / "golden" / name)
            pipeline_smoke_test(mdir, spec["fp16"], spec["tokenizer"])
            log(f"  [{name}] loads as StableDiffusionPipeline with its tokenizer/ (+ DDIMScheduler from scheduler/)")
        log("fixture sizes:")
        report_sizes(FIXTURES)
    else:
        out: Path = args.full_size.resolve()
        out.mkdir(parents=True, exist_ok=True)
        from transformers import CLIPTokenizer

        tok = CLIPTokenizer.from_pretrained(str(CLIP_DIR))
        prompt = "a photo of an astronaut riding a horse on mars"
        ids = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True,
                  return_tensors="pt")["input_ids"].to(torch.int64)
        log(f"full-size: prompt {prompt!r} -> {ids[0, :14].tolist()}...")
        spec = dict(FULL, fp16=False, tokenizer="clip", image_hw=(256, 256), latent_hw=(32, 32), vae_batch=1,
                    timestep_dtype=torch.int64, cases=[("square", (32, 32), 981)])
        meta = run_model("sd15-random", spec, out / "model", out / "golden", text_ids=ids, full=True)
        pipeline_smoke_test(out / "model", False, "clip")
        log("  [sd15-random] loads as StableDiffusionPipeline (with its tokenizer/)")
        write_json(out / "golden" / "meta.json", dict(meta, prompt=prompt))
        log("full-size sizes:")
        report_sizes(out)

    if COLLECTED:
        log(f"warnings from diffusers/transformers/python ({len(COLLECTED)}):")
        for w in dict.fromkeys(COLLECTED):
            log(f"  {w}")
    else:
        log("no warnings from diffusers/transformers")
    log(f"total time: {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
