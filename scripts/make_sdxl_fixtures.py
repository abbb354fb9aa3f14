#!/usr/bin/env python3
"""Generate ditail's SDXL test fixtures: a tiny SDXL-structured model, golden tensors, an SDXL
single-file checkpoint and SDXL LoRAs, with diffusers on CPU, offline, random weights.

Writes, deterministically (fixed seeds, 2 threads; a rerun gives byte-identical files):

  tests/fixtures/models/tiny-xl/        a diffusers StableDiffusionXLPipeline folder (f32) with
                                        SDXL base 1.0's configs at tiny widths (TINY_XL below):
                                        unet/ (DownBlock2D + 2 CrossAttnDownBlock2D, linear proj_in,
                                        transformer depths [1, 2, 3], addition_embed_type text_time),
                                        text_encoder/ (CLIPTextModel, quick_gelu, like ViT-L),
                                        text_encoder_2/ (CLIPTextModelWithProjection, gelu, like
                                        OpenCLIP bigG), tokenizer/ (pads with <|endoftext|>),
                                        tokenizer_2/ (pads with "!" as SDXL's does), vae/ (scaling
                                        factor 0.13025, force_upcast), scheduler/ (SDXL's
                                        EulerDiscreteScheduler config, DDIM-compatible keys),
                                        model_index.json.  Random weights; every GroupNorm/LayerNorm
                                        perturbed (make_fixtures.perturb).  The tokenizers are the
                                        1000-entry cut-down CLIP BPE of the SD tiny models.
  tests/fixtures/golden/tiny-xl/        golden tensors in the exchange format of
                                        examples/components.rs (one file = inputs + outputs):
    text.safetensors                    input_ids, input_ids_2 [2, 77] (i64) -> text_embeddings
                                        [2, 77, 32 + 48] (the two encoders' hidden_states[-2], no final
                                        layer norm, concatenated: StableDiffusionXLPipeline.encode_prompt),
                                        pooled_text_embeds [2, 40] (text_encoder_2's text_embeds),
                                        te1_penultimate, te2_penultimate, text_embeddings_skip1
                                        (encode_prompt with clip_skip=1: hidden_states[-3] of both)
    unet_square.safetensors             sample [2, 4, 16, 16], timestep [1] (f32), encoder_hidden_states,
                                        text_embeds [2, 40], time_ids [2, 6] -> noise_pred and Ditail's
                                        sites (site.up_blocks.1.resnets.1, site.up_blocks.{i}.attentions.{j}
                                        .transformer_blocks.{d}.q / .k for every transformer block of
                                        up_blocks.0 and up_blocks.1), captured with forward hooks
    unet_odd.safetensors                the same at a 9 x 14 latent, batch 1, timestep i64
    vae.safetensors                     image [1, 3, 32, 32] -> posterior_mean; latents [1, 4, 4, 4] -> decoded
    meta.json                           configs, shapes, dtypes, prompts, versions, what each tensor is
  tests/fixtures/loading/tiny-xl.safetensors
                                        tiny-xl as an SDXL (sgm) single-file checkpoint, f32:
                                        model.diffusion_model.* (U-Net, LDM names, label_emb.0.0/0.2),
                                        first_stage_model.* (VAE, LDM names),
                                        conditioner.embedders.0.transformer.text_model.* (text_encoder,
                                        HF CLIP names, + position_ids), conditioner.embedders.1.model.*
                                        (text_encoder_2 in OpenCLIP names: token_embedding, positional_embedding,
                                        transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias, attn.out_proj,
                                        ln_2, mlp.c_fc, mlp.c_proj}, ln_final, text_projection = HF weight^T,
                                        logit_scale); checked with StableDiffusionXLPipeline.from_single_file
  tests/fixtures/loading/ldm-key-map-xl.json
                                        diffusers key -> single-file key, per component (notation in meta-xl.json)
  tests/fixtures/loading/lora-xl-kohya.safetensors, lora-xl-peft.safetensors
                                        LoRAs for tiny-xl: kohya sd-scripts SDXL naming (lora_unet_<sgm module>,
                                        lora_te1_, lora_te2_; f16, per-module alphas, a LoCon 3x3 conv) and
                                        diffusers/PEFT naming (unet., text_encoder., text_encoder_2.; f32)
  tests/fixtures/loading/expected-xl-kohya-0.7.safetensors, expected-xl-peft-0.7.safetensors
                                        the weights that change when diffusers fuses the LoRA at scale 0.7
                                        (load_lora_weights + fuse_lora), keyed unet.<key>,
                                        text_encoder.text_model.<key>, text_encoder_2.text_model.<key>;
                                        checked against W + 0.7 * alpha/rank * up @ down
  tests/fixtures/loading/meta-xl.json   what each loading file is, the conventions, the checks, and what
                                        diffusers did

Full-size mode (``--full-size OUTDIR``, for tests/full_size.rs; not committed, OUTDIR = fixtures-full is
git-ignored) writes instead, leaving the tiny fixtures alone:

  OUTDIR/sdxl/model/                    a StableDiffusionXLPipeline folder with SDXL base 1.0's exact configs
                                        (unet 2.57 B params, vae, text_encoder ViT-L, text_encoder_2 bigG,
                                        scheduler, model_index.json), random weights initialised as
                                        make_fixtures.py --full-size does (library init + make_fixtures.perturb),
                                        saved only as the fp16 variant (*.fp16.safetensors, ~7 GB); tokenizer/
                                        and tokenizer_2/ are the full CLIP BPE of models/clip (tokenizer_2 pads
                                        with "!")
  OUTDIR/sdxl/golden/                   goldens computed in f32 from the fp16-rounded weights:
    text.safetensors                    input_ids, input_ids_2 [1, 77] -> text_embeddings [1, 77, 2048],
                                        text_embeddings_skip1, pooled_text_embeds [1, 1280], te1/te2_penultimate
    unet.safetensors                    sample [1, 4, 32, 32], timestep [1] (i64, 501), encoder_hidden_states
                                        [1, 77, 2048], text_embeds [1, 1280], time_ids [1, 6] -> noise_pred,
                                        site.up_blocks.1.resnets.1 and the q / k of
                                        up_blocks.1.attentions.{1,2}.transformer_blocks.{0,1} only
    vae.safetensors                     image [1, 3, 64, 64] -> posterior_mean; latents [1, 4, 8, 8] -> decoded
    meta.json                           configs, parameter counts, versions, what each tensor is
  One network is in memory at a time (the U-Net is 10.3 GB in f32); peak RSS about 11 GB.

No "tame" folder: the SD side tames its tiny models in the Rust tests (and in
make_pipeline_fixtures.py) by scaling unet.conv_out after loading; do the same for tiny-xl.

The diffusers -> LDM/sgm key mapping is make_loading_fixtures.py's (written from the LDM module
structure) plus SDXL's label_emb, and an OpenCLIP text-tower mapping written from open_clip's
module structure (TextTransformer: token_embedding, positional_embedding, transformer.resblocks[N]
= ResidualAttentionBlock(ln_1, attn = nn.MultiheadAttention, ln_2, mlp = c_fc / gelu / c_proj),
ln_final, text_projection used as x @ text_projection).  It does not use diffusers' tables; it
is checked by loading the file back with diffusers' from_single_file.

Usage:  .venv/bin/python scripts/make_sdxl_fixtures.py [--full-size fixtures-full]
        (tiny: about 15 s on 2 cores; needs peft and
        the tiny tokenizer source models/clip of scripts/convert_clip_vocab.py).  Run it after
        make_loading_fixtures.py, which deletes tests/fixtures/loading/ before writing its files.

Size: about 6.1 MB, mostly tiny-xl twice (folder 2.6 MB, single file 2.6 MB; U-Net 1.36 MB of it:
28 transformer blocks at depths [1, 2, 3]).
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets HF_HUB_OFFLINE, OMP_WAIT_POLICY, 2 threads)
import make_loading_fixtures as mlf  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

torch.set_num_threads(2)

log = mf.log
REPO = mf.REPO
NAME = "tiny-xl"
MODEL_DIR = mf.FIXTURES / "models" / NAME
GOLDEN_DIR = mf.FIXTURES / "golden" / NAME
LOADING = mf.FIXTURES / "loading"
MAX_LEN = mf.MAX_LEN
SEED = 5000

# ---------------------------------------------------------------------------------------
# configs: SDXL base 1.0's config files with the widths swapped

TE1_HIDDEN, TE2_HIDDEN, TE2_PROJ = 32, 48, 40
TIME_DIM = 8  # addition_time_embed_dim (SDXL: 256)


def unet_config_xl() -> dict:
    # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, widths [320, 640, 1280] -> [8, 16, 16],
    # heads [5, 10, 20] -> [1, 2, 2] (head dim 64 -> 8), depths [1, 2, 10] -> [1, 2, 3],
    # addition_time_embed_dim 256 -> 8, cross_attention_dim 768 + 1280 -> 32 + 48,
    # projection_class_embeddings_input_dim 6 * 256 + 1280 -> 6 * 8 + 40, norm groups 32 -> 4
    return dict(
        act_fn="silu",
        addition_embed_type="text_time",
        addition_embed_type_num_heads=64,
        addition_time_embed_dim=TIME_DIM,
        attention_head_dim=[1, 2, 2],  # SDXL stores head *counts* under this name
        block_out_channels=[8, 16, 16],
        center_input_sample=False,
        class_embed_type=None,
        class_embeddings_concat=False,
        conv_in_kernel=3,
        conv_out_kernel=3,
        cross_attention_dim=TE1_HIDDEN + TE2_HIDDEN,
        cross_attention_norm=None,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        downsample_padding=1,
        dual_cross_attention=False,
        encoder_hid_dim=None,
        encoder_hid_dim_type=None,
        flip_sin_to_cos=True,
        freq_shift=0,
        in_channels=4,
        layers_per_block=2,
        mid_block_only_cross_attention=None,
        mid_block_scale_factor=1,
        mid_block_type="UNetMidBlock2DCrossAttn",
        norm_eps=1e-5,
        norm_num_groups=4,
        num_attention_heads=None,
        num_class_embeds=None,
        only_cross_attention=False,
        out_channels=4,
        projection_class_embeddings_input_dim=6 * TIME_DIM + TE2_PROJ,
        resnet_out_scale_factor=1.0,
        resnet_skip_time_act=False,
        resnet_time_scale_shift="default",
        sample_size=16,
        time_cond_proj_dim=None,
        time_embedding_act_fn=None,
        time_embedding_dim=None,
        time_embedding_type="positional",
        timestep_post_act=None,
        transformer_layers_per_block=[1, 2, 3],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        upcast_attention=None,
        use_linear_projection=True,
    )


def vae_config_xl() -> dict:
    # SDXL's vae/config.json (SD's VAE structure, scaling_factor 0.13025, force_upcast) at
    # tiny-a's VAE widths; sample_size 1024 -> 128 (= unet sample_size * 8)
    return dict(mf.vae_config((8, 16, 16, 16), 4, sample_size=128), scaling_factor=0.13025, force_upcast=True)


def text_configs_xl() -> tuple[dict, dict]:
    # text_encoder/config.json (CLIP ViT-L/14 text tower, quick_gelu) and text_encoder_2/config.json
    # (OpenCLIP ViT-bigG/14 text tower as CLIPTextModelWithProjection, exact gelu) with the widths
    # swapped.  Both keep SDXL's legacy special ids (pad 1, bos 0, eos 2): with eos_token_id == 2
    # transformers pools at argmax(input_ids), i.e. the first <|endoftext|> (the highest id).
    te1 = mf.text_config(TE1_HIDDEN, 64, 3, 4, mf.TINY_VOCAB, TE1_HIDDEN, special_ids=(1, 0, 2))
    te2 = dict(mf.text_config(TE2_HIDDEN, 96, 4, 3, mf.TINY_VOCAB, TE2_PROJ, special_ids=(1, 0, 2)),
               hidden_act="gelu")
    return te1, te2


SCHEDULER_CONFIG_XL = {
    # SDXL base 1.0's scheduler/scheduler_config.json
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def model_index_xl() -> dict:
    import diffusers

    return {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


PROMPTS = ["a photo of a cat", "a watercolor painting of a lighthouse at dusk, best quality!"]
# (case, latent h, w, batch, timestep, timestep dtype, time_ids per row)
UNET_CASES = [
    ("square", 16, 16, 2, 801, torch.float32,
     [[128.0, 128.0, 0.0, 0.0, 128.0, 128.0], [256.0, 192.0, 16.0, 8.0, 128.0, 128.0]]),
    ("odd", 9, 14, 1, 21, torch.int64, [[80.0, 100.0, 4.0, 6.0, 72.0, 112.0]]),
]
RESNET_SITE = "site.up_blocks.1.resnets.1"
# (up block, attention) whose every transformer block's attn1 q/k is captured
ATTN_SITES = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def attn_site_names(unet) -> list[tuple[int, int, int]]:
    out = []
    for i, j in ATTN_SITES:
        for d in range(len(unet.up_blocks[i].attentions[j].transformer_blocks)):
            out.append((i, j, d))
    return out


# ---------------------------------------------------------------------------------------
# building and saving the folder


def build_models():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    te1_cfg, te2_cfg = text_configs_xl()
    gen = torch.Generator().manual_seed(SEED + 7)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**unet_config_xl())
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(**vae_config_xl())
    torch.manual_seed(SEED + 2)
    te1 = CLIPTextModel(CLIPTextConfig(**te1_cfg))
    torch.manual_seed(SEED + 3)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**te2_cfg))
    models = {"unet": unet, "vae": vae, "text_encoder": te1, "text_encoder_2": te2}
    info = {}
    for name, m in models.items():
        m.eval()
        info[name] = mf.perturb(m, gen)
        info[name]["parameters"] = sum(p.numel() for p in m.parameters())
    return models, info


def write_tokenizer(path: Path, pad: str, files: tuple[bytes, bytes] | None = None) -> None:
    """files: (vocab.json, merges.txt) bytes; None = the 1000-entry tiny BPE."""
    path.mkdir(parents=True)
    vocab_bytes, merges_bytes = mf.tiny_tokenizer_files() if files is None else files
    (path / "vocab.json").write_bytes(vocab_bytes)
    (path / "merges.txt").write_bytes(merges_bytes)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    mf.write_json(path / "special_tokens_map.json", special)
    mf.write_json(path / "tokenizer_config.json",
                  dict(special, tokenizer_class="CLIPTokenizer", model_max_length=MAX_LEN, do_lower_case=True,
                       add_prefix_space=False, errors="replace", clean_up_tokenization_spaces=True))


def save_folder(models: dict) -> None:
    import diffusers

    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    MODEL_DIR.mkdir(parents=True)
    models["unet"].save_pretrained(MODEL_DIR / "unet", safe_serialization=True)
    models["vae"].save_pretrained(MODEL_DIR / "vae", safe_serialization=True)
    models["text_encoder"].save_pretrained(MODEL_DIR / "text_encoder", safe_serialization=True)
    mf._canonical_text_encoder_keys(MODEL_DIR / "text_encoder" / "model.safetensors")
    models["text_encoder_2"].save_pretrained(MODEL_DIR / "text_encoder_2", safe_serialization=True)
    with safe_open(str(MODEL_DIR / "text_encoder_2" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    # CLIPTextModelWithProjection keeps its text_model wrapper in transformers 5: SDXL's real layout
    assert all(k.startswith("text_model.") or k == "text_projection.weight" for k in keys), keys[:4]
    assert "text_projection.weight" in keys
    write_tokenizer(MODEL_DIR / "tokenizer", "<|endoftext|>")
    write_tokenizer(MODEL_DIR / "tokenizer_2", "!")
    mf.write_json(MODEL_DIR / "scheduler" / "scheduler_config.json",
                  dict(SCHEDULER_CONFIG_XL, _diffusers_version=diffusers.__version__))
    mf.write_json(MODEL_DIR / "model_index.json", model_index_xl())
    stray = [p.name for p in MODEL_DIR.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt")]
    assert not stray, stray


def load_pipe():
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(MODEL_DIR), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        m = getattr(pipe, comp)
        m.eval()
        for n, p in m.named_parameters():
            assert p.dtype == torch.float32, (comp, n, p.dtype)
    return pipe


def check_pipe(pipe, models: dict) -> dict:
    """The folder loads as StableDiffusionXLPipeline; weights, tokenizers and configs are as written."""
    from diffusers import DDIMScheduler

    for comp, m in models.items():
        mf.check_roundtrip(m, getattr(pipe, comp), False, comp)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    ddim = DDIMScheduler.from_pretrained(str(MODEL_DIR), subfolder="scheduler")
    assert ddim.config.steps_offset == 1 and not ddim.config.set_alpha_to_one
    assert ddim.config.timestep_spacing == "leading" and ddim.config.beta_schedule == "scaled_linear"
    assert pipe.vae.config.scaling_factor == 0.13025 and pipe.vae.config.force_upcast
    assert pipe.config.force_zeros_for_empty_prompt
    assert pipe.unet.config.num_attention_heads is None
    t1, t2 = pipe.tokenizer, pipe.tokenizer_2
    assert len(t1) == len(t2) == mf.TINY_VOCAB
    bang = t2.convert_tokens_to_ids("!")
    assert t2.pad_token == "!" and t2.pad_token_id == bang, (t2.pad_token, t2.pad_token_id)
    assert t1.pad_token_id == mf.TINY_EOS
    assert (t1.bos_token_id, t1.eos_token_id) == (t2.bos_token_id, t2.eos_token_id) == (mf.TINY_BOS, mf.TINY_EOS)
    # what the two encoders see: the same ids up to the first <|endoftext|>, then different padding --
    # except that tokenizer_2 splits every "!" of the prompt off as its (special) pad token: id of "!"
    # instead of BPE's "!</w>" / "!!!</w>" ...
    bang_w = t1.convert_tokens_to_ids("!</w>")
    bpe_ids_2 = []
    for p in PROMPTS:
        a = t1(p, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        b = t2(p, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        n = a.index(mf.TINY_EOS) + 1
        assert a[n:] == [mf.TINY_EOS] * (MAX_LEN - n) and b[n:] == [bang] * (MAX_LEN - n)
        if "!" not in p:
            assert a[:n] == b[:n]
        else:
            assert a[:n] != b[:n] and bang_w in a[:n] and b[:n].count(bang) == p.count("!")
        bpe_ids_2.append(a[:n] + [bang] * (MAX_LEN - n))
    for p, want in [("quality!", ["qu", "al", "ity</w>", "!"]), ("wow!!! ok", ["w", "o", "w</w>", "!", "!", "!", "o", "k</w>"])]:
        assert t2.convert_ids_to_tokens(t2(p).input_ids[1:-1]) == want, t2.convert_ids_to_tokens(t2(p).input_ids)
        assert "!" not in t1.convert_ids_to_tokens(t1(p).input_ids)
    processors = mf.check_processors(pipe.unet)
    return {"bang_id": bang, "bang_w_id": bang_w, "attention_processors": processors, "bpe_ids_2": bpe_ids_2}


# ---------------------------------------------------------------------------------------
# golden files


@torch.no_grad()
def golden_text(pipe, prompts: list[str] = PROMPTS, eos_id: int = mf.TINY_EOS) -> tuple[dict, dict, dict]:
    te1, te2 = pipe.text_encoder, pipe.text_encoder_2
    ids1 = pipe.tokenizer(prompts, padding="max_length", max_length=MAX_LEN, truncation=True,
                          return_tensors="pt").input_ids.to(torch.int64)
    ids2 = pipe.tokenizer_2(prompts, padding="max_length", max_length=MAX_LEN, truncation=True,
                            return_tensors="pt").input_ids.to(torch.int64)
    o1 = te1(ids1, output_hidden_states=True)
    o2 = te2(ids2, output_hidden_states=True)
    assert len(o1.hidden_states) == te1.config.num_hidden_layers + 1
    assert len(o2.hidden_states) == te2.config.num_hidden_layers + 1
    pooled = o2.text_embeds
    # own pooling rule: final layer norm at the first <|endoftext|> (= argmax id), then the projection
    eos = ids2.argmax(dim=-1)
    assert torch.equal(eos, (ids2 == eos_id).int().argmax(dim=-1))
    tower = te2.text_model
    pooled_own = te2.text_projection(tower.final_layer_norm(o2.hidden_states[-1])[torch.arange(ids2.shape[0]), eos])
    assert torch.allclose(pooled_own, pooled, atol=1e-6, rtol=0), (pooled_own - pooled).abs().max()
    out = {
        "text_embeddings": torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1),
        "pooled_text_embeds": pooled,
        "te1_penultimate": o1.hidden_states[-2],
        "te2_penultimate": o2.hidden_states[-2],
        "text_embeddings_skip1": torch.cat([o1.hidden_states[-3], o2.hidden_states[-3]], dim=-1),
    }
    # diffusers' own encode_prompt on the loaded folder must give exactly these
    checks = {}
    pe, ne, pp, npp = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                         do_classifier_free_guidance=False)
    assert ne is None and npp is None
    assert torch.equal(pe, out["text_embeddings"]) and torch.equal(pp, out["pooled_text_embeds"])
    checks["encode_prompt(clip_skip=None)"] = "prompt_embeds == text_embeddings, pooled == pooled_text_embeds (exact)"
    pe1, _, pp1, _ = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                        do_classifier_free_guidance=False, clip_skip=1)
    assert torch.equal(pe1, out["text_embeddings_skip1"]) and torch.equal(pp1, out["pooled_text_embeds"])
    checks["encode_prompt(clip_skip=1)"] = ("prompt_embeds == text_embeddings_skip1 (hidden_states[-3] of both "
                                            "encoders, no final layer norm); pooled unchanged (exact)")
    # negative prompts: force_zeros_for_empty_prompt, and clip_skip is not applied to them
    _, ne, _, npp = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=True)
    assert not ne.any() and not npp.any() and ne.shape == pe.shape and npp.shape == pp.shape
    _, ne_e, _, npp_e = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                           do_classifier_free_guidance=True, negative_prompt="")
    assert ne_e.abs().max() > 0 and npp_e.abs().max() > 0
    _, ne_e1, _, npp_e1 = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=True, negative_prompt="", clip_skip=1)
    assert torch.equal(ne_e1, ne_e) and torch.equal(npp_e1, npp_e)
    e1 = pipe.tokenizer([""], padding="max_length", max_length=MAX_LEN, return_tensors="pt").input_ids
    e2 = pipe.tokenizer_2([""], padding="max_length", max_length=MAX_LEN, return_tensors="pt").input_ids
    ref = torch.cat([te1(e1, output_hidden_states=True).hidden_states[-2],
                     te2(e2, output_hidden_states=True).hidden_states[-2]], dim=-1)
    assert torch.equal(ne_e[0], ref[0])
    checks["negative_prompt=None with CFG"] = ("negative prompt_embeds and pooled are all zeros "
                                               "(force_zeros_for_empty_prompt true in model_index.json)")
    checks['negative_prompt="" with CFG'] = ('"" is encoded normally (not zeros): force_zeros only applies when '
                                             "negative_prompt is None")
    checks["clip_skip and negative prompts"] = ("diffusers 0.42.1 applies clip_skip to the prompt only: negative "
                                                "embeddings always use hidden_states[-2] (clip_skip=1 gives the same "
                                                "negative embeddings as clip_skip=None)")
    return {"input_ids": ids1, "input_ids_2": ids2}, out, checks


@torch.no_grad()
def golden_unet(unet, sample, timestep, ehs, text_embeds, time_ids, sites=None) -> dict:
    """sites: (up block, attention, transformer block) triples; None = attn_site_names(unet)."""
    cond = {"text_embeds": text_embeds, "time_ids": time_ids}
    plain = unet(sample, timestep, encoder_hidden_states=ehs, added_cond_kwargs=cond).sample
    store: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    handles = []

    def grab(key):
        def hook(_module, _inputs, output):
            store[key] = output.detach().clone()
            calls[key] = calls.get(key, 0) + 1

        return hook

    handles.append(unet.up_blocks[1].resnets[1].conv2.register_forward_hook(grab(RESNET_SITE)))
    sites = attn_site_names(unet) if sites is None else sites
    for i, j, d in sites:
        attn1 = unet.up_blocks[i].attentions[j].transformer_blocks[d].attn1
        assert not attn1.is_cross_attention
        base = f"site.up_blocks.{i}.attentions.{j}.transformer_blocks.{d}"
        handles.append(attn1.to_q.register_forward_hook(grab(base + ".q")))
        handles.append(attn1.to_k.register_forward_hook(grab(base + ".k")))
    try:
        hooked = unet(sample, timestep, encoder_hidden_states=ehs, added_cond_kwargs=cond).sample
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(plain, hooked), "forward hooks changed the output"
    assert len(store) == 1 + 2 * len(sites) and all(c == 1 for c in calls.values()), calls
    b = sample.shape[0]
    for k, v in store.items():
        assert v.shape[0] == b and v.dim() == (4 if k == RESNET_SITE else 3), (k, v.shape)
    return {"noise_pred": plain, **dict(sorted(store.items()))}


def make_goldens(pipe, info: dict, notes: list[str], pipe_checks: dict) -> dict:
    import diffusers
    import safetensors
    import transformers

    if GOLDEN_DIR.exists():
        shutil.rmtree(GOLDEN_DIR)
    GOLDEN_DIR.mkdir(parents=True)
    files = {}
    inputs, outputs, text_checks = golden_text(pipe)
    files["text.safetensors"] = mf.write_golden(GOLDEN_DIR / "text.safetensors", inputs, outputs)
    log(f"  text: ids {inputs['input_ids'][1, :24].tolist()}... / ids_2 tail {inputs['input_ids_2'][0, 5:12].tolist()}")

    # VAE
    g = torch.Generator().manual_seed(SEED + 20)
    image = torch.rand((1, 3, 32, 32), generator=g, dtype=torch.float32) * 2.0 - 1.0
    latents = mf._randn((1, 4, 4, 4), SEED + 21)
    out = mf.golden_vae(pipe.vae, image, latents)
    assert out["posterior_mean"].shape == (1, 4, 4, 4) and out["decoded"].shape == (1, 3, 32, 32)
    files["vae.safetensors"] = mf.write_golden(GOLDEN_DIR / "vae.safetensors", {"image": image, "latents": latents}, out)

    # U-Net
    cross = pipe.unet.config.cross_attention_dim
    cases = []
    for ci, (case, h, w, b, t, tdt, tids) in enumerate(UNET_CASES):
        sample = mf._randn((b, 4, h, w), SEED + 100 + ci)
        ehs = mf._randn((b, MAX_LEN, cross), SEED + 200 + ci)
        text_embeds = mf._randn((b, TE2_PROJ), SEED + 300 + ci)
        time_ids = torch.tensor(tids, dtype=torch.float32)
        timestep = torch.tensor([t], dtype=tdt)
        out = golden_unet(pipe.unet, sample, timestep, ehs, text_embeds, time_ids)
        assert out["noise_pred"].shape == sample.shape
        fname = f"unet_{case}.safetensors"
        files[fname] = mf.write_golden(GOLDEN_DIR / fname, {
            "sample": sample, "timestep": timestep, "encoder_hidden_states": ehs,
            "text_embeds": text_embeds, "time_ids": time_ids}, out)
        cases.append({"case": case, "file": fname, "latent_hw": [h, w], "batch": b, "timestep": t,
                      "timestep_dtype": str(tdt).replace("torch.", ""), "time_ids": tids})
        log(f"  unet {case} {b}x4x{h}x{w} t={t}: |noise_pred|max={out['noise_pred'].abs().max():.4g}, "
            f"{len(out) - 1} sites")

    sites = attn_site_names(pipe.unet)
    model_files = sorted(p for p in MODEL_DIR.rglob("*") if p.is_file())
    te1_cfg, te2_cfg = text_configs_xl()
    meta = {
        "model": NAME,
        "model_dir": mf._rel(MODEL_DIR),
        "weights_dtype_on_disk": "float32",
        "compute_dtype": "float32",
        "tolerance": mf.TOLERANCE,
        "seed": SEED,
        "config": {"unet": unet_config_xl(), "vae": vae_config_xl(), "text_encoder": te1_cfg,
                   "text_encoder_2": te2_cfg, "scheduler": SCHEDULER_CONFIG_XL, "model_index": model_index_xl()},
        "config_checks": notes,
        "init": {"norm_perturbation": "GroupNorm/LayerNorm weight = 1 + 0.1*randn, bias = 0.1*randn; "
                                      "all-zero parameters refilled with 0.02*randn", **info},
        "attention_processors": pipe_checks["attention_processors"],
        "tokenizers": {
            "vocab": "tests/fixtures/models/tiny-*/tokenizer (1000-entry cut of CLIP's BPE; <|startoftext|> = 998, "
                     "<|endoftext|> = 999)",
            "tokenizer": "pads with <|endoftext|> (999)",
            "tokenizer_2": f"pads with \"!\" (id {pipe_checks['bang_id']}), as SDXL's tokenizer_2",
            "tokenizer_2_bang_quirk": (
                "transformers registers tokenizer_2's pad token \"!\" as a special (never split) added token, so "
                f"every \"!\" in the prompt text becomes id {pipe_checks['bang_id']} (\"!\") in tokenizer_2, where "
                f"tokenizer (and, not checked here, open_clip's SimpleTokenizer that sgm / A1111 use) apply BPE (\"!</w>\" = "
                f"{pipe_checks['bang_w_id']}, \"!!!</w>\" as one token, ...): e.g. 'wow!!! ok' -> w o w</w> ! ! ! o k</w> "
                "in tokenizer_2 but w o w</w> !!!</w> o k</w> in tokenizer.  The second prompt ends in \"!\", so "
                "input_ids_2 shows it; input_ids_2_bpe below is what a plain-BPE tokenizer padding with \"!\" gives"),
            "input_ids_2_bpe": pipe_checks["bpe_ids_2"],
            "text_encoder_special_ids": "both encoders' configs keep SDXL's legacy pad 1 / bos 0 / eos 2; with "
                                        "eos_token_id == 2 transformers pools at argmax(input_ids) = the first "
                                        "<|endoftext|> (999 is the largest id)",
        },
        "text": {
            "prompts": PROMPTS,
            "input_ids": "pipe.tokenizer(prompts, padding='max_length', max_length=77, truncation=True)",
            "input_ids_2": "pipe.tokenizer_2(the same prompts, same call): equal to input_ids up to the first "
                           "<|endoftext|> except for the prompt's \"!\" (see tokenizers.tokenizer_2_bang_quirk), then "
                           "\"!\" instead of <|endoftext|>",
            "te1_penultimate": "text_encoder(input_ids, output_hidden_states=True).hidden_states[-2] (no final layer norm)",
            "te2_penultimate": "text_encoder_2(input_ids_2, output_hidden_states=True).hidden_states[-2] (no final "
                               "layer norm)",
            "text_embeddings": "cat([te1_penultimate, te2_penultimate], -1): StableDiffusionXLPipeline.encode_prompt's "
                               "prompt_embeds (clip_skip None)",
            "text_embeddings_skip1": "cat of hidden_states[-3] of both encoders: encode_prompt(clip_skip=1)",
            "pooled_text_embeds": "text_encoder_2(...).text_embeds = text_projection(final_layer_norm(last hidden "
                                  "state)[first <|endoftext|>]); the same for every clip_skip",
            "checks": text_checks,
        },
        "vae": {"image": "uniform in [-1, 1], 32x32", "posterior_mean": "vae.encode(image).latent_dist.mean (no "
                "scaling factor)", "latents": "randn", "decoded": "vae.decode(latents).sample (no scaling factor)"},
        "unet": {
            "call": "unet(sample, timestep, encoder_hidden_states, added_cond_kwargs={'text_embeds': text_embeds, "
                    "'time_ids': time_ids}).sample",
            "inputs": "sample, encoder_hidden_states, text_embeds: randn; time_ids rows = [original h, original w, "
                      "crop top, crop left, target h, target w] (floats, as StableDiffusionXLPipeline._get_add_time_ids)",
            "cases": cases,
        },
        "sites": {
            RESNET_SITE: "output of up_blocks[1].resnets[1].conv2 (residual branch, before the shortcut add)",
            "site.up_blocks.{i}.attentions.{j}.transformer_blocks.{d}.q/.k": "outputs of that transformer block's "
            "attn1.to_q / attn1.to_k, [batch, tokens, inner_dim], token = row*w + col",
            "attention_sites": [f"up_blocks.{i}.attentions.{j}.transformer_blocks.{d}" for i, j, d in sites],
            "note": "every transformer block of every up-block attention (up_blocks.0: depth 3, up_blocks.1: depth 2); "
                    "hooks checked not to change noise_pred",
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "golden_files": files,
        "model_files": {mf._rel(p, MODEL_DIR): p.stat().st_size for p in model_files},
    }
    mf.write_json(GOLDEN_DIR / "meta.json", meta)
    return meta


# ---------------------------------------------------------------------------------------
# single file: diffusers -> SDXL LDM / sgm names

PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
          "text_encoder": "conditioner.embedders.0.transformer.", "text_encoder_2": "conditioner.embedders.1.model."}
COMPONENT_FILES = {"unet": "unet/diffusion_pytorch_model.safetensors",
                   "vae": "vae/diffusion_pytorch_model.safetensors",
                   "text_encoder": "text_encoder/model.safetensors",
                   "text_encoder_2": "text_encoder_2/model.safetensors"}
OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                  "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
LOGIT_SCALE = math.log(1 / 0.07)  # open_clip's initial logit_scale


def load_folder() -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for comp, rel in COMPONENT_FILES.items():
        out[comp] = mlf.read(MODEL_DIR / rel)
        assert all(v.dtype == torch.float32 for v in out[comp].values())
    return out


def unet_module_map_xl(cfg: dict) -> dict:
    m = mlf.unet_module_map(cfg)  # LDM's input_blocks / middle_block / output_blocks layout
    m["add_embedding.linear_1"] = ("label_emb.0.0", None)  # sgm: label_emb = Sequential(Sequential(Linear,
    m["add_embedding.linear_2"] = ("label_emb.0.2", None)  #      SiLU, Linear))
    return m


def openclip_parts(te2: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """text_encoder_2 (HF CLIPTextModelWithProjection) -> OpenCLIP TextTransformer tensors.

    Returns (ldm key -> tensor, diffusers key -> ldm key in the key-map notation).
    """
    hidden = te2["text_model.embeddings.token_embedding.weight"].shape[1]
    out: dict[str, torch.Tensor] = {}
    kmap: dict[str, str] = {}
    simple = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
              "text_model.embeddings.position_embedding.weight": "positional_embedding",
              "text_model.final_layer_norm.weight": "ln_final.weight",
              "text_model.final_layer_norm.bias": "ln_final.bias"}
    for d, l in simple.items():
        out[l] = te2[d]
        kmap[d] = l
    out["text_projection"] = te2["text_projection.weight"].t().contiguous()  # used as x @ text_projection
    kmap["text_projection.weight"] = "text_projection^T"
    layers = sorted({int(k.split(".")[3]) for k in te2 if k.startswith("text_model.encoder.layers.")})
    for n in layers:
        hp, lp = f"text_model.encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for part in ("weight", "bias"):
            qkv = [te2[f"{hp}self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")]
            out[f"{lp}attn.in_proj_{part}"] = torch.cat(qkv, dim=0)  # nn.MultiheadAttention packs q, k, v
            for i, p in enumerate(("q", "k", "v")):
                kmap[f"{hp}self_attn.{p}_proj.{part}"] = f"{lp}attn.in_proj_{part}[{i * hidden}:{(i + 1) * hidden}]"
            for hf, oc in OPENCLIP_LAYER.items():
                out[f"{lp}{oc}.{part}"] = te2[f"{hp}{hf}.{part}"]
                kmap[f"{hp}{hf}.{part}"] = f"{lp}{oc}.{part}"
    assert set(kmap) == set(te2), sorted(set(te2) ^ set(kmap))[:6]
    return out, kmap


def to_ldm_xl(folder) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, str]]]:
    """The single-file tensors (with prefixes) and the key map (diffusers key -> prefixed file key)."""
    ck: dict[str, torch.Tensor] = {}
    kmap: dict[str, dict[str, str]] = {}
    um = unet_module_map_xl(unet_config_xl())
    kmap["unet"] = {}
    for k, v in folder["unet"].items():
        lk = PREFIX["unet"] + mlf.map_key(k, um)
        assert lk not in ck, lk
        ck[lk] = v
        kmap["unet"][k] = lk
    vm = mlf.vae_module_map(vae_config_xl())
    kmap["vae"] = {}
    for k, v in folder["vae"].items():
        lk = mlf.map_key(k, vm)
        if ".mid.attn_1." in lk and lk.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            assert v.dim() == 2 and v.shape[0] == v.shape[1], (k, v.shape)
            v = v.reshape(*v.shape, 1, 1)  # LDM's AttnBlock uses 1x1 convolutions
        lk = PREFIX["vae"] + lk
        assert lk not in ck
        ck[lk] = v
        kmap["vae"][k] = lk
    kmap["text_encoder"] = {}
    for k, v in folder["text_encoder"].items():
        assert k.startswith("text_model.")
        ck[PREFIX["text_encoder"] + k] = v
        kmap["text_encoder"][k] = PREFIX["text_encoder"] + k
    t2, m2 = openclip_parts(folder["text_encoder_2"])
    for lk, v in t2.items():
        ck[PREFIX["text_encoder_2"] + lk] = v
    kmap["text_encoder_2"] = {d: PREFIX["text_encoder_2"] + l for d, l in m2.items()}
    # what real SDXL files carry beside the weights (a loader skips them)
    ck[PREFIX["text_encoder"] + "text_model.embeddings.position_ids"] = torch.arange(MAX_LEN, dtype=torch.int64)[None]
    ck[PREFIX["text_encoder_2"] + "logit_scale"] = torch.tensor(LOGIT_SCALE, dtype=torch.float32)
    _check_xl_names(ck)
    return ck, {c: dict(sorted(m.items())) for c, m in kmap.items()}


def _check_xl_names(ck) -> None:
    """Spot checks of sd_xl_base_1.0.safetensors' layout (SDXL's names, tiny shapes)."""
    u = PREFIX["unet"]
    for k in ["time_embed.0.weight", "time_embed.2.bias", "label_emb.0.0.weight", "label_emb.0.2.bias",
              "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight", "input_blocks.2.0.out_layers.3.bias",
              "input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight", "input_blocks.4.1.proj_in.weight",
              "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight", "input_blocks.6.0.op.bias",
              "input_blocks.8.1.transformer_blocks.2.attn2.to_k.weight", "middle_block.1.transformer_blocks.2.ff.net.2.bias",
              "middle_block.2.emb_layers.1.weight", "output_blocks.0.1.transformer_blocks.2.attn1.to_k.weight",
              "output_blocks.2.2.conv.weight", "output_blocks.5.1.transformer_blocks.1.norm3.bias",
              "output_blocks.5.2.conv.bias", "output_blocks.8.0.skip_connection.weight", "out.0.weight", "out.2.bias"]:
        assert u + k in ck, k
    assert ck[u + "input_blocks.4.1.proj_in.weight"].dim() == 2  # linear proj_in
    assert not any(k.startswith((u + "input_blocks.9", u + "output_blocks.9", u + "input_blocks.1.1",
                                 u + "output_blocks.6.1", u + "output_blocks.8.1", u + "input_blocks.9")) for k in ck)
    assert u + "input_blocks.4.1.transformer_blocks.2.attn1.to_q.weight" not in ck  # depth 2 there
    t = PREFIX["text_encoder_2"]
    for k in ["token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection", "logit_scale",
              "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.attn.in_proj_weight",
              "transformer.resblocks.0.attn.in_proj_bias", "transformer.resblocks.0.attn.out_proj.weight",
              "transformer.resblocks.3.ln_2.bias", "transformer.resblocks.3.mlp.c_fc.weight",
              "transformer.resblocks.3.mlp.c_proj.bias"]:
        assert t + k in ck, k
    assert list(ck[t + "text_projection"].shape) == [TE2_HIDDEN, TE2_PROJ]
    assert list(ck[t + "transformer.resblocks.0.attn.in_proj_weight"].shape) == [3 * TE2_HIDDEN, TE2_HIDDEN]
    assert PREFIX["text_encoder"] + "text_model.encoder.layers.2.mlp.fc2.bias" in ck


def own_check(path: Path, folder, kmap) -> int:
    """Independent of diffusers: every folder tensor is in the file under the key map."""
    ck = mlf.read(path)
    used = set()
    n = 0
    for comp, m in kmap.items():
        for d, spec in m.items():
            w = folder[comp][d]
            if spec.endswith("^T"):
                key = spec[:-2]
                got = ck[key].t()
            elif spec.endswith("]"):
                key, rng = spec[:-1].split("[")
                a, b = (int(x) for x in rng.split(":"))
                got = ck[key][a:b]
            else:
                key = spec
                got = ck[key]
                if got.dim() == 4 and w.dim() == 2:
                    got = got[:, :, 0, 0]
            assert got.dtype == torch.float32 and torch.equal(got, w), (comp, d, spec)
            used.add(key)
            n += 1
    extra = sorted(set(ck) - used)
    assert extra == sorted([PREFIX["text_encoder"] + "text_model.embeddings.position_ids",
                            PREFIX["text_encoder_2"] + "logit_scale"]), extra
    return n


def make_single_file(folder) -> tuple[dict, dict]:
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = LOADING / f"{NAME}.safetensors"
    ck, kmap = to_ldm_xl(folder)
    mlf.save(path, ck)
    n_own = own_check(path, folder, kmap)
    kind = infer_diffusers_model_type(mlf.read(path))
    mf.write_json(LOADING / "ldm-key-map-xl.json", kmap)

    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(MODEL_DIR), local_files_only=True,
                                                      dtype=torch.float32)
    counts = {}
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        counts[comp] = mlf.compare_models(comp, getattr(pipe, comp), folder[comp], torch.float32)
    assert counts == {c: len(folder[c]) for c in counts}, counts
    assert pipe.tokenizer_2.pad_token == "!" and type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    log(f"  {path.name}: {len(ck)} tensors, own check {n_own}, diffusers infer_diffusers_model_type {kind!r}, "
        f"StableDiffusionXLPipeline.from_single_file equal tensors {counts}")
    entry = {
        "what": "tiny-xl as an SDXL (sgm / LDM) single-file checkpoint, float32",
        "dtype": "float32",
        "tensors": len(ck),
        "component_prefixes": PREFIX,
        "skipped_by_loaders": {
            PREFIX["text_encoder"] + "text_model.embeddings.position_ids": "int64 [1, 77] (0..76)",
            PREFIX["text_encoder_2"] + "logit_scale": f"f32 0-d, log(1/0.07) = {LOGIT_SCALE:.6f} (OpenCLIP's "
                                                      "contrastive temperature; not used for text conditioning)",
        },
        "not_included": "no denoiser.sigmas / model_ema.* / DDPM buffers: not sure sd_xl_base_1.0 carries them "
                        "(the SD 1.x fixtures cover the skipping of such keys)",
        "weights_equal_folder_under_mapping": n_own,
        "diffusers_infer_model_type": kind,
        "diffusers_infer_model_type_note": ("diffusers detects SDXL by the key conditioner.embedders.1.model."
                                            "transformer.resblocks.9.mlp.c_proj.bias (layer 9 of bigG), which this "
                                            "4-layer text_encoder_2 does not have, hence 'v1'; a detector should look "
                                            "at conditioner.embedders.1 / label_emb instead" if kind != "xl_base" else
                                            "detected as SDXL base"),
        "diffusers_verification": {
            "call": "StableDiffusionXLPipeline.from_single_file(file, config=tests/fixtures/models/tiny-xl, "
                    "local_files_only=True, dtype=float32)",
            "tensors_equal_to_folder": counts,
        },
    }
    return {path.name: entry}, kmap


# ---------------------------------------------------------------------------------------
# LoRAs

UNET_CFG = unet_config_xl()
_UM = unet_module_map_xl(UNET_CFG)

# (component, diffusers module path, rank, alpha or None)
KOHYA_XL = [
    ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 4, 1.0),
    ("unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_k", 4, 2.0),
    ("unet", "down_blocks.2.attentions.1.transformer_blocks.2.attn2.to_k", 2, 1.0),     # in = 80 (context)
    ("unet", "down_blocks.2.attentions.1.transformer_blocks.2.attn2.to_v", 2, None),    # alpha = rank
    ("unet", "mid_block.attentions.0.transformer_blocks.1.attn1.to_out.0", 3, 1.5),
    ("unet", "up_blocks.0.attentions.2.transformer_blocks.2.attn1.to_v", 2, 0.5),
    ("unet", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q", 4, 2.0),
    ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj", 4, 1.0),
    ("unet", "up_blocks.0.attentions.1.transformer_blocks.1.ff.net.2", 2, 1.0),
    ("unet", "down_blocks.1.attentions.0.proj_in", 2, 1.0),                              # linear
    ("unet", "up_blocks.1.attentions.2.proj_out", 4, 2.0),                               # linear
    ("unet", "down_blocks.0.resnets.1.conv1", 4, 1.0),                                   # in_layers.2, 3x3 (LoCon)
    ("unet", "up_blocks.1.resnets.0.conv2", 2, 1.0),                                     # out_layers.3, 3x3
    ("unet", "down_blocks.1.resnets.0.time_emb_proj", 2, 1.0),                           # emb_layers.1
    ("unet", "up_blocks.0.resnets.0.conv_shortcut", 2, 1.0),                             # skip_connection, 1x1
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 4, 1.0),
    ("text_encoder", "text_model.encoder.layers.2.mlp.fc2", 2, 1.0),
    ("text_encoder_2", "text_model.encoder.layers.0.mlp.fc1", 4, 2.0),
    ("text_encoder_2", "text_model.encoder.layers.1.self_attn.k_proj", 2, None),         # alpha = rank
    ("text_encoder_2", "text_model.encoder.layers.3.self_attn.out_proj", 3, 1.5),
]

PEFT_XL = [
    ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 2),  # also in kohya
    ("unet", "up_blocks.0.attentions.0.transformer_blocks.2.attn2.to_k", 4),
    ("unet", "mid_block.attentions.0.transformer_blocks.2.ff.net.0.proj", 3),
    ("unet", "up_blocks.1.attentions.1.proj_in", 2),
    ("unet", "up_blocks.2.resnets.2.conv1", 3),                                  # 3x3 conv
    ("unet", "add_embedding.linear_1", 2),                                       # SDXL's added-conditioning MLP
    ("text_encoder", "text_model.encoder.layers.1.self_attn.v_proj", 4),
    ("text_encoder_2", "text_model.encoder.layers.2.mlp.fc2", 2),
    ("text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj", 2),
]

KOHYA_TE = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def kohya_name_xl(comp: str, module: str) -> str:
    """kohya sd-scripts' SDXL names: U-Net modules by their sgm (LDM) path, text encoders by HF path."""
    if comp == "unet":
        best = max((d for d in _UM if module == d or module.startswith(d + ".")), key=len)
        ldm, leaves = _UM[best]
        rest = module[len(best) + 1:]
        if leaves is not None:
            rest = next(leaves[k] + rest[len(k):] for k in sorted(leaves, key=len, reverse=True)
                        if rest == k or rest.startswith(k + "."))
        path = f"{ldm}.{rest}" if rest else ldm
        return "lora_unet_" + path.replace(".", "_")
    return KOHYA_TE[comp] + module.replace(".", "_")


