#!/usr/bin/env python3
"""Golden fixtures for ditail's pipeline on SDXL (tests/fixtures/pipeline-xl/), CPU, float32.

The SD1.x reference of scripts/make_pipeline_fixtures.py (the method of METHOD.md written with
diffusers' building blocks) carried over to SDXL-structured modules, with the SDXL conventions
below.  It reuses that script's pieces (content image, Pillow-exact preprocessing, masks, the
masked mix, the hook injector, the explicit-attention check processor, the DDIM arithmetic) and
writes, deterministically (fixed seeds, 2 threads):

  content.png                     the 96x72 procedural test image (the same bytes as pipeline/)
  preprocess.safetensors          the image after resize (uint8) and after crop + scaling (f32)
  ditail_<scenario>.safetensors   every intermediate of one Ditail run, scenarios full / left / noinj
  t2i.safetensors                 DDIM text-to-image with classifier-free guidance and SDXL's added
                                  conditioning, checked against StableDiffusionXLPipeline
  meta.json                       what each file and tensor is, every setting, the checks made and
                                  the SDXL-specific interpretations

The method on SDXL (our definition):
  * prompt encoding E(p) = StableDiffusionXLPipeline.encode_prompt with clip_skip None: tokenizer ->
    text_encoder hidden_states[-2], tokenizer_2 (pads with "!") -> text_encoder_2 hidden_states[-2],
    concatenated on the last dim = context [1, 77, 80]; pooled = text_encoder_2's text_embeds
    [1, 40]; "" is encoded like any prompt (no force_zeros_for_empty_prompt);
  * every U-Net call gets time_ids = [H, W, 0, 0, H, W] (f32; H x W = the working image size in
    pixels, diffusers' original_size = target_size = (H, W), crops (0, 0));
  * condition scaling alpha * E(inv p+) - beta * E(inv p-) on both the context and the pooled
    embedding (time_ids unchanged);
  * injection sites: conv2 output of up_blocks[1].resnets[1] (before the shortcut add), and attn1
    q/k (to_q / to_k outputs) of transformer_blocks 0 and 1 of up_blocks[1].attentions[1] and [2].

Model: tests/fixtures/models/tiny-xl (scripts/make_sdxl_fixtures.py) as both source S and target
T, "tame": unet.conv_out.weight and .bias multiplied by 0.1 after loading (not saved).

Usage:
  .venv/bin/python scripts/make_sdxl_pipeline_fixtures.py   (needs make_sdxl_fixtures.py's tiny-xl;
                                                              about 10 s on 2 cores, ~1.2 MB)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# make_pipeline_fixtures imports make_fixtures (HF_HUB_OFFLINE, OMP_WAIT_POLICY=PASSIVE, no ftfy, 2 threads)
import make_pipeline_fixtures as mp  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

mf = mp.mf
torch.set_num_threads(2)

OUT = mf.FIXTURES / "pipeline-xl"
MODEL = "tiny-xl"
MODEL_DIR = mf.FIXTURES / "models" / MODEL
MAX_LEN = mf.MAX_LEN
TAME = mp.TAME
WORK_SIZE = mp.WORK_SIZE
CONV_SITE = mp.CONV_SITE  # "up_blocks.1.resnets.1"
# (up block, attention, transformer block) of the 4 self-attention sites
ATTN_SITES = [(1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1)]


def attn_site(i: int, j: int, d: int) -> str:
    return f"up_blocks.{i}.attentions.{j}.transformer_blocks.{d}"


SITE_NAMES = [CONV_SITE] + [f"{attn_site(*s)}.{qk}" for s in ATTN_SITES for qk in ("q", "k")]
HOOK_CALLS = len(SITE_NAMES)  # one call per site per U-Net forward

DEFAULTS = mp.DEFAULTS
SCENARIOS = [sc for sc in mp.SCENARIOS if sc["name"] in ("full", "left", "noinj")]
assert [sc["name"] for sc in SCENARIOS] == ["full", "left", "noinj"]
T2I = dict(mp.T2I)

INTERPRETATIONS = [
    "Model: tiny-xl is both the source S and the target T (one loaded instance), tame: unet.conv_out.weight "
    f"and .bias multiplied by {TAME} in float32 after loading (not saved).",
    "Prompt encoding E(p) = diffusers StableDiffusionXLPipeline.encode_prompt(p, clip_skip=None) for one prompt: "
    "ids1 = tokenizer(p, padding='max_length', max_length=77, truncation=True) (pads with <|endoftext|>), "
    "ids2 = tokenizer_2(p, same) (pads with '!'; a '!' typed in the prompt is split off as the pad token and "
    "gets the pad id, as transformers does); context = cat(text_encoder(ids1).hidden_states[-2], "
    "text_encoder_2(ids2).hidden_states[-2], dim=-1) (penultimate layer, no final layer norm) [1,77,32+48]; "
    "pooled = text_encoder_2(ids2).text_embeds [1,40] (final layer norm at the first <|endoftext|>, then "
    "text_projection). Checked equal (exactly) to encode_prompt for every prompt used.",
    "The empty prompt '' (E_T('') of the source branch) is encoded like any prompt: diffusers' "
    "force_zeros_for_empty_prompt (zeros only when negative_prompt is None) is not used.",
    "Size conditioning: every U-Net call (inversion, sampling, t2i) gets added_cond_kwargs = {text_embeds: "
    "pooled, time_ids: [H, W, 0, 0, H, W]} (float32) with H x W the working image size in pixels after resize "
    "and crop (here 64 x 80; t2i: 8 x latent size = 64 x 80), i.e. diffusers' defaults original_size = "
    "target_size = (H, W), crops_coords_top_left = (0, 0); equal to StableDiffusionXLPipeline._get_add_time_ids.",
    "Condition scaling on SDXL: c_inv = alpha * E_S(inv p+) - beta * E_S(inv p-) on both the context "
    "(cond_inv) and the pooled embedding (cond_inv_pooled); time_ids are not scaled.",
    "Sampling batch [Z[t], x, x] with conditions [E_T(''), E_T(p+), E_T(p-)]: context, pooled and time_ids "
    "concatenated along the batch (time_ids the same row three times).",
    "Injection sites on SDXL (tiny-xl's up path: up_blocks[0] at the lowest resolution with 3 transformer "
    "blocks per attention, up_blocks[1] at the second-lowest with 2, up_blocks[2] without attention): conv "
    "features at up_blocks[1].resnets[1] (the conv2 output, directly followed by the shortcut add; METHOD.md "
    "stage 2 step 2's mix); self-attention q/k = outputs of attn1.to_q / attn1.to_k (before the head split) of "
    "transformer_blocks[0] and [1] of up_blocks[1].attentions[1] and up_blocks[1].attentions[2] (4 attn1 layers). "
    "v untouched; the attention itself is diffusers' (scaled_dot_product_attention, scale 1/sqrt(head_dim)).",
    "Masks per layer at that layer's own h x w (conv site and attention tokens n = row*w + col); at the 8x10 "
    "latent every injection layer is 4x5 (up_blocks[1]: the lowest level is 2x3 and is upsampled to the skip "
    "connection's 4x5). full = 1, left = 1 on columns [0, w div 2) = columns 0-1 of 5. The mix m*h0 + (1-m)*h "
    "is computed literally in f32 (exact selection for m in {0, 1}).",
    "Injection windows: sampling step i (0-based) injects conv features iff i < floor(conv_ratio*N_spl) and "
    "attention features iff i < floor(attn_ratio*N_spl) (0.8*10 -> 8, 0.5*10 -> 5).",
    "Scheduler: DDIMScheduler.from_config(tiny-xl's scheduler/scheduler_config.json) (an EulerDiscreteScheduler "
    "config with SDXL base 1.0's values: scaled_linear 0.00085..0.012, steps_offset 1, set_alpha_to_one false, "
    "leading; the Euler-only keys are ignored). Leading timesteps (N-1)*(1000 div N)+1 ... 1, float32 "
    "alphas_cumprod and float32 DDIM arithmetic exactly as make_pipeline_fixtures.py (ddim_move).",
    "DDIM update order: x0 = (x - sqrt(1-a_t)*eps) / sqrt(a_t); x' = sqrt(a_prev)*x0 + sqrt(1-a_prev)*eps, "
    "elementwise in f32 (the same for inversion with METHOD.md stage 1 step 4's a_t / a_prev).",
    "U-Net timestep input: the scheduler's int64 timestep (a 0-d tensor, broadcast over the batch).",
    "Working size: the shorter side is resized to 64 (the issue's SDXL default is 1024; tiny here) with the "
    "SD fixture's Pillow-exact bilinear (antialiased) resize, then center-cropped to multiples of 8 -> 64 x 80 "
    "pixels, 8 x 10 latent; image = u8 / 127.5 - 1.",
    "Preprocessing: z0 = 0.13025 * S.vae.encode(image).latent_dist.mean (scaling_factor of tiny-xl's VAE config; "
    "float32 throughout, force_upcast irrelevant).",
    "Decoding: decoded = clamp(T.vae.decode(final / 0.13025).sample / 2 + 0.5, 0, 1) in f32 (not quantised).",
    "no-injection ablation: the batch of three is still run (the source branch just injects nothing); its "
    "step.0.injected.* tensors are therefore the unmodified site outputs.",
    "t2i: ordinary DDIM text-to-image on T with guidance: batch [x, x] with conditions [E_T(negative), E_T(prompt)] "
    "(context, pooled, time_ids), eps = eps_neg + omega * (eps_pos - eps_neg); noise from torch.randn "
    "(seed in settings), init_noise_sigma 1.",
]


def log(msg: str) -> None:
    mf.log(msg)


# ---------------------------------------------------------------------------------------
# model


def load_tame() -> dict:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(MODEL_DIR), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        m = getattr(pipe, comp)
        m.eval()
        for n, p in m.named_parameters():
            assert p.dtype == torch.float32, (comp, n, p.dtype)
    unet = pipe.unet
    with torch.no_grad():
        unet.conv_out.weight.mul_(TAME)
        unet.conv_out.bias.mul_(TAME)
    assert unet.config.addition_embed_type == "text_time"
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
    # the site layout this script assumes: up_blocks[1] has 3 attentions of 2 transformer blocks
    ub = unet.up_blocks[1]
    assert len(ub.attentions) == 3 and all(len(a.transformer_blocks) == 2 for a in ub.attentions)
    assert len(unet.up_blocks[0].attentions[0].transformer_blocks) == 3
    assert not hasattr(unet.up_blocks[2], "attentions") or not unet.up_blocks[2].attentions
    return dict(name=MODEL, dir=MODEL_DIR, pipe=pipe, unet=unet, vae=pipe.vae, te1=pipe.text_encoder,
                te2=pipe.text_encoder_2, tok1=pipe.tokenizer, tok2=pipe.tokenizer_2)


def token_ids(model: dict, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for tok, te in ((model["tok1"], model["te1"]), (model["tok2"], model["te2"])):
        ids = tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
        assert len(ids) == MAX_LEN and max(ids) < te.config.vocab_size
        out.append(torch.tensor([ids], dtype=torch.int64))
    return out[0], out[1]


@torch.no_grad()
def embed(model: dict, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(context [1,77,80], pooled [1,40]) of one prompt."""
    ids1, ids2 = token_ids(model, prompt)
    o1 = model["te1"](ids1, output_hidden_states=True)
    o2 = model["te2"](ids2, output_hidden_states=True)
    ctx = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1).contiguous()
    pooled = o2.text_embeds.contiguous()
    # diffusers' own encode_prompt must give exactly these
    pe, ne, pp, npp = model["pipe"].encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
    assert ne is None and npp is None
    assert torch.equal(pe, ctx) and torch.equal(pp, pooled), prompt
    return ctx, pooled


