#!/usr/bin/env python3
"""Generate ditail's model-loading fixtures (tests/fixtures/loading/) from the tiny models.

Needs tests/fixtures/models/tiny-a (scripts/make_fixtures.py).  Writes, deterministically
(fixed seeds; a rerun gives byte-identical files):

  tiny-a.safetensors            tiny-a as an LDM / A1111 single-file checkpoint (f32):
                                model.diffusion_model.* (U-Net), first_stage_model.* (VAE),
                                cond_stage_model.transformer.text_model.* (CLIP), plus what
                                real SD 1.x files carry and a loader must skip (a few
                                model_ema.* keys, the DDPM schedule buffers, position_ids)
  tiny-a.fp16.safetensors       the same in float16
  tiny-a.bf16.safetensors       the same in bfloat16
  tiny-a-noprefix.bf16.safetensors   bfloat16, text encoder in the old layout
                                cond_stage_model.transformer.{embeddings,encoder,final_layer_norm}.*
  vae-tiny-a.safetensors        the VAE alone in LDM naming, no prefix (f32)
  <arch>-like.safetensors       tiny architecture probes (SDXL, SD2, inpaint, ip2p, SD3, Flux)
  lora-*.safetensors, loha.safetensors
                                LoRAs for tiny-a (kohya, PEFT, bad key, SDXL, LoHa)
  expected-*.safetensors        the weights diffusers' load_lora_weights + fuse_lora change
  truncated / not-safetensors / header-overrun / header-length-overrun .safetensors,
  pickle.ckpt                   broken files (and a pickle checkpoint to detect, never load)
  ldm-key-map.json              the diffusers -> LDM key mapping used for tiny-a
  meta.json                     what every file is, how it was checked, the conventions,
                                and what diffusers does with each LoRA

The diffusers -> LDM key mapping below is written from the LDM / CompVis module structure
(it does not use diffusers' conversion tables); it is checked by loading the written files
back with diffusers' from_single_file and comparing every tensor with the tiny-a folder.

Usage:  python scripts/make_loading_fixtures.py   (about 20 s on 2 cores; needs peft)

Size: about 12 MB, almost all of it the four tiny-a checkpoints (f32 4.1 MB, each 16-bit one
2.1 MB); drop entries from CHECKPOINT_VARIANTS to trade tests for size.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets HF_HUB_OFFLINE, OMP_WAIT_POLICY, 2 threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(2)

log = mf.log
REPO = mf.REPO
MODEL_DIR = mf.FIXTURES / "models" / "tiny-a"
OUT = mf.FIXTURES / "loading"
SPEC = mf.TINY["tiny-a"]

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _dt(t: torch.Tensor) -> str:
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
            torch.int32: "I32"}[t.dtype]


def load_folder() -> dict[str, dict[str, torch.Tensor]]:
    """The tiny-a diffusers folder's tensors, as stored (f32), per component."""
    files = {"unet": "unet/diffusion_pytorch_model.safetensors",
             "vae": "vae/diffusion_pytorch_model.safetensors",
             "text_encoder": "text_encoder/model.safetensors"}
    out = {}
    for comp, rel in files.items():
        with safe_open(str(MODEL_DIR / rel), framework="pt") as f:
            out[comp] = {k: f.get_tensor(k) for k in f.keys()}
        assert all(v.dtype == torch.float32 for v in out[comp].values())
    assert all(k.startswith("text_model.") for k in out["text_encoder"])
    return out


# ---------------------------------------------------------------------------------------
# diffusers -> LDM names (own mapping, from the CompVis / LDM module layout)
#
# U-Net (ldm.modules.diffusionmodules.openaimodel.UNetModel):
#   input_blocks[0] = conv_in; then per down level i, per layer j: input_blocks[1+i*(L+1)+j]
#   = [ResBlock, SpatialTransformer?]; after each level but the last, a Downsample
#   input_blocks[(i+1)*(L+1)] = [Downsample(op)].  middle_block = [ResBlock, SpatialTransformer,
#   ResBlock].  Per up level i, per layer j < L+1: output_blocks[i*(L+1)+j] = [ResBlock,
#   SpatialTransformer?, Upsample? (last layer of each level but the last)].
#   ResBlock: in_layers = [GroupNorm, SiLU, conv], emb_layers = [SiLU, Linear],
#   out_layers = [GroupNorm, SiLU, Dropout, conv], skip_connection.
#   time_embed = [Linear, SiLU, Linear], out = [GroupNorm, SiLU, conv].
#   SpatialTransformer's inner names equal diffusers' Transformer2DModel's.

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
              "conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_module_map(cfg: dict) -> dict[str, tuple[str, dict | None]]:
    """diffusers module path -> (LDM module path, leaf renames or None)."""
    L = cfg["layers_per_block"]
    down, up = cfg["down_block_types"], cfg["up_block_types"]
    n = len(down)
    m: dict[str, tuple[str, dict | None]] = {
        "time_embedding.linear_1": ("time_embed.0", None),
        "time_embedding.linear_2": ("time_embed.2", None),
        "conv_in": ("input_blocks.0.0", None),
        "conv_norm_out": ("out.0", None),
        "conv_out": ("out.2", None),
    }
    for i, t in enumerate(down):
        for j in range(L):
            idx = 1 + i * (L + 1) + j
            m[f"down_blocks.{i}.resnets.{j}"] = (f"input_blocks.{idx}.0", UNET_RESNET)
            if t.startswith("CrossAttn"):
                m[f"down_blocks.{i}.attentions.{j}"] = (f"input_blocks.{idx}.1", None)
        if i < n - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = (f"input_blocks.{(i + 1) * (L + 1)}.0.op", None)
    m["mid_block.resnets.0"] = ("middle_block.0", UNET_RESNET)
    m["mid_block.attentions.0"] = ("middle_block.1", None)
    m["mid_block.resnets.1"] = ("middle_block.2", UNET_RESNET)
    for i, t in enumerate(up):
        attn = t.startswith("CrossAttn")
        for j in range(L + 1):
            idx = i * (L + 1) + j
            m[f"up_blocks.{i}.resnets.{j}"] = (f"output_blocks.{idx}.0", UNET_RESNET)
            if attn:
                m[f"up_blocks.{i}.attentions.{j}"] = (f"output_blocks.{idx}.1", None)
        if i < n - 1:
            m[f"up_blocks.{i}.upsamplers.0.conv"] = (f"output_blocks.{i * (L + 1) + L}.{2 if attn else 1}.conv", None)
    return m