def lora_modules_of(path: Path, spec: list) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Own reading of a kohya or PEFT file: 'comp.module' -> (down, up, alpha), f32 tensors."""
    t = mlf.read(path)
    mods = {}
    if any(k.startswith("lora_") for k in t):
        names = {kohya_name_xl(c, m): (c, m, r) for c, m, r, _ in spec}
        for k in t:
            if k.endswith(".lora_down.weight"):
                n = k[: -len(".lora_down.weight")]
                c, m, r = names[n]
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
    assert len(mods) == len(spec)
    return mods


def make_lora_files(folder) -> dict:
    files = {}
    t = {}
    for i, (comp, mod, r, alpha) in enumerate(KOHYA_XL):
        w = folder[comp][mod + ".weight"]
        down, up = mlf.lora_pair(w, r, alpha, 1900 + i, torch.float16)
        n = kohya_name_xl(comp, mod)
        assert n + ".lora_down.weight" not in t
        t[n + ".lora_down.weight"] = down
        t[n + ".lora_up.weight"] = up
        if alpha is not None:
            t[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
    kohya_meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "1.0",
                  "ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False"}
    mlf.save(LOADING / "lora-xl-kohya.safetensors", t, kohya_meta)
    files["lora-xl-kohya.safetensors"] = {
        "what": "kohya sd-scripts SDXL LoRA / LoCon for tiny-xl (float16, alpha as 0-d float16 tensors)",
        "format": "lora_unet_<sgm (LDM) U-Net module path, '.' -> '_'> (input_blocks / middle_block / output_blocks, "
                  "in_layers_2, out_layers_3, emb_layers_1, skip_connection), lora_te1_<text_encoder module path> / "
                  "lora_te2_<text_encoder_2 module path> (HF CLIP names, '.' -> '_') + .lora_down.weight "
                  "[r, in(, kh, kw)] / .lora_up.weight [out, r(, 1, 1)] / .alpha",
        "metadata": kohya_meta,
        "modules": [{"component": c, "module": m, "key": kohya_name_xl(c, m), "rank": r,
                     "alpha": a if a is not None else f"absent (= rank {r})",
                     "kind": _kind(folder[c][m + ".weight"])} for c, m, r, a in KOHYA_XL],
    }
    t = {}
    for i, (comp, mod, r) in enumerate(PEFT_XL):
        w = folder[comp][mod + ".weight"]
        down, up = mlf.lora_pair(w, r, None, 1950 + i, torch.float32)
        t[f"{comp}.{mod}.lora_A.weight"] = down
        t[f"{comp}.{mod}.lora_B.weight"] = up
    mlf.save(LOADING / "lora-xl-peft.safetensors", t)
    files["lora-xl-peft.safetensors"] = {
        "what": "diffusers / PEFT-format LoRA for tiny-xl (float32, no alphas: alpha = rank, scale 1)",
        "format": "<unet|text_encoder|text_encoder_2>.<diffusers module path>.lora_A.weight [r, in(, kh, kw)] / "
                  ".lora_B.weight [out, r(, 1, 1)]",
        "modules": [{"component": c, "module": m, "rank": r, "kind": _kind(folder[c][m + ".weight"])}
                    for c, m, r in PEFT_XL],
    }
    for name, spec in (("lora-xl-kohya.safetensors", KOHYA_XL), ("lora-xl-peft.safetensors", PEFT_XL)):
        spec4 = [s if len(s) == 4 else (*s, None) for s in spec]
        fr = {}
        for mod, (down, up, alpha) in lora_modules_of(LOADING / name, spec4).items():
            c, m = mod.split(".", 1)
            w = folder[c][m + ".weight"]
            f = (mlf.delta(down, up, alpha, w.shape).norm() / w.double().norm()).item()
            assert abs(f - mlf.DELTA_FRACTION) < 1e-3, (mod, f)
            fr[mod] = float(f"{f:.4g}")
        files[name]["delta_norm_over_weight_norm_at_scale_1"] = fr
    return files


def _kind(w: torch.Tensor) -> str:
    return f"linear {list(w.shape)}" if w.dim() == 2 else f"conv {w.shape[2]}x{w.shape[3]} {list(w.shape)}"


@torch.no_grad()
def pipe_weights(pipe) -> dict[str, torch.Tensor]:
    """'unet.<key>' / 'text_encoder.text_model.<key>' / 'text_encoder_2.<key>' -> f32, LoRA layers folded away."""
    out = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        for k, v in getattr(pipe, comp).state_dict().items():
            if ".lora_" in k or k.endswith("position_ids"):
                continue
            k = k.replace(".base_layer.", ".")
            if comp == "text_encoder":
                k = mlf._te_key(k)
            assert f"{comp}.{k}" not in out, k
            out[f"{comp}.{k}"] = v.detach().clone()
    return out


def own_fused(before: dict, path: Path, spec: list, scale: float) -> dict[str, torch.Tensor]:
    out = {}
    for mod, (down, up, alpha) in lora_modules_of(path, spec).items():
        key = mod + ".weight"
        w = before[key]
        out[key] = (w.double() + scale * mlf.delta(down, up, alpha, w.shape)).float()
    return out


def diffusers_fuse(lora, scale: float) -> tuple[dict, dict, str]:
    pipe = load_pipe()
    before = pipe_weights(pipe)
    pipe.load_lora_weights(lora, adapter_name="x")
    pipe.fuse_lora(lora_scale=scale)
    after = pipe_weights(pipe)
    assert set(before) == set(after)
    changed = {k: after[k] for k in sorted(after) if not torch.equal(before[k], after[k])}
    return changed, before, f"pipe.load_lora_weights(..., adapter_name='x'); pipe.fuse_lora(lora_scale={scale})"


def compare(changed: dict, own: dict, before: dict) -> dict:
    rep = {"in_file_but_unchanged_by_diffusers": sorted(set(own) - set(changed)),
           "changed_by_diffusers_but_not_in_file": sorted(set(changed) - set(own))}
    per = {}
    for k in sorted(set(own) & set(changed)):
        d = (changed[k].double() - own[k].double()).abs().max().item()
        dw = (own[k].double() - before[k].double()).abs().max().item()
        per[k] = d / dw
    rep["max |diffusers - own| / max |own delta|"] = max(per.values()) if per else None
    rep["max |diffusers - own| / max |own|"] = max(
        ((changed[k].double() - own[k].double()).abs().max() / own[k].double().abs().max()).item()
        for k in per) if per else None
    rep["weights_that_disagree_with_own_formula"] = sorted(k for k, v in per.items() if v > 1e-5)
    return rep


def effective_alphas(changed: dict, before: dict, path: Path, spec: list, scale: float) -> dict:
    out = {}
    for mod, (down, up, alpha) in lora_modules_of(path, spec).items():
        key = mod + ".weight"
        if key not in changed:
            out[mod] = {"alpha": alpha, "diffusers_alpha": 0.0}
            continue
        own = scale * mlf.delta(down, up, alpha, before[key].shape)
        got = changed[key].double() - before[key].double()
        out[mod] = {"rank": down.shape[0], "alpha": alpha,
                    "diffusers_alpha": float(f"{alpha * float((got * own).sum() / (own * own).sum()):.4g}")}
    return out


def make_expected() -> tuple[dict, dict]:
    files, behaviour = {}, {}
    scale = 0.7
    for kind, spec in (("kohya", KOHYA_XL), ("peft", [(*s, None) for s in PEFT_XL])):
        t0 = time.time()
        lora = LOADING / f"lora-xl-{kind}.safetensors"
        name = f"expected-xl-{kind}-{scale}.safetensors"
        raw_note, saved, calls, before = {}, None, None, None
        # 1. diffusers on the file itself, as a user would call it
        try:
            raw, before, calls = diffusers_fuse(str(lora), scale)
            own = own_fused(before, lora, spec, scale)
            raw_note = compare(raw, own, before)
            if kind == "kohya":
                raw_note["effective_alphas"] = {
                    m: v for m, v in effective_alphas(raw, before, lora, spec, scale).items()
                    if abs(v["diffusers_alpha"] - v["alpha"]) > 1e-3}
                raw_note["effective_alphas_note"] = "only the modules where diffusers' alpha differs from the file's"
            raw_ok = (not raw_note["in_file_but_unchanged_by_diffusers"]
                      and not raw_note["changed_by_diffusers_but_not_in_file"]
                      and not raw_note["weights_that_disagree_with_own_formula"])
            raw_note["agrees_with_own_formula"] = raw_ok
            if raw_ok:
                saved = raw
        except Exception as e:  # noqa: BLE001  (recorded)
            raw_note = {"error": mlf._canon(f"{type(e).__name__}: {e}")[:400]}
        produced_by = f"diffusers: {calls} on {lora.name}"
        # 2. kohya: alphas folded into lora_down (diffusers then uses scale 1 everywhere)
        if saved is None and kind == "kohya":
            try:
                folded, before, calls = diffusers_fuse(mlf.fold_kohya_alphas(lora), scale)
                own = own_fused(before, lora, spec, scale)
                rep = compare(folded, own, before)
                raw_note["folded_alphas"] = rep
                if not rep["changed_by_diffusers_but_not_in_file"] and not rep["weights_that_disagree_with_own_formula"]:
                    # weights diffusers leaves alone (a module it drops) come from the own formula
                    missing = rep["in_file_but_unchanged_by_diffusers"]
                    saved = dict(sorted({**{k: own[k] for k in missing}, **folded}.items()))
                    produced_by = (f"diffusers: load_lora_weights(fold_kohya_alphas('{lora.name}')) "
                                   f"(alphas folded into lora_down, scripts/make_loading_fixtures.py); "
                                   f"fuse_lora(lora_scale={scale})")
                    if missing:
                        produced_by += (f"; {missing} (dropped by diffusers, see diffusers_lora_behaviour) from the "
                                        "own formula")
                        raw_note["filled_from_own_formula"] = missing
            except Exception as e:  # noqa: BLE001
                raw_note["folded_alphas"] = {"error": mlf._canon(f"{type(e).__name__}: {e}")[:400]}
        if saved is None:
            # diffusers could not do it: the own formula is the expectation
            if before is None:
                pipe = load_pipe()
                before = pipe_weights(pipe)
            saved = own_fused(before, lora, spec, scale)
            produced_by = "own formula (diffusers failed, see diffusers_lora_behaviour)"
        own = own_fused(before, lora, spec, scale)
        rep = compare(saved, own, before)
        assert not rep["in_file_but_unchanged_by_diffusers"] and not rep["changed_by_diffusers_but_not_in_file"], rep
        assert rep["max |diffusers - own| / max |own delta|"] < 1e-5, rep
        mlf.save(LOADING / name, saved)
        files[name] = {
            "what": "tiny-xl's weights after fusing the LoRA at scale 0.7: only the weights that change (float32, "
                    "diffusers key names prefixed unet. / text_encoder.text_model. / text_encoder_2.text_model.); "
                    "every other weight equals tiny-xl's",
            "lora": lora.name, "scale": scale,
            "formula": "W + scale * alpha/rank * up @ down (conv: up [out, r, 1, 1] x down [r, in, kh, kw]); "
                       "alpha absent -> alpha = rank",
            "produced_by": produced_by,
            "own_formula_check": {"max |saved - own| / max |own delta|": rep["max |diffusers - own| / max |own delta|"],
                                  "max |saved - own| / max |own|": rep["max |diffusers - own| / max |own|"],
                                  "weights": len(saved)},
            "tolerance": mlf.LORA_TOLERANCE,
            "keys": sorted(saved),
        }
        behaviour[lora.name] = raw_note
        log(f"  {name}: {len(saved)} weights via {produced_by[:60]}...; raw diffusers agrees: "
            f"{raw_note.get('agrees_with_own_formula')} ({time.time() - t0:.1f}s)")
        if raw_note.get("effective_alphas"):
            log(f"    diffusers' alphas differ for: {raw_note['effective_alphas']}")
    return files, behaviour


def lora_summary(b: dict) -> dict:
    """What diffusers did with the two files (asserted, so a diffusers that behaves otherwise stops here)."""
    k, pf = b["lora-xl-kohya.safetensors"], b["lora-xl-peft.safetensors"]
    te1_q = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    assert pf["agrees_with_own_formula"], pf
    assert k["in_file_but_unchanged_by_diffusers"] == [te1_q + ".weight"], k["in_file_but_unchanged_by_diffusers"]
    assert k["folded_alphas"]["in_file_but_unchanged_by_diffusers"] == [te1_q + ".weight"]
    assert not k["folded_alphas"]["weights_that_disagree_with_own_formula"]
    wrong = set(k["effective_alphas"]) - {te1_q}
    alphas = {f"{c}.{m}": (r if a is None else a) for c, m, r, a in KOHYA_XL}
    for mod in wrong:  # only attention projections get a wrong alpha
        assert mod.split(".")[-1] in ("to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj", "out_proj") \
            or mod.endswith("to_out.0"), mod
    for mod, a in alphas.items():
        if mod not in wrong and mod != te1_q:
            assert mod not in k["effective_alphas"]
    return {
        "lora-xl-peft.safetensors": "load_lora_weights + fuse_lora apply every module (U-Net attention, ff, linear "
                                    "proj_in, 3x3 conv, add_embedding.linear_1; both text encoders) exactly as "
                                    "W + scale * up @ down",
        "lora-xl-kohya.safetensors": {
            "naming": "diffusers maps the kohya SDXL names (sgm input_blocks / middle_block / output_blocks, "
                      "in_layers_2, out_layers_3, emb_layers_1, skip_connection, lora_te1_ / lora_te2_) to the right "
                      "modules: every U-Net and text_encoder_2 module of the file is changed",
            "dropped_module": {
                "module": te1_q,
                "why": "diffusers 0.42.1's convert_state_dict_to_peft guesses the state-dict format per text encoder: "
                       "'old diffusers' only if some key contains 'to_out_lora', else 'new diffusers' if some key "
                       "contains 'lora_linear_layer'.  text_encoder's part of this file has q_proj (-> to_q_lora) and "
                       "mlp.fc2 (-> lora_linear_layer) but no out_proj, so the to_q_lora keys are never converted; "
                       "transformers reports them UNEXPECTED and the module is silently skipped.  (text_encoder_2 "
                       "has an out_proj and loads fully.)  Real kohya files train q/k/v/out together, so this only "
                       "bites partial LoRAs; a loader should apply the module.  expected-xl-kohya-0.7.safetensors "
                       "takes this weight from the own formula.",
            },
            "alphas": {
                "wrong": sorted(wrong),
                "explanation": "as for SD 1.x (meta.json of the SD fixtures): per-module alphas of attention "
                               "projections (U-Net to_q/to_k/to_v/to_out.0, text-encoder self_attn) go into peft "
                               "alpha_pattern keys that match no module, so those modules get the file's most common "
                               "alpha; ff / proj_in / proj_out / resnet convs / time_emb_proj / conv_shortcut and "
                               "text-encoder mlp keep their own.  The expectation is made with the alphas folded into "
                               "lora_down (then every module has scale 1) and agrees with the own formula.",
            },
        },
        "noise": "transformers prints a 'CLIPTextModelWithProjection LOAD REPORT' listing every base weight as MISSING "
                 "when peft injects the adapter into text_encoder_2; the weights are not touched (checked: only the "
                 "LoRA modules' weights change)",
    }


# ---------------------------------------------------------------------------------------
# full size (--full-size OUTDIR): SDXL base 1.0's real configs, random weights, fp16 files


FULL_NAME = "sdxl-random"
FULL_SEED = 6000
FULL_PROMPTS = ["a photo of an astronaut riding a horse on mars"]
# only these 4 attention layers (+ the resnet) are captured, to keep unet.safetensors small
FULL_ATTN_SITES = [(1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1)]
FULL_UNET_CASE = dict(latent_hw=(32, 32), batch=1, timestep=501, timestep_dtype=torch.int64,
                      time_ids=[[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]])
FULL_VAE_IMAGE_HW = (64, 64)
FULL_VAE_LATENT_HW = (8, 8)
FULL_WEIGHT_FILES = {"unet": "unet/diffusion_pytorch_model.fp16.safetensors",
                     "vae": "vae/diffusion_pytorch_model.fp16.safetensors",
                     "text_encoder": "text_encoder/model.fp16.safetensors",
                     "text_encoder_2": "text_encoder_2/model.fp16.safetensors"}


def unet_config_xl_full() -> dict:
    # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json: the tiny config's keys with SDXL's values
    return dict(
        unet_config_xl(),
        addition_time_embed_dim=256,
        attention_head_dim=[5, 10, 20],  # head counts (head dim 64)
        block_out_channels=[320, 640, 1280],
        cross_attention_dim=2048,  # 768 + 1280
        norm_num_groups=32,
        projection_class_embeddings_input_dim=2816,  # 6 * 256 + 1280
        sample_size=128,
        transformer_layers_per_block=[1, 2, 10],
    )


def vae_config_xl_full() -> dict:
    # SDXL base 1.0 vae/config.json
    return dict(mf.vae_config((128, 256, 512, 512), 32, sample_size=1024), scaling_factor=0.13025, force_upcast=True)


def text_configs_xl_full() -> tuple[dict, dict]:
    # text_encoder/config.json (CLIP ViT-L/14 text tower) and text_encoder_2/config.json (OpenCLIP ViT-bigG/14
    # text tower, CLIPTextModelWithProjection), legacy special ids pad 1 / bos 0 / eos 2 as shipped
    te1 = mf.text_config(768, 3072, 12, 12, 49408, 768, special_ids=(1, 0, 2))
    te2 = dict(mf.text_config(1280, 5120, 32, 20, 49408, 1280, special_ids=(1, 0, 2)), hidden_act="gelu")
    return te1, te2


def _free() -> None:
    gc.collect()


@torch.no_grad()
def full_build_save(name: str, build, model_dir: Path, seed: int, gen: torch.Generator):
    """Build one network (f32, random, perturbed), save it as the fp16 variant, check the file against
    the in-memory fp16 weights, and return it upcast to f32 (= what a loader upcasting the file gets)."""
    t0 = time.time()
    torch.manual_seed(seed)
    m = build()
    m.eval()
    info = mf.perturb(m, gen)
    info["parameters"] = sum(p.numel() for p in m.parameters())
    t_build = time.time() - t0
    t0 = time.time()
    m.half()  # in place, parameter by parameter: the f32 copy goes as the f16 one comes
    m.save_pretrained(model_dir / name, safe_serialization=True, variant="fp16")
    path = model_dir / FULL_WEIGHT_FILES[name]
    if name == "text_encoder":
        mf._canonical_text_encoder_keys(path)  # SDXL's text_encoder has the text_model. prefix
    t_save = time.time() - t0
    t0 = time.time()
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("position_ids")}
    seen = set()
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        if name == "text_encoder_2":
            assert all(k.startswith("text_model.") or k == "text_projection.weight" for k in keys), keys[:4]
        if name == "text_encoder":
            assert all(k.startswith("text_model.") for k in keys), keys[:4]
        for k in keys:
            mk = k if k in sd else k.removeprefix("text_model.")
            assert mk in sd and mk not in seen, (name, k)
            seen.add(mk)
            t = f.get_tensor(k)
            assert t.dtype == torch.float16 and torch.equal(t, sd[mk]), (name, k)
            assert torch.isfinite(t).all(), (name, k)
    assert seen == set(sd), (name, sorted(set(sd) - seen)[:5])
    del sd
    stray = [p.name for p in (model_dir / name).iterdir() if p.suffix in (".bin", ".pt", ".ckpt")]
    assert not stray and path.is_file(), (stray, path)
    m.float()  # the goldens run in f32 on the fp16-rounded weights
    for n, p in m.named_parameters():
        assert p.dtype == torch.float32, (name, n)
    info["file_bytes"] = path.stat().st_size
    log(f"  {name}: {info['parameters']:,} params; built {t_build:.1f}s, saved fp16 {t_save:.1f}s "
        f"({info['file_bytes'] / 1e9:.2f} GB), file checked {time.time() - t0:.1f}s")
    return m, info, {"build": t_build, "save": t_save, "check": time.time() - t0}


@torch.no_grad()
def make_full_size(out: Path) -> None:
    import diffusers
    import safetensors
    import transformers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    t_start = time.time()
    root = out / "sdxl"
    model_dir, golden_dir = root / "model", root / "golden"
    for d in (model_dir, golden_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    ucfg, vcfg = unet_config_xl_full(), vae_config_xl_full()
    te1_cfg, te2_cfg = text_configs_xl_full()
    notes = mf.check_unet_config(ucfg) + mf.check_vae_config(vcfg)
    notes += [f"text_encoder: {x}" for x in mf.check_text_config(te1_cfg)]
    notes += [f"text_encoder_2: {x}" for x in mf.check_text_config(te2_cfg)]
    for n in notes:
        log(f"  {n}")
    timings: dict[str, float] = {}
    info: dict[str, dict] = {}
    files: dict[str, dict] = {}
    gen = torch.Generator().manual_seed(FULL_SEED + 7)

    # folder skeleton: tokenizers (the full CLIP BPE), scheduler, model_index
    clip_files = ((mf.CLIP_DIR / "vocab.json").read_bytes(), (mf.CLIP_DIR / "merges.txt").read_bytes())
    write_tokenizer(model_dir / "tokenizer", "<|endoftext|>", clip_files)
    write_tokenizer(model_dir / "tokenizer_2", "!", clip_files)
    mf.write_json(model_dir / "scheduler" / "scheduler_config.json",
                  dict(SCHEDULER_CONFIG_XL, _diffusers_version=diffusers.__version__))
    mf.write_json(model_dir / "model_index.json", model_index_xl())
    tok1 = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer_2"))
    bang = tok2.convert_tokens_to_ids("!")
    assert len(tok1) == len(tok2) == 49408
    assert tok1("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok1.pad_token_id == 49407 and tok2.pad_token == "!" and tok2.pad_token_id == bang == 0, bang

    # text encoders (both kept for the text golden: 0.5 + 2.8 GB in f32)
    log("== text encoders")
    t0 = time.time()
    te1, info["text_encoder"], _ = full_build_save(
        "text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**te1_cfg)), model_dir, FULL_SEED + 2, gen)
    te2, info["text_encoder_2"], _ = full_build_save(
        "text_encoder_2", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**te2_cfg)), model_dir, FULL_SEED + 3,
        gen)
    timings["text encoders: build + save"] = time.time() - t0
    t0 = time.time()
    sched = EulerDiscreteScheduler.from_pretrained(str(model_dir), subfolder="scheduler")
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=None, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    inputs, outputs, text_checks = golden_text(pipe, FULL_PROMPTS, 49407)
    assert outputs["text_embeddings"].shape == (1, MAX_LEN, 2048)
    assert outputs["pooled_text_embeds"].shape == (1, 1280)
    files["text.safetensors"] = mf.write_golden(golden_dir / "text.safetensors", inputs, outputs)
    log(f"  text: ids {inputs['input_ids'][0, :14].tolist()}..., ids_2 {inputs['input_ids_2'][0, :14].tolist()}...; "
        f"|text_embeddings|max={outputs['text_embeddings'].abs().max():.4g}, "
        f"|pooled|max={outputs['pooled_text_embeds'].abs().max():.4g}")
    del pipe, te1, te2, inputs, outputs
    _free()
    timings["text golden"] = time.time() - t0

    # VAE
    log("== vae")
    t0 = time.time()
    vae, info["vae"], _ = full_build_save("vae", lambda: AutoencoderKL(**vcfg), model_dir, FULL_SEED + 1, gen)
    timings["vae: build + save"] = time.time() - t0
    t0 = time.time()
    g = torch.Generator().manual_seed(FULL_SEED + 20)
    ih, iw = FULL_VAE_IMAGE_HW
    image = torch.rand((1, 3, ih, iw), generator=g, dtype=torch.float32) * 2.0 - 1.0
    latents = mf._randn((1, 4, *FULL_VAE_LATENT_HW), FULL_SEED + 21)
    out_v = mf.golden_vae(vae, image, latents)
    assert out_v["posterior_mean"].shape == (1, 4, ih // 8, iw // 8)
    assert out_v["decoded"].shape == (1, 3, FULL_VAE_LATENT_HW[0] * 8, FULL_VAE_LATENT_HW[1] * 8)
    files["vae.safetensors"] = mf.write_golden(golden_dir / "vae.safetensors", {"image": image, "latents": latents},
                                               out_v)
    log(f"  vae: |posterior_mean|max={out_v['posterior_mean'].abs().max():.4g}, "
        f"|decoded|max={out_v['decoded'].abs().max():.4g}")
    del vae, out_v
    _free()
    timings["vae golden"] = time.time() - t0

    # U-Net (10.3 GB in f32: alone in memory)
    log("== unet")
    t0 = time.time()
    unet, info["unet"], _ = full_build_save("unet", lambda: UNet2DConditionModel(**ucfg), model_dir, FULL_SEED, gen)
    timings["unet: build + save"] = time.time() - t0
    t0 = time.time()
    assert [len(a.transformer_blocks) for a in unet.down_blocks[2].attentions] == [10, 10]
    assert len(unet.mid_block.attentions[0].transformer_blocks) == 10
    assert [len(a.transformer_blocks) for a in unet.up_blocks[0].attentions] == [10, 10, 10]
    assert [len(a.transformer_blocks) for a in unet.up_blocks[1].attentions] == [2, 2, 2]
    assert isinstance(unet.down_blocks[1].attentions[0].proj_in, torch.nn.Linear)
    assert unet.add_embedding.linear_1.in_features == 2816
    processors = mf.check_processors(unet)
    c = FULL_UNET_CASE
    h, w = c["latent_hw"]
    sample = mf._randn((c["batch"], 4, h, w), FULL_SEED + 100)
    ehs = mf._randn((c["batch"], MAX_LEN, ucfg["cross_attention_dim"]), FULL_SEED + 200)
    text_embeds = mf._randn((c["batch"], 1280), FULL_SEED + 300)
    time_ids = torch.tensor(c["time_ids"], dtype=torch.float32)
    timestep = torch.tensor([c["timestep"]], dtype=c["timestep_dtype"])
    out_u = golden_unet(unet, sample, timestep, ehs, text_embeds, time_ids, sites=FULL_ATTN_SITES)
    assert out_u["noise_pred"].shape == sample.shape
    files["unet.safetensors"] = mf.write_golden(golden_dir / "unet.safetensors", {
        "sample": sample, "timestep": timestep, "encoder_hidden_states": ehs,
        "text_embeds": text_embeds, "time_ids": time_ids}, out_u)
    log(f"  unet {c['batch']}x4x{h}x{w} t={c['timestep']}: |noise_pred|max={out_u['noise_pred'].abs().max():.4g}, "
        f"std {out_u['noise_pred'].std():.4g}; {len(out_u) - 1} sites; processors {processors}")
    del unet, out_u
    _free()
    timings["unet golden (2 forwards)"] = time.time() - t0

    # the folder loads as StableDiffusionXLPipeline (fp16 variant, in f16 to stay at ~7 GB), every weight as written
    log("== smoke test")
    t0 = time.time()
    pipe = StableDiffusionXLPipeline.from_pretrained(str(model_dir), variant="fp16", dtype=torch.float16)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.vae.config.scaling_factor == 0.13025 and pipe.vae.config.force_upcast
    assert pipe.config.force_zeros_for_empty_prompt and pipe.unet.config.num_attention_heads is None
    assert pipe.tokenizer_2.pad_token_id == 0 and pipe.tokenizer.pad_token_id == 49407
    for comp, rel in FULL_WEIGHT_FILES.items():
        sd = {k: v for k, v in getattr(pipe, comp).state_dict().items() if not k.endswith("position_ids")}
        with safe_open(str(model_dir / rel), framework="pt") as f:
            keys = list(f.keys())
            assert len(keys) == len(sd), (comp, len(keys), len(sd))
            for k in keys:
                mk = k if k in sd else k.removeprefix("text_model.")
                assert torch.equal(sd[mk], f.get_tensor(k)), (comp, k)
        del sd
    del pipe
    _free()
    timings["smoke test (pipeline load, fp16)"] = time.time() - t0

    model_files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    sites = FULL_ATTN_SITES
    meta = {
        "model": FULL_NAME,
        "model_dir": "model (next to this golden/ folder)",
        "weights_dtype_on_disk": "float16 (diffusers variant fp16: diffusion_pytorch_model.fp16.safetensors, "
                                 "model.fp16.safetensors)",
        "compute_dtype": "float32, from the fp16-rounded weights (each network was rounded to f16, saved, and "
                         "upcast back to f32 before the golden forwards): a loader upcasting the fp16 files to f32 "
                         "has exactly these weights",
        "tolerance": mf.TOLERANCE,
        "seed": FULL_SEED,
        "config": {"unet": ucfg, "vae": vcfg, "text_encoder": te1_cfg, "text_encoder_2": te2_cfg,
                   "scheduler": SCHEDULER_CONFIG_XL, "model_index": model_index_xl()},
        "config_checks": notes,
        "init": {"norm_perturbation": "as make_fixtures.py --full-size: library default init, then "
                                      "GroupNorm/LayerNorm weight = 1 + 0.1*randn, bias = 0.1*randn; all-zero "
                                      "parameters refilled with 0.02*randn (make_fixtures.perturb)", **info},
        "parameters": {k: v["parameters"] for k, v in info.items()},
        "parameters_total": sum(v["parameters"] for v in info.values()),
        "attention_processors": processors,
        "tokenizers": {
            "vocab": "models/clip vocab.json / merges.txt (full CLIP BPE, 49408 entries; <|startoftext|> 49406, "
                     "<|endoftext|> 49407)",
            "tokenizer": "pads with <|endoftext|> (49407)",
            "tokenizer_2": "pads with \"!\" (id 0), as SDXL's tokenizer_2",
        },
        "text": {
            "prompts": FULL_PROMPTS,
            "input_ids": "pipe.tokenizer(prompts, padding='max_length', max_length=77, truncation=True)",
            "input_ids_2": "pipe.tokenizer_2(the same): \"!\" (0) instead of <|endoftext|> after the first one",
            "te1_penultimate": "text_encoder(input_ids, output_hidden_states=True).hidden_states[-2]",
            "te2_penultimate": "text_encoder_2(input_ids_2, output_hidden_states=True).hidden_states[-2]",
            "text_embeddings": "cat([te1_penultimate, te2_penultimate], -1) = encode_prompt's prompt_embeds "
                               "[1, 77, 2048]",
            "text_embeddings_skip1": "cat of hidden_states[-3] of both encoders = encode_prompt(clip_skip=1)",
            "pooled_text_embeds": "text_encoder_2(...).text_embeds [1, 1280]",
            "checks": text_checks,
        },
        "vae": {"image": f"uniform in [-1, 1], {ih}x{iw}", "posterior_mean": "vae.encode(image).latent_dist.mean "
                "(no scaling factor)", "latents": f"randn {list(FULL_VAE_LATENT_HW)}",
                "decoded": "vae.decode(latents).sample (no scaling factor)"},
        "unet": {
            "call": "unet(sample, timestep, encoder_hidden_states, added_cond_kwargs={'text_embeds': text_embeds, "
                    "'time_ids': time_ids}).sample",
            "inputs": "sample, encoder_hidden_states [1, 77, 2048], text_embeds [1, 1280]: randn; time_ids = "
                      "[original h, original w, crop top, crop left, target h, target w]",
            "latent_hw": list(FULL_UNET_CASE["latent_hw"]), "batch": FULL_UNET_CASE["batch"],
            "timestep": FULL_UNET_CASE["timestep"], "timestep_dtype": "int64", "time_ids": FULL_UNET_CASE["time_ids"],
        },
        "sites": {
            RESNET_SITE: "output of up_blocks[1].resnets[1].conv2 (residual branch, before the shortcut add)",
            "site.up_blocks.{i}.attentions.{j}.transformer_blocks.{d}.q/.k": "outputs of that transformer block's "
            "attn1.to_q / attn1.to_k, [batch, tokens, inner_dim], token = row*w + col",
            "attention_sites": [f"up_blocks.{i}.attentions.{j}.transformer_blocks.{d}" for i, j, d in sites],
            "note": "only these 4 self-attention layers (not every up-block transformer block, as the tiny-xl "
                    "fixtures have), to keep the file small; hooks checked not to change noise_pred",
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__},
        "golden_files": files,
        "model_files": {mf._rel(p, model_dir): p.stat().st_size for p in model_files},
    }  # no timings in here (printed instead), so a rerun reproduces meta.json
    mf.write_json(golden_dir / "meta.json", meta)
    log("sizes:")
    mf.report_sizes(root)
    log("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    log(f"full-size total {time.time() - t_start:.1f}s")



# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", type=Path, metavar="OUTDIR",
                    help="build SDXL base 1.0's real configs (random weights, fp16 files) into OUTDIR/sdxl/model and "
                         "goldens into OUTDIR/sdxl/golden; the tiny fixtures are left alone")
    args = ap.parse_args()
    mf._install_log_capture()
    t_start = time.time()
    import diffusers
    import peft
    import safetensors
    import transformers

    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, threads {torch.get_num_threads()}")
    if not (mf.CLIP_DIR / "vocab.json").is_file():
        sys.exit("error: models/clip/vocab.json missing; run scripts/convert_clip_vocab.py first")
    if args.full_size is not None:
        make_full_size(args.full_size.resolve())
        if mf.COLLECTED:
            log(f"warnings from diffusers/transformers/python ({len(mf.COLLECTED)}):")
            for w in dict.fromkeys(mf.COLLECTED):
                log(f"  {w[:300]}")
        log(f"total time {time.time() - t_start:.1f}s")
        return
    timings = {}

    t0 = time.time()
    log(f"== {NAME}")
    notes = mf.check_unet_config(unet_config_xl()) + mf.check_vae_config(vae_config_xl())
    te1_cfg, te2_cfg = text_configs_xl()
    notes += [f"text_encoder: {x}" for x in mf.check_text_config(te1_cfg)]
    notes += [f"text_encoder_2: {x}" for x in mf.check_text_config(te2_cfg)]
    u = unet_config_xl()
    tl = u["transformer_layers_per_block"]
    notes.append(f"transformer depths: down_blocks.1 {tl[1]}, down_blocks.2 {tl[2]}, mid_block {tl[-1]}, "
                 f"up_blocks.0 {tl[::-1][0]}, up_blocks.1 {tl[::-1][1]} (up blocks take the list reversed)")
    for n in notes:
        log(f"  {n}")
    models, info = build_models()
    # the structure the notes promise
    um = models["unet"]
    assert [len(a.transformer_blocks) for a in um.down_blocks[1].attentions] == [2, 2]
    assert [len(a.transformer_blocks) for a in um.down_blocks[2].attentions] == [3, 3]
    assert len(um.mid_block.attentions[0].transformer_blocks) == 3
    assert [len(a.transformer_blocks) for a in um.up_blocks[0].attentions] == [3, 3, 3]
    assert [len(a.transformer_blocks) for a in um.up_blocks[1].attentions] == [2, 2, 2]
    assert um.up_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 2
    assert um.down_blocks[1].attentions[0].transformer_blocks[0].attn1.heads == 2
    assert isinstance(um.down_blocks[1].attentions[0].proj_in, torch.nn.Linear)
    assert um.add_embedding.linear_1.in_features == 6 * TIME_DIM + TE2_PROJ
    log("  built: " + ", ".join(f"{k} {v['parameters']:,} params" for k, v in info.items()))
    save_folder(models)
    pipe = load_pipe()
    pipe_checks = check_pipe(pipe, models)
    del models
    log(f"  saved and loaded back as StableDiffusionXLPipeline (weights identical); \"!\" = id {pipe_checks['bang_id']}; "
        f"processors {pipe_checks['attention_processors']}")
    timings["model"] = time.time() - t0

    t0 = time.time()
    log("== goldens")
    make_goldens(pipe, info, notes, pipe_checks)
    del pipe
    timings["goldens"] = time.time() - t0

    t0 = time.time()
    log("== single file")
    LOADING.mkdir(parents=True, exist_ok=True)
    folder = load_folder()
    files, kmap = make_single_file(folder)
    files["ldm-key-map-xl.json"] = {
        "what": "the diffusers -> single-file key mapping used for tiny-xl.safetensors (with the component prefixes)",
        "notation": "'<key>': the tensor as is (VAE mid-attention q/k/v/proj_out: [C, C] in diffusers, [C, C, 1, 1] "
                    "in the file); '<key>[a:b]': rows a..b of that tensor (text_encoder_2 q/k/v = the thirds of "
                    "attn.in_proj_weight / in_proj_bias, in the order q, k, v); '<key>^T': the transpose "
                    "(text_projection: HF Linear weight [proj, hidden], OpenCLIP [hidden, proj] used as x @ P)",
    }
    timings["single file"] = time.time() - t0

    t0 = time.time()
    log("== LoRAs")
    files.update(make_lora_files(folder))
    exp, behaviour = make_expected()
    behaviour["summary"] = lora_summary(behaviour)
    files.update(exp)
    timings["loras"] = time.time() - t0

    meta = {
        "source_model": mf._rel(MODEL_DIR),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__,
                     "safetensors": safetensors.__version__},
        "conventions": {
            "unet": "as ldm-key-map.json / meta.json of the SD 1.x fixtures (L = layers_per_block = 2; three levels: "
                    "input_blocks.0..8, middle_block.0..2, output_blocks.0..8; up_blocks.0/1 upsamplers -> "
                    "output_blocks.2.2.conv / output_blocks.5.2.conv), plus add_embedding.linear_1/2 -> "
                    "label_emb.0.0/0.2; SDXL's proj_in/proj_out are linear [C, C] in both layouts; SDXL's "
                    "transformer depths show as transformer_blocks.0..D-1 inside input_blocks.N.1 etc.",
            "vae": "as the SD 1.x fixtures (first_stage_model. + LDM names; mid attention q/k/v/proj_out as 1x1 conv)",
            "text_encoder": "conditioner.embedders.0.transformer. + the folder's key (text_model.*)",
            "text_encoder_2": {
                "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                "text_model.embeddings.position_embedding.weight": "positional_embedding (no .weight)",
                "text_model.encoder.layers.N.layer_norm1/2": "transformer.resblocks.N.ln_1/ln_2",
                "text_model.encoder.layers.N.self_attn.{q,k,v}_proj.{weight,bias}":
                    "transformer.resblocks.N.attn.in_proj_{weight,bias} = cat([q, k, v], dim 0)",
                "text_model.encoder.layers.N.self_attn.out_proj": "transformer.resblocks.N.attn.out_proj",
                "text_model.encoder.layers.N.mlp.fc1/fc2": "transformer.resblocks.N.mlp.c_fc/c_proj",
                "text_model.final_layer_norm": "ln_final",
                "text_projection.weight": "text_projection = weight^T ([hidden, proj])",
                "prefix": "conditioner.embedders.1.model.",
            },
        },
        "lora_tolerance": mlf.LORA_TOLERANCE,
        "diffusers_lora_behaviour": behaviour,
        "files": files,
    }
    meta["sizes"] = {n: (LOADING / n).stat().st_size for n in sorted(files)}
    mf.write_json(LOADING / "meta-xl.json", meta)

    log("sizes:")
    total = 0
    for root in (MODEL_DIR, GOLDEN_DIR):
        total += mf.report_sizes(root)
    for n in sorted(list(files) + ["meta-xl.json"]):
        s = (LOADING / n).stat().st_size
        total += s
        log(f"  {s:>12,}  {mf._rel(LOADING / n)}")
    log(f"timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if mf.COLLECTED:
        log(f"warnings from diffusers/transformers/peft/python ({len(mf.COLLECTED)}):")
        for w in dict.fromkeys(mf.COLLECTED):
            log(f"  {w[:300]}")
    log(f"total {total:,} bytes of new fixtures; time {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