def time_ids(model: dict, h: int, w: int) -> torch.Tensor:
    tid = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)
    ref = model["pipe"]._get_add_time_ids((h, w), (0, 0), (h, w), dtype=torch.float32,
                                          text_encoder_projection_dim=model["te2"].config.projection_dim)
    assert torch.equal(ref, tid), ref
    return tid


def unet_call(unet, latents, t, ctx, pooled, tids):
    return unet(latents, t, encoder_hidden_states=ctx,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": tids}).sample


# ---------------------------------------------------------------------------------------
# feature injection: make_pipeline_fixtures' hooks, on the SDXL sites


class Injector(mp.Injector):
    """mp.Injector's hooks (masked mix of rows 1, 2 with row 0; capture) on the SDXL sites: conv2 of
    up_blocks[1].resnets[1], and to_q / to_k of attn1 in transformer_blocks 0 and 1 of
    up_blocks[1].attentions[1..2]; each attention site is named up_blocks.1.attentions.{j}
    .transformer_blocks.{d}, its h x w taken from a pre-hook on the enclosing Transformer2DModel."""

    def __init__(self, unet):  # noqa: super().__init__ would hook the SD1.x sites
        self.conv_on = False
        self.attn_on = False
        self.mask = "full"
        self.capture: dict[str, torch.Tensor] | None = None
        self.calls = 0
        self.handles = []
        self.hw: dict[str, tuple[int, int]] = {}
        self.handles.append(unet.up_blocks[1].resnets[1].conv2.register_forward_hook(self._conv_hook()))
        for i, j, d in ATTN_SITES:
            site = attn_site(i, j, d)
            tr = unet.up_blocks[i].attentions[j]
            attn1 = tr.transformer_blocks[d].attn1
            assert not attn1.is_cross_attention
            self.handles.append(tr.register_forward_pre_hook(self._hw_hook(site), with_kwargs=True))
            self.handles.append(attn1.to_q.register_forward_hook(self._attn_hook(site, "q")))
            self.handles.append(attn1.to_k.register_forward_hook(self._attn_hook(site, "k")))


@torch.no_grad()
def check_with_processors(unet, latents, t, ctx, pooled, tids, mask, conv_on, attn_on, hw) -> torch.Tensor:
    """noise_pred with mp.MixingSelfAttention (explicit q/k/v, mix, softmax per head) on the 4 attn1
    sites and a plain conv2 hook: an independent second implementation of the injection."""
    originals = []
    for i, j, d in ATTN_SITES:
        attn1 = unet.up_blocks[i].attentions[j].transformer_blocks[d].attn1
        originals.append((attn1, attn1.processor))
        attn1.set_processor(mp.MixingSelfAttention(tuple(hw[attn_site(i, j, d)]), mask if attn_on else None))

    def conv_hook(_m, _i, out):
        return mp.mix(out, mp.layer_mask(mask, out.shape[2], out.shape[3])) if conv_on else out

    h = unet.up_blocks[1].resnets[1].conv2.register_forward_hook(conv_hook)
    try:
        return unet_call(unet, latents, t, ctx, pooled, tids)
    finally:
        h.remove()
        for attn1, proc in originals:
            attn1.set_processor(proc)


# ---------------------------------------------------------------------------------------
# the method


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(str(MODEL_DIR), subfolder="scheduler")


def ddim_inverse_scheduler():
    from diffusers import DDIMInverseScheduler

    return DDIMInverseScheduler.from_pretrained(str(MODEL_DIR), subfolder="scheduler")


@torch.no_grad()
def run_ditail(sc: dict, S: dict, T: dict, image: torch.Tensor, checks: dict) -> tuple[dict, dict]:
    p = dict(DEFAULTS, **sc)
    inv_pos, inv_neg = sc.get("inv_pos", p["pos"]), sc.get("inv_neg", p["neg"])
    n_inv, n_spl = p["n_inv"], p["n_spl"]
    assert mp.compatible(n_inv, n_spl), (n_inv, n_spl)
    sched = ddim_scheduler()
    assert sched.config.steps_offset == 1 and not sched.config.set_alpha_to_one
    assert sched.config.timestep_spacing == "leading" and sched.config.prediction_type == "epsilon"
    ac = sched.alphas_cumprod  # float32 [1000]
    final_ac = sched.final_alpha_cumprod.to(torch.float32)
    inv_ts = mp.leading_timesteps(sched, n_inv)[::-1]  # increasing 1, ...
    spl_ts = mp.leading_timesteps(sched, n_spl)  # decreasing
    assert set(spl_ts) <= set(inv_ts)
    ratio_spl = 1000 // n_spl
    n_conv = math.floor(p["conv_ratio"] * n_spl) if p["inject"] else 0
    n_attn = math.floor(p["attn_ratio"] * n_spl) if p["inject"] else 0
    H, W = int(image.shape[2]), int(image.shape[3])
    out: dict[str, torch.Tensor] = {"image": image}

    # stage 1: encode and invert with S
    z0 = S["vae"].config.scaling_factor * S["vae"].encode(image).latent_dist.mean
    out["z0"] = z0
    tids = time_ids(S, H, W)
    out["time_ids"] = tids
    pc, pp = embed(S, inv_pos)
    nc, np_ = embed(S, inv_neg)
    cond_inv = p["alpha"] * pc - p["beta"] * nc
    cond_inv_pooled = p["alpha"] * pp - p["beta"] * np_
    out["cond_inv"] = cond_inv
    out["cond_inv_pooled"] = cond_inv_pooled
    z = z0
    Z = {}
    prev_a = final_ac
    inv_diff = 0.0
    isched = ddim_inverse_scheduler()
    isched.set_timesteps(n_inv)
    assert [int(t) for t in isched.timesteps] == inv_ts, isched.timesteps
    for t in inv_ts:
        eps = unet_call(S["unet"], z, torch.tensor(t, dtype=torch.int64), cond_inv, cond_inv_pooled, tids)
        z_new = mp.ddim_move(z, eps, prev_a, ac[t])
        ref = isched.step(eps, t, z).prev_sample  # cross-check with diffusers' DDIMInverseScheduler
        inv_diff = max(inv_diff, float((ref - z_new).abs().max()))
        z = z_new
        prev_a = ac[t]
        Z[t] = z
        out[f"inverted.{t}"] = z
        out[f"inv_eps.{t}"] = eps

    # stage 2: sample with T, injecting the source branch's features
    (e_unc, p_unc), (e_pos, p_pos), (e_neg, p_neg) = embed(T, ""), embed(T, p["pos"]), embed(T, p["neg"])
    out.update(emb_uncond=e_unc, emb_pos=e_pos, emb_neg=e_neg,
               emb_uncond_pooled=p_unc, emb_pos_pooled=p_pos, emb_neg_pooled=p_neg)
    ctx = torch.cat([e_unc, e_pos, e_neg])
    pooled = torch.cat([p_unc, p_pos, p_neg])
    tids3 = time_ids(T, H, W).repeat(3, 1)
    unet = T["unet"]

    # the hooks, switched off, must not change anything
    x_probe = Z[spl_ts[0]]
    probe_in = torch.cat([Z[spl_ts[0]], x_probe, x_probe])
    t_probe = torch.tensor(spl_ts[0], dtype=torch.int64)
    plain = unet_call(unet, probe_in, t_probe, ctx, pooled, tids3)
    inj = Injector(unet)
    try:
        hooked = unet_call(unet, probe_in, t_probe, ctx, pooled, tids3)
        assert torch.equal(plain, hooked) and inj.calls == HOOK_CALLS, inj.calls
        inj.mask = p["mask"]
        dsched = ddim_scheduler()
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
            latents = torch.cat([Z[t], x, x])
            noise_pred = unet_call(unet, latents, tt, ctx, pooled, tids3)
            assert inj.calls == HOOK_CALLS
            eps = noise_pred[2:3] + p["omega"] * (noise_pred[1:2] - noise_pred[2:3])
            prev = t - ratio_spl
            a_prev = ac[prev] if prev >= 0 else final_ac
            x_new = mp.ddim_move(x, eps, ac[t], a_prev)
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
                mp.check_injected(inj.capture, p["mask"], inj.conv_on, inj.attn_on, hw0)
                inj.remove()
                alt = check_with_processors(unet, latents, tt, ctx, pooled, tids3, p["mask"], inj.conv_on,
                                            inj.attn_on, hw0)
                inj = Injector(unet)
                inj.mask = p["mask"]
                proc_diff = float((alt - noise_pred).abs().max())
                assert proc_diff <= 1e-5 * float(noise_pred.abs().max()), proc_diff
                tol = 1e-5 * float(noise_pred.abs().max())
                plain0 = check_with_processors(unet, latents, tt, ctx, pooled, tids3, "full", False, False, hw0)
                # (plain0 uses the explicit attention, noise_pred diffusers' SDPA: equal up to rounding)
                inj_effect = float((plain0[1:] - noise_pred[1:]).abs().max())
                if p["inject"]:  # injection must change the target branches, and only those
                    assert inj_effect > 100 * tol, inj_effect
                    assert float((plain0[0] - noise_pred[0]).abs().max()) <= tol
                else:
                    assert inj_effect <= tol, inj_effect
                tid_effect = None
                if not p["inject"]:  # the size conditioning reaches the U-Net: other time_ids change it
                    other = unet_call(unet, latents, tt, ctx, pooled, time_ids(T, 2 * H, 2 * W).repeat(3, 1))
                    tid_effect = float((other - plain0).abs().max())
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
                          "max_abs_diff_inversion_vs_DDIMInverseScheduler_step": inv_diff,
                          "step0_max_abs_change_of_target_rows_by_injection": inj_effect}
    if tid_effect is not None:
        assert tid_effect > 1e-4 * float(plain0.abs().max()), tid_effect
        checks[sc["name"]]["step0_max_abs_change_of_noise_pred_with_time_ids_of_2H_2W"] = tid_effect
    assert step_diff <= 1e-6, step_diff
    assert inv_diff <= 1e-6, inv_diff
    i1, i2 = token_ids(S, inv_pos), token_ids(S, inv_neg)
    t1, t2, te = token_ids(T, p["pos"]), token_ids(T, p["neg"]), token_ids(T, "")
    settings = {
        "n_inv": n_inv, "n_spl": n_spl, "mask": p["mask"], "inject": p["inject"],
        "alpha": p["alpha"], "beta": p["beta"], "omega": p["omega"],
        "conv_ratio": p["conv_ratio"], "attn_ratio": p["attn_ratio"],
        "conv_steps": n_conv, "attn_steps": n_attn,
        "inversion_prompts": {"pos": inv_pos, "neg": inv_neg},
        "sampling_prompts": {"pos": p["pos"], "neg": p["neg"]},
        "inversion_timesteps": inv_ts, "sampling_timesteps": spl_ts,
        "working_size_hw": [H, W],
        "time_ids": [float(v) for v in tids[0]],
        "layer_hw": {k: list(v) for k, v in sorted(hw0.items())},
        "token_ids": {"S_inv_pos": i1[0][0].tolist(), "S_inv_neg": i2[0][0].tolist(),
                      "T_pos": t1[0][0].tolist(), "T_neg": t2[0][0].tolist(), "T_empty": te[0][0].tolist()},
        "token_ids_2": {"S_inv_pos": i1[1][0].tolist(), "S_inv_neg": i2[1][0].tolist(),
                        "T_pos": t1[1][0].tolist(), "T_neg": t2[1][0].tolist(), "T_empty": te[1][0].tolist()},
    }
    stats = {"max_abs_final": float(x.abs().max()), "max_abs_x_out_per_step": [round(g, 5) for g in growth],
             "max_abs_z0": float(z0.abs().max()), "max_abs_Z_start": float(Z[spl_ts[0]].abs().max()),
             "max_abs_decoded_minus_half": float((out["decoded"] - 0.5).abs().max())}
    return out, dict(settings=settings, stats=stats)