def vae_module_map(cfg: dict) -> dict[str, tuple[str, dict | None]]:
    """diffusers AutoencoderKL module path -> (LDM module path, leaf renames or None).

    LDM's Encoder: conv_in, down[i].block[j], down[i].downsample.conv, mid.block_1,
    mid.attn_1, mid.block_2, norm_out, conv_out.  Decoder: conv_in, mid.*, up[k].block[j],
    up[k].upsample.conv, norm_out, conv_out -- where up[] is indexed from the lowest
    resolution's *opposite* end: diffusers' up_blocks[i] is LDM's up[n-1-i].
    """
    L = cfg["layers_per_block"]
    n = len(cfg["block_out_channels"])
    m: dict[str, tuple[str, dict | None]] = {"quant_conv": ("quant_conv", None),
                                             "post_quant_conv": ("post_quant_conv", None)}
    for part in ("encoder", "decoder"):
        m[f"{part}.conv_in"] = (f"{part}.conv_in", None)
        m[f"{part}.conv_norm_out"] = (f"{part}.norm_out", None)
        m[f"{part}.conv_out"] = (f"{part}.conv_out", None)
        m[f"{part}.mid_block.resnets.0"] = (f"{part}.mid.block_1", VAE_RESNET)
        m[f"{part}.mid_block.resnets.1"] = (f"{part}.mid.block_2", VAE_RESNET)
        m[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTN)
    for i in range(n):
        for j in range(L):
            m[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", VAE_RESNET)
        if i < n - 1:
            m[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", None)
        k = n - 1 - i
        for j in range(L + 1):
            m[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{k}.block.{j}", VAE_RESNET)
        if i < n - 1:
            m[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{k}.upsample.conv", None)
    return m


def map_key(key: str, modules: dict[str, tuple[str, dict | None]]) -> str:
    best = None
    for d in modules:
        if key.startswith(d + ".") and (best is None or len(d) > len(best)):
            best = d
    assert best is not None, f"no LDM module for {key}"
    ldm, leaves = modules[best]
    rest = key[len(best) + 1:]
    if leaves is not None:
        for dk in sorted(leaves, key=len, reverse=True):
            if rest.startswith(dk + "."):
                rest = leaves[dk] + rest[len(dk):]
                break
        else:
            raise AssertionError(f"no leaf rename for {key}")
    return f"{ldm}.{rest}"


def to_ldm(folder: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, tuple[str, torch.Tensor]]]:
    """Per component: LDM key (without the component prefix) -> (diffusers key, tensor)."""
    out: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    um = unet_module_map(SPEC["unet"])
    vm = vae_module_map(SPEC["vae"])
    out["unet"] = {map_key(k, um): (k, v) for k, v in folder["unet"].items()}
    vae = {}
    for k, v in folder["vae"].items():
        lk = map_key(k, vm)
        if ".mid.attn_1." in lk and lk.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            assert v.dim() == 2 and v.shape[0] == v.shape[1], (k, v.shape)
            v = v.reshape(*v.shape, 1, 1)  # LDM's AttnBlock uses 1x1 convolutions
        vae[lk] = (k, v)
    out["vae"] = vae
    out["text_encoder"] = {k: (k, v) for k, v in folder["text_encoder"].items()}
    for comp in out:
        assert len(out[comp]) == len(folder[comp]), f"{comp}: mapping is not one-to-one"
    _check_ldm_names(out)
    return out


def _check_ldm_names(ldm) -> None:
    """Spot checks of the LDM layout that SD 1.x checkpoints have (SD1.5's names at tiny widths)."""
    u, v = ldm["unet"], ldm["vae"]
    for k in ["time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight",
              "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.in_layers.2.weight",
              "input_blocks.1.0.emb_layers.1.weight", "input_blocks.1.0.out_layers.0.bias",
              "input_blocks.1.0.out_layers.3.weight", "input_blocks.1.1.proj_in.weight",
              "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
              "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
              "input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight",
              "input_blocks.9.0.op.bias", "input_blocks.10.0.in_layers.2.weight", "input_blocks.11.0.emb_layers.1.bias",
              "middle_block.0.in_layers.0.weight", "middle_block.1.proj_out.weight", "middle_block.2.out_layers.3.bias",
              "output_blocks.0.0.skip_connection.weight", "output_blocks.2.1.conv.weight",
              "output_blocks.3.1.norm.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.bias",
              "output_blocks.11.0.skip_connection.weight", "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
              "out.0.weight", "out.2.bias"]:
        assert k in u, k
    assert not any(k.startswith(("input_blocks.12", "output_blocks.12", "output_blocks.11.2")) for k in u)
    for k in ["encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.1.block.0.nin_shortcut.weight",
              "encoder.down.0.downsample.conv.weight", "encoder.mid.block_1.conv1.weight", "encoder.mid.attn_1.q.weight",
              "encoder.mid.attn_1.norm.bias", "encoder.mid.attn_1.proj_out.weight", "encoder.mid.block_2.norm2.bias",
              "encoder.norm_out.weight", "encoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.bias",
              "decoder.conv_in.weight", "decoder.mid.attn_1.v.bias", "decoder.up.3.block.2.conv2.weight",
              "decoder.up.3.upsample.conv.weight", "decoder.up.1.upsample.conv.weight",
              "decoder.up.0.block.0.nin_shortcut.weight", "decoder.norm_out.bias", "decoder.conv_out.weight"]:
        assert k in v, k
    assert "decoder.up.0.upsample.conv.weight" not in v and "encoder.down.3.downsample.conv.weight" not in v
    assert v["encoder.mid.attn_1.q.weight"][1].dim() == 4


# ---------------------------------------------------------------------------------------
# single-file checkpoints

PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
          "text_encoder": "cond_stage_model.transformer."}
EMA_SOURCES = ["input_blocks.0.0.weight", "input_blocks.0.0.bias", "time_embed.0.weight",
               "middle_block.1.proj_in.weight", "out.2.bias"]


def ema_name(ldm_unet_key: str) -> str:
    # CompVis' LitEma buffer names: "model_ema." + the parameter name without "model." and dots
    return "model_ema." + ("diffusion_model." + ldm_unet_key).replace(".", "")


def ddpm_buffers() -> dict[str, torch.Tensor]:
    """The schedule buffers LatentDiffusion registers (and SD 1.x .ckpt/.safetensors keep)."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    b = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in b.items()}


def build_checkpoint(ldm, dtype: torch.dtype, text_layout: str = "text_model") -> dict[str, torch.Tensor]:
    ck: dict[str, torch.Tensor] = {}
    for comp in ("unet", "vae", "text_encoder"):
        for lk, (_, v) in ldm[comp].items():
            if comp == "text_encoder" and text_layout == "noprefix":
                assert lk.startswith("text_model.")
                lk = lk[len("text_model."):]
            ck[PREFIX[comp] + lk] = v.to(dtype).contiguous()
    te = PREFIX["text_encoder"] + ("text_model." if text_layout == "text_model" else "")
    ck[te + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64).reshape(1, 77)
    for k, v in ddpm_buffers().items():
        ck[k] = v.to(dtype)
    # a few EMA keys, *different* from the live weights, so a loader that picks them is caught
    g = torch.Generator().manual_seed(77)
    for lk in EMA_SOURCES:
        w = ldm["unet"][lk][1]
        ck[ema_name(lk)] = (w + 0.01 * torch.randn(w.shape, generator=g)).to(dtype)
    ck["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    ck["model_ema.num_updates"] = torch.tensor(470000, dtype=torch.int32)
    return ck


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path), metadata=metadata)
    if metadata and len(metadata) > 1:
        _sort_header_metadata(path)


def _sort_header_metadata(path: Path) -> None:
    """safetensors writes __metadata__ in hash-map order (differs run to run): sort it in place."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n].decode("utf-8")
    header = json.loads(text)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(new) == json.loads(text) and len(new.rstrip()) == len(text.rstrip()), path
    new_b = new.encode("utf-8").ljust(n, b" ")
    assert len(new_b) == n
    path.write_bytes(raw[:8] + new_b + raw[8 + n:])


def _canon(msg: str) -> str:
    """Sort the items of Python set reprs ({'b', 'a'}) in a message: their order is hash-seeded."""
    def repl(m):
        items = re.findall(r"'[^']*'", m.group(1))
        return "{" + ", ".join(sorted(items)) + "}"
    return re.sub(r"\{((?:'[^']*'(?:, )?)+)\}", repl, msg)


def read(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in m.state_dict().items() if not k.endswith("position_ids")}


@torch.no_grad()
def compare_models(name: str, got: torch.nn.Module, want: dict[str, torch.Tensor], dtype: torch.dtype) -> int:
    """Every tensor of `got` equals the folder's (rounded to `dtype`, back to f32); returns count."""
    g = _state(got)
    w = {k.removeprefix("text_model.") if k.removeprefix("text_model.") in g else k: v for k, v in want.items()}
    assert set(g) == set(w), f"{name}: key sets differ: {sorted(set(g) ^ set(w))[:8]}"
    for k, v in w.items():
        a = g[k]
        assert a.device.type == "cpu", f"{name}.{k} on {a.device}"
        exp = v.to(dtype).to(torch.float32)
        assert a.shape == exp.shape, (name, k, a.shape, exp.shape)
        assert torch.equal(a.to(torch.float32), exp), f"{name}.{k} differs"
    return len(w)


def verify_pipeline(path: Path, folder, dtype: torch.dtype) -> dict:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(
        str(path), config=str(MODEL_DIR), local_files_only=True, dtype=torch.float32,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    counts = {}
    for comp in ("unet", "vae", "text_encoder"):
        counts[comp] = compare_models(comp, getattr(pipe, comp), folder[comp], dtype)
    return counts


def verify_components(path: Path, folder, dtype: torch.dtype) -> dict:
    """Per component with <Model>.from_single_file(path, config=folder, subfolder=...)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    counts = {}
    unet = UNet2DConditionModel.from_single_file(str(path), config=str(MODEL_DIR), subfolder="unet",
                                                 local_files_only=True, dtype=torch.float32)
    counts["unet"] = compare_models("unet", unet, folder["unet"], dtype)
    vae = AutoencoderKL.from_single_file(str(path), config=str(MODEL_DIR), subfolder="vae",
                                         local_files_only=True, dtype=torch.float32)
    counts["vae"] = compare_models("vae", vae, folder["vae"], dtype)
    return counts


def own_roundtrip(path: Path, ldm, dtype: torch.dtype, text_layout: str) -> int:
    """Independent of diffusers: the file's tensors are the folder's under the mapping."""
    ck = read(path)
    n = 0
    te = PREFIX["text_encoder"]
    for comp in ("unet", "vae", "text_encoder"):
        for lk, (_, v) in ldm[comp].items():
            if comp == "text_encoder" and text_layout == "noprefix":
                lk = lk[len("text_model."):]
            t = ck[PREFIX[comp] + lk]
            assert t.dtype == dtype and torch.equal(t, v.to(dtype)), lk
            n += 1
    extra = sorted(k for k in ck if not any(k.startswith(p) for p in PREFIX.values()))
    assert all(k.startswith("model_ema.") or k in ddpm_buffers() for k in extra), extra
    assert (te + ("text_model." if text_layout == "text_model" else "") + "embeddings.position_ids") in ck
    return n


# (file, dtype, text-encoder layout); the first one must stay (it is the verified f32 file)
# Two of the four layouts, to keep the committed fixtures small: f32 with the usual
# `text_model.` text-encoder keys, and bf16 with the older layout without it (f16 weights
# are covered by the tiny-b diffusers folder).
CHECKPOINT_VARIANTS = [("tiny-a.safetensors", torch.float32, "text_model"),
                       ("tiny-a-noprefix.bf16.safetensors", torch.bfloat16, "noprefix")]


def make_checkpoints(folder, ldm) -> dict:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    files = {}
    for name, dtype, layout in CHECKPOINT_VARIANTS:
        t0 = time.time()
        path = OUT / name
        ck = build_checkpoint(ldm, dtype, layout)
        save(path, ck)
        n_own = own_roundtrip(path, ldm, dtype, layout)
        kind = infer_diffusers_model_type(read(path))
        entry = {
            "what": f"tiny-a as an LDM/A1111 single-file checkpoint, {str(dtype).replace('torch.', '')}",
            "dtype": str(dtype).replace("torch.", ""),
            "text_encoder_layout": ("cond_stage_model.transformer.text_model.*" if layout == "text_model" else
                                    "cond_stage_model.transformer.{embeddings,encoder,final_layer_norm}.* "
                                    "(older transformers layout, no text_model.)"),
            "tensors": len(ck),
            "weights_equal_folder_under_mapping": n_own,
            "diffusers_infer_model_type": kind,
        }
        verify = {}
        try:
            verify["StableDiffusionPipeline.from_single_file"] = verify_pipeline(path, folder, dtype)
        except Exception as e:  # noqa: BLE001  (recorded, see meta.json)
            verify["StableDiffusionPipeline.from_single_file"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
            if layout == "text_model":
                raise
        try:
            verify["UNet2DConditionModel/AutoencoderKL.from_single_file"] = verify_components(path, folder, dtype)
        except Exception as e:  # noqa: BLE001
            verify["UNet2DConditionModel/AutoencoderKL.from_single_file"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
            if layout == "text_model":
                raise
        if layout == "noprefix":
            verify["text_encoder"] = noprefix_text_check(path, folder, dtype)
        entry["diffusers_verification"] = verify
        files[name] = entry
        log(f"  {name}: {len(ck)} tensors, own check {n_own} weights, diffusers type {kind!r}, "
            f"verify {verify} ({time.time() - t0:.1f}s)")
    return files


@torch.no_grad()
def noprefix_text_check(path: Path, folder, dtype: torch.dtype) -> str:
    """diffusers does not read the old layout; load it into CLIPTextModel by hand instead."""
    from transformers import CLIPTextModel

    ck = read(path)
    te = {k[len(PREFIX["text_encoder"]):]: v for k, v in ck.items() if k.startswith(PREFIX["text_encoder"])}
    te.pop("embeddings.position_ids")
    model = CLIPTextModel.from_pretrained(str(MODEL_DIR / "text_encoder"), dtype=torch.float32)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in te.items()}, strict=False)
    assert not unexpected and not [m for m in missing if not m.endswith("position_ids")], (missing, unexpected)
    n = compare_models("text_encoder", model, folder["text_encoder"], dtype)
    return (f"keys minus 'cond_stage_model.transformer.' load into transformers 5's CLIPTextModel (nothing "
            f"missing or unexpected); {n} tensors equal the folder's ({dtype}-rounded)")


def make_vae_file(folder, ldm) -> dict:
    from diffusers import AutoencoderKL

    path = OUT / "vae-tiny-a.safetensors"
    save(path, {lk: v for lk, (_, v) in ldm["vae"].items()})
    vae = AutoencoderKL.from_single_file(str(path), config=str(MODEL_DIR), subfolder="vae",
                                         local_files_only=True, dtype=torch.float32)
    n = compare_models("vae", vae, folder["vae"], torch.float32)
    log(f"  vae-tiny-a.safetensors: AutoencoderKL.from_single_file -> {n} tensors equal")
    return {"vae-tiny-a.safetensors": {
        "what": "tiny-a's VAE alone, LDM names without first_stage_model. (like vae-ft-mse-840000-ema-pruned)",
        "dtype": "float32", "tensors": len(ldm["vae"]),
        "diffusers_verification": {"AutoencoderKL.from_single_file": {"vae": n}}}}


# ---------------------------------------------------------------------------------------
# architecture probes: only the keys (and the dimensions) a detector reads; every other
# dimension is cut to a few rows so that each file stays a few KB.  Random data.

def probe_tensor(shape, dtype, seed: int) -> torch.Tensor:
    return (0.02 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).to(dtype)


SD1_MARKERS = {
    # LDM SD 1.x: conv (1x1) proj_in, 768-wide CLIP ViT-L context, CLIP text encoder keys
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": [2, 320, 1, 1],
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [2, 768],
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [2, 768],
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": [2, 640, 1, 1],
    "first_stage_model.decoder.conv_in.weight": [2, 4, 3, 3],
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [2, 768],
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": [2, 768],
}

PROBES = {
    "sdxl-like.safetensors": dict(
        detect_as="sdxl",
        why="conditioner.embedders.1.model.* (OpenCLIP ViT-bigG, 1280 wide) and "
            "model.diffusion_model.label_emb.0.0.weight (the added-conditioning MLP, 2816 = 1280 + 6*256 inputs)",
        dtype=torch.float16,
        keys={
            "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": [2, 768],
            "conditioner.embedders.1.model.positional_embedding": [2, 1280],
            "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": [3, 1280],
            "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": [1280],
            "model.diffusion_model.label_emb.0.0.weight": [2, 2816],
            "model.diffusion_model.input_blocks.0.0.weight": [2, 4, 3, 3],
            "model.diffusion_model.input_blocks.4.1.proj_in.weight": [2, 640],
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [2, 2048],
            "first_stage_model.decoder.conv_in.weight": [2, 4, 3, 3],
        }),
    "sd2-like.safetensors": dict(
        detect_as="sd2",
        why="cond_stage_model.model.* (OpenCLIP ViT-H, width 1024), 1024-wide cross-attention context, "
            "2-D (linear) proj_in",
        dtype=torch.float16,
        keys={
            "cond_stage_model.model.token_embedding.weight": [2, 1024],
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": [3, 1024],
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias": [3],
            "model.diffusion_model.input_blocks.0.0.weight": [2, 4, 3, 3],
            "model.diffusion_model.input_blocks.1.1.proj_in.weight": [2, 320],
            "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [2, 1024],
            "first_stage_model.decoder.conv_in.weight": [2, 4, 3, 3],
        }),
    "inpaint-like.safetensors": dict(
        detect_as="sd1-inpainting",
        why="SD 1.x keys, but model.diffusion_model.input_blocks.0.0.weight has 9 input channels "
            "(4 latent + 4 masked-image latent + 1 mask)",
        dtype=torch.float16,
        keys={**SD1_MARKERS, "model.diffusion_model.input_blocks.0.0.weight": [320, 9, 3, 3]}),
    "ip2p-like.safetensors": dict(
        detect_as="sd1-instruct-pix2pix",
        why="SD 1.x keys, but model.diffusion_model.input_blocks.0.0.weight has 8 input channels "
            "(4 latent + 4 image latent)",
        dtype=torch.float16,
        keys={**SD1_MARKERS, "model.diffusion_model.input_blocks.0.0.weight": [320, 8, 3, 3]}),
    "sd3-like.safetensors": dict(
        detect_as="sd3",
        why="model.diffusion_model.joint_blocks.* (MMDiT)",
        note="diffusers' infer_diffusers_model_type says 'v1' here (its fallback): its SD3 test reads "
             "full-size shapes (adaLN_modulation bias of 9216, pos_embed) that this probe does not carry",
        dtype=torch.float16,
        keys={
            "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": [3, 1536],
            "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": [3, 1536],
            "model.diffusion_model.x_embedder.proj.weight": [2, 16, 2, 2],
            "first_stage_model.decoder.conv_in.weight": [2, 16, 3, 3],
        }),
    "flux-like.safetensors": dict(
        detect_as="flux",
        why="double_blocks.* / single_blocks.* at the top level (BFL's layout, no prefix)",
        dtype=torch.bfloat16,
        keys={
            "double_blocks.0.img_attn.qkv.weight": [3, 3072],
            "double_blocks.0.img_attn.norm.key_norm.scale": [128],
            "single_blocks.0.linear1.weight": [2, 3072],
            "img_in.weight": [2, 64],
            "time_in.in_layer.weight": [2, 256],
        }),
}


def make_probes() -> dict:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    files = {}
    for i, (name, p) in enumerate(PROBES.items()):
        tensors = {k: probe_tensor(s, p["dtype"], 500 + 17 * i + j) for j, (k, s) in enumerate(sorted(p["keys"].items()))}
        path = OUT / name
        save(path, tensors)
        try:
            kind = infer_diffusers_model_type(read(path))
        except Exception as e:  # noqa: BLE001
            kind = f"error: {type(e).__name__}: {e}"
        files[name] = {
            "what": "architecture probe (random data; only the keys/dimensions a detector reads are real, "
                    "other dimensions cut to a few rows)",
            "detect_as": p["detect_as"], "why": p["why"], "dtype": str(p["dtype"]).replace("torch.", ""),
            "keys": {k: list(v.shape) for k, v in sorted(tensors.items())},
            "diffusers_infer_model_type": kind,
            **({"note": p["note"]} if "note" in p else {}),
        }
        log(f"  {name}: {len(tensors)} keys, {path.stat().st_size} bytes, expect {p['detect_as']}, "
            f"diffusers' infer_diffusers_model_type says {kind!r}")
    return files


# ---------------------------------------------------------------------------------------
# LoRAs

# (component, diffusers module path, rank, alpha or None)
KOHYA_MODULES = [
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 4, 1.0),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k", 4, 2.0),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v", 2, 1.0),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", 4, None),  # alpha = rank
    ("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 3, 1.5),
    ("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_v", 3, 3.0),
    ("unet", "up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q", 2, 0.5),
    ("unet", "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0", 4, 2.0),
    ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj", 4, 1.0),
    ("unet", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", 2, 1.0),
    ("unet", "down_blocks.2.attentions.0.proj_in", 2, 1.0),          # 1x1 conv
    ("unet", "up_blocks.3.attentions.1.proj_out", 4, 2.0),           # 1x1 conv
    ("unet", "down_blocks.1.resnets.0.conv1", 4, 1.0),               # 3x3 conv (LoCon)
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 4, 1.0),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.k_proj", 2, 1.0),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.v_proj", 2, 2.0),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.out_proj", 4, 2.0),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc1", 3, 1.5),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc2", 2, 1.0),
]

# PEFT (diffusers) format: no alphas in the file, so alpha = rank (scale 1) for every module
PEFT_MODULES = [
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 2, None),  # also in kohya
    ("unet", "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", 4, None),
    ("unet", "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v", 4, None),
    ("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", 3, None),
    ("unet", "up_blocks.2.attentions.0.transformer_blocks.0.ff.net.2", 2, None),
    ("unet", "up_blocks.1.attentions.0.proj_in", 2, None),           # 1x1 conv
    ("unet", "up_blocks.1.resnets.1.conv2", 3, None),                # 3x3 conv
    ("unet", "down_blocks.0.resnets.0.time_emb_proj", 2, None),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 2, None),  # also in kohya
    ("text_encoder", "text_model.encoder.layers.1.self_attn.v_proj", 4, None),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc2", 2, None),
]

DELTA_FRACTION = 0.05  # |delta|_F = 5% of |W|_F at scale 1
LORA_TOLERANCE = "per weight: max|a - b| <= 1e-5 * max|b| (b = expected fused weight)"


def kohya_name(comp: str, module: str) -> str:
    return ("lora_unet_" if comp == "unet" else "lora_te_") + module.replace(".", "_")


def base_weight(folder, comp: str, module: str) -> torch.Tensor:
    return folder[comp][module + ".weight"]


def lora_pair(w: torch.Tensor, rank: int, alpha: float | None, seed: int, dtype: torch.dtype):
    """down [r, in(, kh, kw)], up [out, r(, 1, 1)] with |alpha/r * up@down| = 5% of |w|."""
    g = torch.Generator().manual_seed(seed)
    out_c, in_c = w.shape[0], w.shape[1]
    k = tuple(w.shape[2:])
    down = torch.randn((rank, in_c, *k), generator=g) / math.sqrt(in_c * max(1, int(np.prod(k))))
    up = torch.randn((out_c, rank, *([1] * len(k))), generator=g)
    d0 = delta(down, up, rank if alpha is None else alpha, w.shape)
    up = up * (DELTA_FRACTION * w.norm() / d0.norm())
    return down.to(dtype), up.to(dtype)


def delta(down: torch.Tensor, up: torch.Tensor, alpha: float, shape) -> torch.Tensor:
    """alpha/rank * up @ down, reshaped to the weight (conv: [out, r, 1, 1] x [r, in, kh, kw])."""
    r = down.shape[0]
    d = up.double().reshape(up.shape[0], r) @ down.double().reshape(r, -1)
    return (alpha / r) * d.reshape(shape)


def make_lora_files(folder) -> dict:
    files = {}
    # (a) kohya / A1111
    t = {}
    for i, (comp, mod, r, alpha) in enumerate(KOHYA_MODULES):
        w = base_weight(folder, comp, mod)
        down, up = lora_pair(w, r, alpha, 900 + i, torch.float16)
        n = kohya_name(comp, mod)
        t[n + ".lora_down.weight"] = down
        t[n + ".lora_up.weight"] = up
        if alpha is not None:
            t[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
    kohya_meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "1.0",
                  "ss_base_model_version": "sd_v1", "ss_v2": "False"}
    save(OUT / "lora-kohya.safetensors", t, kohya_meta)
    files["lora-kohya.safetensors"] = {
        "what": "kohya / A1111 LoRA for tiny-a (float16, alpha as 0-d float16 tensors)",
        "format": "lora_unet_<diffusers module path, '.' -> '_'> / lora_te_<text encoder module path, "
                  "'.' -> '_'> + .lora_down.weight [r, in(, kh, kw)] / .lora_up.weight [out, r(, 1, 1)] / .alpha",
        "metadata": kohya_meta,
        "modules": [{"component": c, "module": m, "key": kohya_name(c, m), "rank": r,
                     "alpha": a if a is not None else f"absent (= rank {r})",
                     "kind": module_kind(folder, c, m)} for c, m, r, a in KOHYA_MODULES],
        "delta_norm_over_weight_norm_at_scale_1": delta_fractions(folder, OUT / "lora-kohya.safetensors"),
    }
    # (b) PEFT / diffusers
    t = {}
    for i, (comp, mod, r, alpha) in enumerate(PEFT_MODULES):
        w = base_weight(folder, comp, mod)
        down, up = lora_pair(w, r, alpha, 950 + i, torch.float32)
        t[f"{comp}.{mod}.lora_A.weight"] = down
        t[f"{comp}.{mod}.lora_B.weight"] = up
    save(OUT / "lora-peft.safetensors", t)
    files["lora-peft.safetensors"] = {
        "what": "diffusers / PEFT-format LoRA for tiny-a (float32, no alphas: alpha = rank, scale 1)",
        "format": "<unet|text_encoder>.<diffusers module path>.lora_A.weight [r, in(, kh, kw)] / "
                  ".lora_B.weight [out, r(, 1, 1)]",
        "modules": [{"component": c, "module": m, "rank": r, "kind": module_kind(folder, c, m)}
                    for c, m, r, _ in PEFT_MODULES],
        "delta_norm_over_weight_norm_at_scale_1": delta_fractions(folder, OUT / "lora-peft.safetensors"),
    }
    # (c) kohya with one key for a module tiny-a does not have
    t = read(OUT / "lora-kohya.safetensors")
    t = {k: v for k, v in t.items() if k.startswith(kohya_name(*KOHYA_MODULES[0][:2]))}
    bad = "lora_unet_down_blocks_0_attentions_7_proj_in"
    g = torch.Generator().manual_seed(990)
    t[bad + ".lora_down.weight"] = (0.1 * torch.randn((2, 16, 1, 1), generator=g)).to(torch.float16)
    t[bad + ".lora_up.weight"] = (0.1 * torch.randn((16, 2, 1, 1), generator=g)).to(torch.float16)
    t[bad + ".alpha"] = torch.tensor(1.0, dtype=torch.float16)
    save(OUT / "lora-bad-key.safetensors", t, kohya_meta)
    files["lora-bad-key.safetensors"] = {
        "what": "kohya LoRA: the first module of lora-kohya.safetensors (same tensors) plus "
                f"{bad} (tiny-a's down_blocks.0 has attentions 0 and 1 only)",
        "bad_module": bad,
    }
    # (d) an SDXL kohya LoRA (sgm U-Net names, 640/1280 wide, two text encoders)
    g = torch.Generator().manual_seed(991)
    sdxl = [("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640),
            ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640),
            ("lora_unet_middle_block_1_transformer_blocks_0_attn1_to_out_0", 1280, 1280),
            ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
            ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280)]
    t = {}
    for n, cin, cout in sdxl:
        t[n + ".lora_down.weight"] = (0.02 * torch.randn((2, cin), generator=g)).to(torch.float16)
        t[n + ".lora_up.weight"] = (0.02 * torch.randn((cout, 2), generator=g)).to(torch.float16)
        t[n + ".alpha"] = torch.tensor(1.0, dtype=torch.float16)
    sdxl_meta = dict(kohya_meta, ss_base_model_version="sdxl_base_v1-0", ss_network_dim="2")
    save(OUT / "lora-sdxl.safetensors", t, sdxl_meta)
    files["lora-sdxl.safetensors"] = {
        "what": "kohya SDXL LoRA (rank 2): sgm U-Net module names (input_blocks / middle_block), "
                "640/1280/2048-wide shapes, lora_te1_ / lora_te2_ text encoders; does not fit tiny-a (nor any SD 1.x)",
        "metadata": sdxl_meta,
        "modules": {n: {"in": cin, "out": cout} for n, cin, cout in sdxl},
    }
    # (e) LoHa (LyCORIS)
    t = {}
    loha = [("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 2, 1.0),
            ("text_encoder", "text_model.encoder.layers.0.self_attn.k_proj", 2, 2.0)]
    for i, (comp, mod, r, alpha) in enumerate(loha):
        w = base_weight(folder, comp, mod)
        g = torch.Generator().manual_seed(995 + i)
        n = kohya_name(comp, mod)
        for part in ("w1", "w2"):
            t[f"{n}.hada_{part}_a"] = (0.3 * torch.randn((w.shape[0], r), generator=g)).to(torch.float16)
            t[f"{n}.hada_{part}_b"] = (0.3 * torch.randn((r, w.shape[1]), generator=g)).to(torch.float16)
        t[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
    save(OUT / "loha.safetensors", t, dict(kohya_meta, ss_network_module="lycoris.kohya",
                                            ss_network_args='{"algo": "loha"}'))
    files["loha.safetensors"] = {
        "what": "LyCORIS LoHa for tiny-a (float16): .hada_w1_a [out, r], .hada_w1_b [r, in], .hada_w2_a, "
                ".hada_w2_b, .alpha; delta = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r (Hadamard product)",
        "modules": [{"component": c, "module": m, "key": kohya_name(c, m), "rank": r, "alpha": a}
                    for c, m, r, a in loha],
    }
    return files


def delta_fractions(folder, path: Path) -> dict[str, float]:
    out = {}
    for mod, (down, up, alpha) in lora_modules_of(path).items():
        comp, m = mod.split(".", 1)
        w = base_weight(folder, comp, m)
        f = (delta(down, up, alpha, w.shape).norm() / w.double().norm()).item()
        assert abs(f - DELTA_FRACTION) < 1e-3, (mod, f)
        out[mod] = float(f"{f:.4g}")
    return out


def module_kind(folder, comp: str, module: str) -> str:
    w = base_weight(folder, comp, module)
    if w.dim() == 2:
        return f"linear {list(w.shape)}"
    return f"conv {w.shape[2]}x{w.shape[3]} {list(w.shape)}"


# ---------------------------------------------------------------------------------------
# expected fused weights (diffusers) and the independent formula

def load_pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(MODEL_DIR), dtype=torch.float32, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _te_key(k: str) -> str:
    # transformers 5's CLIPTextModel has no .text_model wrapper; name keys as the folder's file does
    return k if k.startswith("text_model.") else "text_model." + k


@torch.no_grad()
def pipe_weights(pipe) -> dict[str, torch.Tensor]:
    """'unet.<key>' / 'text_encoder.text_model.<key>' -> f32 weight, LoRA layers folded away."""
    out = {}
    for comp in ("unet", "text_encoder"):
        for k, v in getattr(pipe, comp).state_dict().items():
            if ".lora_" in k or k.endswith("position_ids"):
                continue
            k = k.replace(".base_layer.", ".")
            if comp == "text_encoder":
                k = _te_key(k)
            assert f"{comp}.{k}" not in out, k
            out[f"{comp}.{k}"] = v.detach().clone()
    return out


def lora_modules_of(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Own reading of a kohya or PEFT file: 'comp.module' -> (down, up, alpha), f32 tensors."""
    t = read(path)
    mods = {}
    if any(k.startswith("lora_") for k in t):
        spec = {kohya_name(c, m): (c, m, r) for c, m, r, _ in KOHYA_MODULES}
        for k in t:
            if k.endswith(".lora_down.weight"):
                n = k[: -len(".lora_down.weight")]
                c, m, r = spec[n]
                down, up = t[k].float(), t[n + ".lora_up.weight"].float()
                assert down.shape[0] == r
                alpha = float(t[n + ".alpha"].float()) if n + ".alpha" in t else float(r)
                mods[f"{c}.{m}"] = (down, up, alpha)
    else:
        for k in t:
            if k.endswith(".lora_A.weight"):
                n = k[: -len(".lora_A.weight")]
                down, up = t[k].float(), t[n + ".lora_B.weight"].float()
                mods[n] = (down, up, float(down.shape[0]))
    return mods


def own_fused(base: dict[str, torch.Tensor], loras: list[tuple[Path, float]]) -> dict[str, torch.Tensor]:
    """W + sum scale * alpha/rank * up @ down (in float64, rounded to f32 at the end)."""
    acc: dict[str, torch.Tensor] = {}
    for path, scale in loras:
        for mod, (down, up, alpha) in lora_modules_of(path).items():
            key = mod + ".weight"
            w = base[key]
            acc[key] = acc.get(key, w.double()) + scale * delta(down, up, alpha, w.shape)
    return {k: v.float() for k, v in acc.items()}


def fold_kohya_alphas(path: Path) -> dict[str, torch.Tensor]:
    """The kohya file with every .alpha folded into lora_down (down * alpha/rank, f32) and removed.

    With no alphas in the state dict, diffusers gives every module scale 1 (alpha = rank), so
    what it fuses is exactly kohya's W + scale * alpha/rank * up @ down (see make_expected).
    """
    t = read(path)
    out = {}
    for k, v in t.items():
        if k.endswith(".lora_down.weight"):
            n = k[: -len(".lora_down.weight")]
            r = v.shape[0]
            alpha = float(t[n + ".alpha"].float()) if n + ".alpha" in t else float(r)
            out[k] = v.float() * (alpha / r)
        elif k.endswith(".lora_up.weight"):
            out[k] = v.float()
        else:
            assert k.endswith(".alpha"), k
    return out


def diffusers_fuse(loras: list[tuple[Path, str, float]], fold: bool = False) -> tuple[dict, dict]:
    """load_lora_weights each file (as adapter `name`), then fuse; returns (changed, notes).

    fold: pass kohya files as fold_kohya_alphas(file) instead of the file itself.
    """
    pipe = load_pipe()
    before = pipe_weights(pipe)
    notes: dict = {}
    for path, name, _ in loras:
        if fold and path.name == "lora-kohya.safetensors":
            pipe.load_lora_weights(fold_kohya_alphas(path), adapter_name=name)
        else:
            pipe.load_lora_weights(str(path), adapter_name=name)
    if len(loras) == 1:
        scale = loras[0][2]
        pipe.fuse_lora(lora_scale=scale)
        notes["calls"] = f"pipe.load_lora_weights({loras[0][0].name!r}); pipe.fuse_lora(lora_scale={scale})"
    else:
        names = [n for _, n, _ in loras]
        weights = [s for _, _, s in loras]
        pipe.set_adapters(names, adapter_weights=weights)
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        notes["calls"] = ("; ".join(f"pipe.load_lora_weights({p.name!r}, adapter_name={n!r})" for p, n, _ in loras)
                          + f"; pipe.set_adapters({names}, adapter_weights={weights}); "
                          f"pipe.fuse_lora(adapter_names={names}, lora_scale=1.0)")
    after = pipe_weights(pipe)
    assert set(before) == set(after)
    changed = {k: after[k] for k in sorted(after) if not torch.equal(before[k], after[k])}
    return changed, {"before": before, **notes}


def check_against_own(changed: dict, before: dict, loras: list[tuple[Path, float]]) -> dict:
    own = own_fused(before, loras)
    report = {"modules_in_files": len(own), "weights_changed_by_diffusers": len(changed)}
    only_own = sorted(set(own) - set(changed))
    only_diff = sorted(set(changed) - set(own))
    report["in_file_but_unchanged_by_diffusers"] = only_own
    report["changed_by_diffusers_but_not_in_file"] = only_diff
    per = {}
    worst = 0.0
    for k in sorted(set(own) & set(changed)):
        d = (changed[k].double() - own[k].double()).abs().max().item()
        dw = (own[k].double() - before[k].double()).abs().max().item()
        rel = d / dw
        worst = max(worst, rel)
        per[k] = {"max_abs_diff": d, "max_abs_delta": dw, "rel": rel}
    report["max |diffusers - own| / max |own delta|"] = worst
    report["max |diffusers - own| / max |own|"] = max(
        ((changed[k].double() - own[k].double()).abs().max() / own[k].double().abs().max()).item()
        for k in set(own) & set(changed)) if set(own) & set(changed) else 0.0
    report["per_weight"] = per
    return report


def effective_alphas(changed: dict, before: dict, path: Path, scale: float) -> dict:
    """alpha that diffusers effectively used per module: own alpha * <d_diff, d_own> / |d_own|^2."""
    out = {}
    for mod, (down, up, alpha) in lora_modules_of(path).items():
        key = mod + ".weight"
        w = before[key]
        own = scale * delta(down, up, alpha, w.shape)
        got = changed[key].double() - w.double()
        out[mod] = {"rank": down.shape[0], "alpha": alpha,
                    "diffusers_alpha": float(f"{alpha * float((got * own).sum() / (own * own).sum()):.4g}")}
    return out


def make_expected(folder) -> tuple[dict, dict]:
    files = {}
    kohya, peft = OUT / "lora-kohya.safetensors", OUT / "lora-peft.safetensors"
    cases = [("expected-kohya-0.7.safetensors", [(kohya, "kohya", 0.7)]),
             ("expected-peft-0.7.safetensors", [(peft, "peft", 0.7)]),
             ("expected-both.safetensors", [(kohya, "kohya", 0.7), (peft, "peft", 0.5)])]
    raw_reports = {}
    for name, loras in cases:
        t0 = time.time()
        own_loras = [(p, s) for p, _, s in loras]
        has_kohya = any(p == kohya for p, _, _ in loras)
        # 1. diffusers as a user would call it, on the file itself
        raw, notes = diffusers_fuse(loras)
        rep_raw = check_against_own(raw, notes["before"], own_loras)
        raw_summary = {
            "diffusers_calls": notes["calls"],
            "max |diffusers - own| / max |own delta|": rep_raw["max |diffusers - own| / max |own delta|"],
            "weights_that_disagree_with_own_formula": sorted(
                k for k, v in rep_raw["per_weight"].items() if v["rel"] > 1e-5),
            "in_file_but_unchanged_by_diffusers": rep_raw["in_file_but_unchanged_by_diffusers"],
            "changed_by_diffusers_but_not_in_file": rep_raw["changed_by_diffusers_but_not_in_file"],
        }
        if name == "expected-kohya-0.7.safetensors":
            raw_summary["effective_alphas"] = effective_alphas(raw, notes["before"], kohya, 0.7)
        raw_reports[name] = raw_summary
        # 2. what is saved: diffusers with the kohya alphas folded into lora_down
        changed, notes = (diffusers_fuse(loras, fold=True) if has_kohya else (raw, notes))
        rep = check_against_own(changed, notes["before"], own_loras)
        worst = rep["max |diffusers - own| / max |own delta|"]
        assert worst < 1e-5, (name, worst)
        assert not rep["in_file_but_unchanged_by_diffusers"] and not rep["changed_by_diffusers_but_not_in_file"], rep
        save(OUT / name, changed)
        entry = {
            "what": "tiny-a's weights after fusing the LoRA(s): only the weights that change (float32, diffusers "
                    "key names, prefixed unet. / text_encoder.); every other weight equals tiny-a's",
            "loras": [{"file": p.name, "adapter_name": n, "scale": s} for p, n, s in loras],
            "formula": "W + sum over files of scale * alpha/rank * up @ down (conv: up [out, r, 1, 1] x down "
                       "[r, in, kh, kw] -> [out, in, kh, kw]); alpha absent -> alpha = rank",
            "produced_by": (notes["calls"].replace("load_lora_weights('lora-kohya.safetensors'",
                                                   "load_lora_weights(fold_kohya_alphas('lora-kohya.safetensors')")
                            if has_kohya else notes["calls"]),
            "own_formula_check": {"max |saved - own| / max |own delta|": worst,
                                  "max |saved - own| / max |own|": rep["max |diffusers - own| / max |own|"],
                                  "weights": len(changed)},
            "tolerance": LORA_TOLERANCE,
            "keys": sorted(changed),
        }
        if has_kohya:
            entry["note"] = ("kohya alphas folded into lora_down before load_lora_weights, because diffusers "
                             "applies some of this file's per-module alphas wrongly (see diffusers_lora_behaviour)")
        files[name] = entry
        log(f"  {name}: {len(changed)} weights; saved vs own formula {worst:.3g}; diffusers on the raw file: "
            f"{raw_summary['max |diffusers - own| / max |own delta|']:.3g}, disagreeing "
            f"{len(raw_summary['weights_that_disagree_with_own_formula'])} ({time.time() - t0:.1f}s)")
    return files, raw_reports


def try_bad_loras() -> dict:
    """What diffusers does with the files it should not (or cannot) apply to tiny-a."""
    out = {}
    for name in ("lora-bad-key.safetensors", "lora-sdxl.safetensors", "loha.safetensors"):
        pipe = load_pipe()
        before = pipe_weights(pipe)
        n0 = len(mf.COLLECTED)
        res: dict = {}
        try:
            pipe.load_lora_weights(str(OUT / name), adapter_name="x")
            res["load_lora_weights"] = "ok"
            try:
                pipe.fuse_lora(lora_scale=0.7)
                res["fuse_lora"] = "ok"
            except Exception as e:  # noqa: BLE001
                res["fuse_lora"] = _canon(f"{type(e).__name__}: {e}")[:400]
        except Exception as e:  # noqa: BLE001
            res["load_lora_weights"] = _canon(f"{type(e).__name__}: {e}")[:400]
        after = pipe_weights(pipe)
        res["weights_changed"] = sorted(k for k in after if not torch.equal(before[k], after[k]))
        res["warnings"] = [_canon(w)[:400] for w in mf.COLLECTED[n0:]]
        if name == "lora-bad-key.safetensors":
            k = "unet." + KOHYA_MODULES[0][1] + ".weight"
            assert res["weights_changed"] == [k], res["weights_changed"]
            exp = read(OUT / "expected-kohya-0.7.safetensors")[k]
            d = (after[k] - exp).abs().max().item() / (exp - before[k]).abs().max().item()
            assert d < 1e-5, d
            res["valid_module_result"] = (f"{k} equals expected-kohya-0.7.safetensors' (same LoRA tensors, scale 0.7; "
                                          f"max diff / max delta {d:.2g})")
        out[name] = res
        log(f"  {name}: {res}")
    return out


# ---------------------------------------------------------------------------------------
# broken files

def make_bad_files() -> dict:
    files = {}
    # a valid file cut in half (header intact, data short)
    src = (OUT / "lora-peft.safetensors").read_bytes()
    (hlen,) = struct.unpack("<Q", src[:8])
    cut = len(src) // 2
    assert 8 + hlen < cut
    (OUT / "truncated.safetensors").write_bytes(src[:cut])
    files["truncated.safetensors"] = {
        "what": f"lora-peft.safetensors cut to its first {cut} of {len(src)} bytes: the header "
                f"({hlen} bytes) is complete and valid, the tensor data ends early", "expect": "error"}
    # plain text
    text = b"This is not a safetensors file.\nIt is plain text, like a mis-named README or an HTML error page.\n"
    (OUT / "not-safetensors.safetensors").write_bytes(text)
    files["not-safetensors.safetensors"] = {
        "what": "plain ASCII text; read as a header length its first 8 bytes give "
                f"{struct.unpack('<Q', text[:8])[0]} (far more than the file)", "expect": "error"}
    # header claims tensor data past the end of the file
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    data = np.arange(8, dtype="<f4").tobytes()  # 32 of the 64 bytes
    (OUT / "header-overrun.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    files["header-overrun.safetensors"] = {
        "what": "well-formed header for one F32 [4, 4] tensor (data_offsets [0, 64]) followed by only 32 "
                "bytes of data", "expect": "error"}
    # header length larger than the file
    body = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' + b"\0\0\0\0"
    (OUT / "header-length-overrun.safetensors").write_bytes(struct.pack("<Q", 4096) + body)
    files["header-length-overrun.safetensors"] = {
        "what": f"header length field says 4096 bytes; the whole file is {8 + len(body)} bytes", "expect": "error"}
    # a pickle checkpoint (zip format, as torch.save writes and SD .ckpt files are)
    g = torch.Generator().manual_seed(4242)
    obj = {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.randn((8, 4, 3, 3), generator=g),
                          "model.diffusion_model.input_blocks.0.0.bias": torch.randn((8,), generator=g)},
           "global_step": 470000, "epoch": 6}
    buf = io.BytesIO()
    torch.save(obj, buf)
    (OUT / "pickle.ckpt").write_bytes(buf.getvalue())
    files["pickle.ckpt"] = {
        "what": "torch.save() zip/pickle checkpoint ({'state_dict': {2 U-Net tensors}, 'global_step', 'epoch'}); "
                "starts with the zip magic 'PK\\x03\\x04', entries under archive/ (data.pkl, data/0, ...)",
        "expect": "detected as a pickle checkpoint and refused (never unpickled)"}

    # what the safetensors library says about each
    for name in ("truncated.safetensors", "not-safetensors.safetensors", "header-overrun.safetensors",
                 "header-length-overrun.safetensors", "pickle.ckpt"):
        try:
            with safe_open(str(OUT / name), framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
            res = "opened without error"
        except Exception as e:  # noqa: BLE001
            res = f"{type(e).__name__}: {str(e)[:200]}"
        files[name]["python_safetensors_says"] = res
        files[name]["bytes"] = (OUT / name).stat().st_size
        log(f"  {name}: safetensors says {res}")
    back = torch.load(io.BytesIO((OUT / "pickle.ckpt").read_bytes()), weights_only=True)
    assert torch.equal(back["state_dict"]["model.diffusion_model.input_blocks.0.0.bias"],
                       obj["state_dict"]["model.diffusion_model.input_blocks.0.0.bias"])
    assert (OUT / "pickle.ckpt").read_bytes()[:4] == b"PK\x03\x04"
    return files


# ---------------------------------------------------------------------------------------

CONVENTIONS = {
    "checkpoint_prefixes": PREFIX,
    "unet": {
        "blocks": "L = layers_per_block (2).  conv_in -> input_blocks.0.0; down_blocks.i.resnets.j -> "
                  "input_blocks.(1 + i*(L+1) + j).0; down_blocks.i.attentions.j -> input_blocks.(1 + i*(L+1) + j).1; "
                  "down_blocks.i.downsamplers.0.conv -> input_blocks.((i+1)*(L+1)).0.op; mid_block.resnets.0 -> "
                  "middle_block.0, mid_block.attentions.0 -> middle_block.1, mid_block.resnets.1 -> middle_block.2; "
                  "up_blocks.i.resnets.j -> output_blocks.(i*(L+1) + j).0; up_blocks.i.attentions.j -> "
                  "output_blocks.(i*(L+1) + j).1; up_blocks.i.upsamplers.0.conv -> output_blocks.(i*(L+1) + L).1.conv "
                  "when the up block has no attentions (up_blocks.0), else .2.conv; time_embedding.linear_1/2 -> "
                  "time_embed.0/2; conv_norm_out -> out.0; conv_out -> out.2",
        "resnet": UNET_RESNET,
        "attention": "Transformer2DModel and SpatialTransformer share inner names (norm, proj_in, "
                     "transformer_blocks.N.{norm1,attn1,norm2,attn2,norm3,ff}, proj_out); SD 1.x proj_in/proj_out "
                     "are 1x1 convs [C, C, 1, 1] in both",
    },
    "vae": {
        "blocks": "encoder.down_blocks.i.resnets.j -> encoder.down.i.block.j; encoder.down_blocks.i.downsamplers.0.conv "
                  "-> encoder.down.i.downsample.conv; decoder.up_blocks.i -> decoder.up.(n-1-i) (reversed; n = 4): "
                  ".resnets.j -> .block.j, .upsamplers.0.conv -> .upsample.conv; {encoder,decoder}.mid_block.resnets.0/1 "
                  "-> mid.block_1/block_2; mid_block.attentions.0 -> mid.attn_1; conv_norm_out -> norm_out; conv_in, "
                  "conv_out, quant_conv, post_quant_conv unchanged",
        "resnet": VAE_RESNET,
        "mid_attention": VAE_ATTN,
        "mid_attention_shapes": "LDM q/k/v/proj_out weights are 1x1 conv weights [C, C, 1, 1]; diffusers' are "
                                "linear [C, C] (same values, reshape)",
    },
    "text_encoder": "cond_stage_model.transformer. + the diffusers folder's key (text_model.embeddings..., "
                    "text_model.encoder.layers.N..., text_model.final_layer_norm...); the older layout drops "
                    "'text_model.'; transformers 5's CLIPTextModel itself has no text_model wrapper",
    "ignored_keys": "model_ema.* (EMA copies: 'model_ema.' + ('diffusion_model.' + LDM U-Net key) without dots, "
                    "plus model_ema.decay (f32 0-d) and model_ema.num_updates (i32 0-d)); the LatentDiffusion schedule "
                    "buffers betas, alphas_cumprod, ... (1000-vectors, at the top level); "
                    "cond_stage_model.transformer[.text_model].embeddings.position_ids (int64 [1, 77])",
    "ema_values": "the model_ema.* weights differ from the live ones (live + 0.01*randn): a loader that takes them "
                  "fails the comparison",
}


def sizes() -> dict:
    return {p.name: p.stat().st_size for p in sorted(OUT.iterdir()) if p.is_file()}


def main() -> None:
    mf._install_log_capture()
    t_start = time.time()
    import diffusers
    import peft
    import safetensors
    import transformers

    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, threads {torch.get_num_threads()}")
    if not (MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        sys.exit("error: tests/fixtures/models/tiny-a missing; run scripts/make_fixtures.py first")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    timings = {}

    t0 = time.time()
    folder = load_folder()
    ldm = to_ldm(folder)
    files = {}
    log("== single-file checkpoints")
    files.update(make_checkpoints(folder, ldm))
    files.update(make_vae_file(folder, ldm))
    key_map = {"unet": {d: PREFIX["unet"] + lk for lk, (d, _) in ldm["unet"].items()},
               "vae": {d: PREFIX["vae"] + lk for lk, (d, _) in ldm["vae"].items()},
               "text_encoder": {d: PREFIX["text_encoder"] + lk for lk, (d, _) in ldm["text_encoder"].items()}}
    key_map = {c: dict(sorted(m.items())) for c, m in key_map.items()}
    mf.write_json(OUT / "ldm-key-map.json", key_map)
    timings["checkpoints"] = time.time() - t0

    t0 = time.time()
    log("== architecture probes")
    files.update(make_probes())
    timings["probes"] = time.time() - t0

    t0 = time.time()
    log("== LoRAs")
    files.update(make_lora_files(folder))
    expected, raw_reports = make_expected(folder)
    files.update(expected)
    bad_loras = try_bad_loras()
    for name, res in bad_loras.items():
        files[name]["diffusers"] = res
    timings["loras"] = time.time() - t0

    t0 = time.time()
    log("== broken files")
    files.update(make_bad_files())
    timings["bad files"] = time.time() - t0

    files["ldm-key-map.json"] = {"what": "the diffusers -> LDM key mapping used for tiny-a (with the component "
                                         "prefixes); VAE mid-attention q/k/v/proj_out weights are also reshaped "
                                         "[C, C] -> [C, C, 1, 1]"}
    meta = {
        "source_model": mf._rel(MODEL_DIR),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__,
                     "safetensors": safetensors.__version__},
        "conventions": CONVENTIONS,
        "lora_tolerance": LORA_TOLERANCE,
        "verification": (
            "tiny-a*.safetensors / vae-tiny-a.safetensors: (1) own check: every tensor of the file equals the "
            "tiny-a folder's under the mapping (cast to the file's dtype); (2) diffusers: "
            "StableDiffusionPipeline.from_single_file(file, config=tests/fixtures/models/tiny-a, "
            "local_files_only=True, dtype=float32) and UNet2DConditionModel / AutoencoderKL.from_single_file(file, "
            "config=..., subfolder=...) load it, and every tensor of every component equals the folder's, rounded "
            "to the file's dtype (the f16/bf16 files prove the weights come from the file, not the config folder).  "
            "Counts per component are under diffusers_verification."),
        "diffusers_lora_behaviour": lora_behaviour_summary(raw_reports, bad_loras),
        "files": files,
        "sizes": {},
    }
    mf.write_json(OUT / "meta.json", meta)
    meta["sizes"] = sizes()
    meta["sizes"]["meta.json"] = 0
    mf.write_json(OUT / "meta.json", meta)
    # meta.json's own size, then once more so the number is right (it has a fixed width from here on)
    for _ in range(3):
        meta["sizes"]["meta.json"] = (OUT / "meta.json").stat().st_size
        mf.write_json(OUT / "meta.json", meta)
    assert meta["sizes"]["meta.json"] == (OUT / "meta.json").stat().st_size
    assert set(meta["sizes"]) == set(files) | {"meta.json"}, sorted(set(meta["sizes"]) ^ set(files))

    log("sizes:")
    total = mf.report_sizes(OUT)
    log(f"timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if mf.COLLECTED:
        log(f"warnings from diffusers/transformers/peft/python ({len(mf.COLLECTED)}):")
        for w in dict.fromkeys(mf.COLLECTED):
            log(f"  {w[:300]}")
    log(f"total {total:,} bytes; time {time.time() - t_start:.1f}s")


def lora_behaviour_summary(raw_reports: dict, bad: dict) -> dict:
    k = raw_reports["expected-kohya-0.7.safetensors"]
    wrong = {m: v for m, v in k["effective_alphas"].items() if abs(v["diffusers_alpha"] - v["alpha"]) > 1e-3}
    right = sorted(m for m in k["effective_alphas"] if m not in wrong)
    # the text below describes what was observed; stop if a diffusers version behaves otherwise
    alphas = [a for _, _, _, a in KOHYA_MODULES if a is not None]
    common = max(set(alphas), key=alphas.count)
    attn_or_te = lambda m: m.startswith("text_encoder.") or m.split(".")[-1] in ("to_q", "to_k", "to_v") \
        or m.endswith("to_out.0")  # noqa: E731
    for c, m, r, a in KOHYA_MODULES:
        key = f"{c}.{m}"
        if a is None:
            assert key in wrong and wrong[key]["diffusers_alpha"] == common, (key, wrong.get(key))
        elif a != common and attn_or_te(key):
            assert key in wrong and wrong[key]["diffusers_alpha"] == common, (key, wrong.get(key))
        else:
            assert key in right, (key, k["effective_alphas"][key])
    assert not k["in_file_but_unchanged_by_diffusers"] and not k["changed_by_diffusers_but_not_in_file"]
    assert bad["lora-sdxl.safetensors"]["load_lora_weights"].startswith("NoMatchingPeftModuleError")
    assert bad["loha.safetensors"]["load_lora_weights"].startswith("ValueError")
    assert not bad["lora-sdxl.safetensors"]["weights_changed"] and not bad["loha.safetensors"]["weights_changed"]
    assert bad["lora-bad-key.safetensors"]["fuse_lora"] == "ok"
    return {
        "summary": (
            "diffusers' load_lora_weights + fuse_lora loads every module type of lora-kohya.safetensors and "
            "lora-peft.safetensors (U-Net attention to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, "
            "time_emb_proj, 1x1 conv proj_in/proj_out, 3x3 conv resnet conv1/conv2 with [out, r, 1, 1] up, "
            "text encoder q/k/v/out_proj and mlp fc1/fc2) and fuses W + scale * s * up @ down with the right "
            "reshape for convs.  The PEFT file agrees with the formula (s = 1) for every module.  For the kohya "
            "file the per-module scale s = alpha/rank is wrong for some modules: see kohya_alphas."),
        "kohya_alphas": {
            "modules_with_wrong_alpha": wrong,
            "modules_with_right_alpha": right,
            "explanation": (
                "diffusers uses the file's most common alpha as the default and keeps per-module alphas "
                "in peft's alpha_pattern, but the pattern keys it builds for U-Net attention projections "
                "(…attn1.processor.to_k_lora.down.weight) and for text-encoder modules (…self_attn, "
                "text_model.… in transformers 5's unwrapped CLIPTextModel) match no module: peft warns "
                "'alpha_pattern keys did not match any targeted module and were ignored' and those modules "
                "get the most common alpha.  A module without .alpha also gets the most common alpha, not "
                "alpha = rank as in kohya's sd-scripts / A1111.  U-Net ff / proj_in / proj_out / resnet conv "
                "modules keep their own alpha.  The expected-*.safetensors files with kohya therefore come from "
                "diffusers with the alphas folded into lora_down (fold_kohya_alphas), which matches kohya's formula."),
        },
        "raw_diffusers_vs_own_formula": raw_reports,
        "other_files": {
            "lora-bad-key.safetensors": "loads; peft warns about the unexpected keys of the missing module and "
                                        "ignores them; the valid module is fused (files[...].diffusers)",
            "lora-sdxl.safetensors": "load_lora_weights raises NoMatchingPeftModuleError (target modules not "
                                     "found); nothing changes",
            "loha.safetensors": "load_lora_weights raises ValueError ('keys have not been correctly renamed'): "
                                "diffusers has no LoHa support for SD 1.x; nothing changes",
        },
    }


if __name__ == "__main__":
    main()