@torch.no_grad()
def run_t2i(T: dict, checks: dict) -> tuple[dict, dict]:
    c = T2I
    h, w = c["latent_hw"]
    H, W = 8 * h, 8 * w
    noise = torch.randn((1, 4, h, w), generator=torch.Generator().manual_seed(c["noise_seed"]), dtype=torch.float32)
    sched = ddim_scheduler()
    ac, final_ac = sched.alphas_cumprod, sched.final_alpha_cumprod.to(torch.float32)
    ts = mp.leading_timesteps(sched, c["steps"])
    ratio = 1000 // c["steps"]
    (e_pos, p_pos), (e_neg, p_neg) = embed(T, c["prompt"]), embed(T, c["negative"])
    tids = time_ids(T, H, W)
    ctx, pooled, tids2 = torch.cat([e_neg, e_pos]), torch.cat([p_neg, p_pos]), tids.repeat(2, 1)
    out = {"noise": noise, "emb_pos": e_pos, "emb_neg": e_neg, "emb_pos_pooled": p_pos, "emb_neg_pooled": p_neg,
           "time_ids": tids}
    x = noise * sched.init_noise_sigma
    for i, t in enumerate(ts):
        tt = torch.tensor(t, dtype=torch.int64)
        npred = unet_call(T["unet"], torch.cat([x, x]), tt, ctx, pooled, tids2)
        eps = npred[0:1] + c["omega"] * (npred[1:2] - npred[0:1])
        prev = t - ratio
        x_new = mp.ddim_move(x, eps, ac[t], ac[prev] if prev >= 0 else final_ac)
        out[f"step.{i}.t"] = torch.tensor([t], dtype=torch.int64)
        out[f"step.{i}.x_in"] = x
        out[f"step.{i}.eps"] = eps
        out[f"step.{i}.x_out"] = x_new
        x = x_new
    out["final"] = x

    # cross-check with diffusers' StableDiffusionXLPipeline (DDIM, same noise, same tame weights), once
    # with the embeddings passed in and once from the prompt strings
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(vae=T["vae"], text_encoder=T["te1"], text_encoder_2=T["te2"],
                                     tokenizer=T["tok1"], tokenizer_2=T["tok2"], unet=T["unet"],
                                     scheduler=ddim_scheduler(), force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    common = dict(height=H, width=W, num_inference_steps=c["steps"], guidance_scale=c["omega"], eta=0.0,
                  original_size=(H, W), target_size=(H, W), crops_coords_top_left=(0, 0), guidance_rescale=0.0,
                  output_type="latent")
    lat_e = pipe(prompt_embeds=e_pos, pooled_prompt_embeds=p_pos, negative_prompt_embeds=e_neg,
                 negative_pooled_prompt_embeds=p_neg, latents=noise.clone(), **common).images
    lat_p = pipe(c["prompt"], negative_prompt=c["negative"], latents=noise.clone(), **common).images
    d_e = float((lat_e - x).abs().max())
    d_p = float((lat_p - x).abs().max())
    checks["t2i"] = {"max_abs_diff_final_vs_StableDiffusionXLPipeline_embeds": d_e,
                     "max_abs_diff_final_vs_StableDiffusionXLPipeline_prompts": d_p}
    for d in (d_e, d_p):
        assert d <= 1e-5 * max(1.0, float(x.abs().max())), d
    i_pos, i_neg = token_ids(T, c["prompt"]), token_ids(T, c["negative"])
    settings = dict(c, latent_hw=[h, w], timesteps=ts, image_size_hw=[H, W],
                    time_ids=[float(v) for v in tids[0]],
                    token_ids={"pos": i_pos[0][0].tolist(), "neg": i_neg[0][0].tolist()},
                    token_ids_2={"pos": i_pos[1][0].tolist(), "neg": i_neg[1][0].tolist()},
                    batch="latents [x, x], context [emb_neg, emb_pos], text_embeds [emb_neg_pooled, emb_pos_pooled], "
                          "time_ids [time_ids, time_ids]; eps = eps_neg + omega * (eps_pos - eps_neg)",
                    noise_call=f"torch.randn((1, 4, {h}, {w}), generator=torch.Generator().manual_seed("
                               f"{c['noise_seed']}), dtype=torch.float32); x_start = noise (init_noise_sigma 1)")
    growth = [round(float(out[f"step.{i}.x_out"].abs().max()), 5) for i in range(len(ts))]
    return out, dict(settings=settings, stats={"max_abs_final": float(x.abs().max()),
                                               "max_abs_noise": float(noise.abs().max()),
                                               "max_abs_x_out_per_step": growth})


# ---------------------------------------------------------------------------------------


def save(name: str, tensors: dict) -> dict:
    mp.OUT = OUT  # mp.save writes under mp.OUT
    return mp.save(name, tensors)


def main() -> None:
    mf._install_log_capture()
    t0 = time.time()
    import diffusers
    import PIL
    import safetensors
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"Pillow {PIL.__version__}, threads {torch.get_num_threads()}")
    if not (MODEL_DIR / "unet" / "config.json").is_file():
        sys.exit(f"error: {MODEL_DIR} missing; run scripts/make_sdxl_fixtures.py first")
    if OUT.exists():
        for f in OUT.iterdir():
            f.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    checks: dict[str, dict] = {}

    # content image + preprocessing (as make_pipeline_fixtures)
    img = mp.make_content_image()
    img.save(OUT / "content.png", format="PNG")
    back = Image.open(OUT / "content.png")
    assert back.mode == "RGB" and back.size == (mp.IMG_W, mp.IMG_H)
    resized, image, pinfo = mp.preprocess(back, WORK_SIZE)
    assert np.array_equal(np.asarray(back), np.asarray(img))
    assert tuple(image.shape) == (1, 3, 64, 80), image.shape
    assert pinfo == {"resized_wh": [85, 64], "crop_wh": [80, 64], "crop_offset_xy": [2, 0]}, pinfo
    emu, float_off = mp.bilinear_resize_emulated(np.asarray(back), *pinfo["resized_wh"])
    assert np.array_equal(emu, resized), "the Pillow resize emulation does not match"
    sd_png = mf.FIXTURES / "pipeline" / "content.png"
    same_png = sd_png.is_file() and sd_png.read_bytes() == (OUT / "content.png").read_bytes()
    checks["preprocess"] = {"fixed_point_emulation_equals_pillow": True,
                            "float_triangle_filter_without_intermediate_rounding_max_abs_diff_u8": float_off,
                            "content_png_equals_pipeline_content_png": same_png}
    files["content.png"] = {"size": (OUT / "content.png").stat().st_size, "width": mp.IMG_W, "height": mp.IMG_H}
    files["preprocess.safetensors"] = save("preprocess.safetensors",
                                           {"resized_u8": torch.from_numpy(resized), "image": image})
    log(f"preprocess: {mp.IMG_W}x{mp.IMG_H} -> resize {pinfo['resized_wh']} -> crop {pinfo['crop_wh']} at "
        f"{pinfo['crop_offset_xy']}; content.png equals pipeline/'s: {same_png}")

    M = load_tame()
    S = T = M

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

    lat = "[1,4,8,10]"
    meta = {
        "about": "Golden fixtures for ditail's pipeline on SDXL, written by scripts/make_sdxl_pipeline_fixtures.py "
                 "(METHOD.md's method on SDXL modules as defined in 'interpretations'; float32 on CPU). Tolerance for "
                 "the Rust side: " + mf.TOLERANCE,
        "models": {
            "source_S": f"tests/fixtures/models/{MODEL} (float32 files)",
            "target_T": f"tests/fixtures/models/{MODEL} (the same model)",
            "tame": f"after loading, unet.conv_out.weight *= {TAME} and unet.conv_out.bias *= {TAME} (float32); not "
                    "saved (the Rust tests scale the same way)",
            "tokenizers": "tokenizer/ (pads with <|endoftext|>) and tokenizer_2/ (pads with '!'), transformers "
                          'CLIPTokenizer, tok(p, padding="max_length", max_length=77, truncation=True)',
            "text_embedding": "E(p) = (context, pooled): context = cat(text_encoder(ids1).hidden_states[-2], "
                              "text_encoder_2(ids2).hidden_states[-2], dim=-1) [1,77,80]; pooled = "
                              "text_encoder_2(ids2).text_embeds [1,40] (= StableDiffusionXLPipeline.encode_prompt, "
                              "clip_skip None, checked exactly)",
            "added_conditioning": "added_cond_kwargs = {text_embeds: pooled, time_ids: [H, W, 0, 0, H, W]} on every "
                                  "U-Net call, H x W = working image size in pixels (64 x 80)",
        },
        "scheduler": {
            "ditail_and_t2i": f"DDIMScheduler.from_pretrained({MODEL}, subfolder='scheduler'): scaled_linear "
                              "0.00085..0.012, steps_offset 1, set_alpha_to_one false, leading, epsilon; the same "
                              "values as pipeline/scheduler.json cases[0] (sd15_leading), float32 alphas_cumprod = "
                              "its alphas_cumprod_f32",
        },
        "preprocess": {
            "content.png": f"{mp.IMG_W}x{mp.IMG_H} RGB, procedural; byte-identical to pipeline/content.png",
            "how": "exactly as pipeline/meta.json preprocess (Pillow BILINEAR resize, shorter side -> 64, center "
                   "crop to multiples of 8, u8 / 127.5 - 1)",
            "tensors": {"resized_u8": "uint8 [h, w, 3] after resize, before crop",
                        "image": "float32 [1, 3, 64, 80] after crop and scaling"},
            **pinfo,
        },
        "ditail": {
            "defaults": DEFAULTS,
            "scenarios": scen_meta,
            "tensors": {
                "image": "[1,3,64,80] the preprocessed image (= preprocess.safetensors image)",
                "z0": f"0.13025 * S.vae.encode(image).latent_dist.mean {lat}",
                "time_ids": "[1,6] float32 [H, W, 0, 0, H, W] = [64, 80, 0, 0, 64, 80], used by every U-Net call "
                            "(repeated over the batch)",
                "cond_inv": "alpha * E_S(inv p+).context - beta * E_S(inv p-).context [1,77,80]",
                "cond_inv_pooled": "alpha * E_S(inv p+).pooled - beta * E_S(inv p-).pooled [1,40]",
                "inverted.{t}": f"Z[t] after the inversion step at timestep t (t increasing) {lat}",
                "inv_eps.{t}": f"U_S(z, t, context cond_inv, text_embeds cond_inv_pooled, time_ids) {lat}",
                "emb_uncond / emb_pos / emb_neg": "contexts of E_T(''), E_T(p+), E_T(p-) [1,77,80]",
                "emb_uncond_pooled / emb_pos_pooled / emb_neg_pooled": "pooled of E_T(''), E_T(p+), E_T(p-) [1,40]",
                "step.{i}.t": "sampling timestep of step i (0-based, decreasing), int64 [1]",
                "step.{i}.x_in": f"x before the step {lat} (step 0: Z[t_0])",
                "step.{i}.noise_pred": "T's U-Net on latents [Z[t], x, x], context [emb_uncond, emb_pos, emb_neg], "
                                       "text_embeds [emb_uncond_pooled, emb_pos_pooled, emb_neg_pooled], time_ids x3, "
                                       "with injection [3,4,8,10]",
                "step.{i}.eps": "noise_pred[2] + omega * (noise_pred[1] - noise_pred[2]) [1,4,8,10]",
                "step.{i}.x_out": f"x after the DDIM step {lat}",
                "step.0.injected.up_blocks.1.resnets.1": "step 0: output of up_blocks[1].resnets[1].conv2 after the "
                                                         "masked mix (before the shortcut add) [3,16,4,5]",
                "step.0.injected.up_blocks.1.attentions.{j}.transformer_blocks.{d}.q / .k":
                    "step 0: attn1.to_q / to_k output of transformer_blocks[d] of up_blocks[1].attentions[j] "
                    "(j in 1, 2; d in 0, 1) after the masked mix [3, 20, 16], token n = row*w + col on the 4x5 grid",
                "final": f"x after the last step {lat}",
                "decoded": "clamp(T.vae.decode(final / 0.13025).sample / 2 + 0.5, 0, 1) [1,3,64,80]",
            },
            "injection_sites": [CONV_SITE] + [attn_site(*s) for s in ATTN_SITES],
            "site_names": SITE_NAMES,
        },
        "t2i": dict(tinfo, tensors={
            "noise": f"start latent {lat}", "emb_pos / emb_neg": "contexts of E_T(prompt), E_T(negative) [1,77,80]",
            "emb_pos_pooled / emb_neg_pooled": "pooled of E_T(prompt), E_T(negative) [1,40]",
            "time_ids": "[1,6] [64, 80, 0, 0, 64, 80]",
            "step.{i}.t": "int64 [1]", "step.{i}.x_in / x_out": lat,
            "step.{i}.eps": f"guided eps {lat}", "final": f"x after the last step {lat}"}),
        "interpretations": INTERPRETATIONS,
        "checks": checks,
        "check_notes": {
            "ditail": "each DDIM update equals diffusers' DDIMScheduler.step / DDIMInverseScheduler.step; the hooks "
                      "switched off change nothing; at step 0 the hook injection equals an explicit attention "
                      "processor (make_pipeline_fixtures.MixingSelfAttention) on the 4 attn1 layers + a conv2 hook; "
                      "injected rows equal row 0 exactly where m = 1 and differ where m = 0; injection changes the "
                      "target rows (by > 100x the tolerance) and not the source row; noinj: other time_ids "
                      "([2H, 2W, 0, 0, 2H, 2W]) change the prediction",
            "text": "every E(p) equals StableDiffusionXLPipeline.encode_prompt(p, do_classifier_free_guidance=False) "
                    "exactly; time_ids equal StableDiffusionXLPipeline._get_add_time_ids((H, W), (0, 0), (H, W))",
            "t2i": "final equals StableDiffusionXLPipeline (DDIMScheduler from the folder's scheduler config, "
                   "latents = noise, original_size = target_size = (H, W), guidance_rescale 0, output_type latent), "
                   "called with the stored embeddings and with the prompt strings",
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__,
                     "numpy": np.__version__, "Pillow": PIL.__version__},
        "files": files,
    }  # no timings: a rerun must reproduce every file byte for byte
    (OUT / "meta.json").write_text(mp._dump_compact_json(meta), encoding="utf-8")

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
