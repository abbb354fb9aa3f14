#!/usr/bin/env python3
"""Golden fixtures for prompts as AUTOMATIC1111 reads them (tests/fixtures/prompts/).

A reference of A1111's prompt handling, written here from its documented behaviour
(stable-diffusion-webui at 82a973c0: modules/prompt_parser.py `parse_prompt_attention`,
modules/sd_hijack_clip.py `tokenize_line` / `process_tokens`, modules/sd_emphasis.py
"Original", and the "pad prompt/negative prompt" option of modules/sd_samplers_cfg_denoiser.py),
run with transformers' tokenizers and text encoders of the tiny test models:

  * emphasis syntax: (x) x1.1, [x] /1.1, (x:w), nesting, \\( \\) \\[ \\] \\\\ escapes, a lone
    backslash dropped, BREAK as a word, unclosed brackets applying to the end, stray closing
    brackets as text, neighbouring pieces of equal weight merged;
  * each piece tokenized alone (no special tokens); chunks of 75 tokens, a chunk that is full
    in the middle of a phrase giving the phrase after a comma at most 20 tokens back to the
    next chunk; BREAK closing the chunk; each chunk [BOS] + tokens + [EOS] padded with EOS to
    77 (the weights 1.0 there), then everything after the first EOS replaced by the tokenizer's
    padding token (SDXL's tokenizer_2: "!");
  * each chunk encoded on its own (SD1.x: last_hidden_state, clip skip 1; SDXL: both encoders'
    hidden_states[-2], the pooled output of tokenizer_2's encoder from the first chunk), each
    encoder's chunk multiplied token-wise by the weights and rescaled to its unweighted mean
    (z * w * mean(z) / mean(z * w), the means in float64), chunks concatenated along the
    tokens;
  * prompts that share a batch padded with the empty prompt's encoding, chunk by chunk.

For every case the golden file holds (prefix sd1. for tiny-a, xl. for tiny-xl):
  <p>.<case>.ids        [chunks, 77] int64 (xl: tokenizer's; <p>.<case>.ids_2 tokenizer_2's)
  <p>.<case>.weights    [chunks, 77] float32
  <p>.<case>.context    [1, 77 * chunks, width] float32
  sd1.<case>.raw        the same before the emphasis (each chunk's plain encoding)
  xl.<case>.pooled      [1, projection] float32
  <p>.pair.context_pos / .context_neg   the long positive and short negative after padding
meta.json: each case's prompt and parsed pieces, how much the emphasis rescale amplifies the
encoder's rounding in it (amplification_sd1: sum|z| / |sum z|, the worst chunk; tests scale their
tolerance by it), the versions, the checks made (a plain prompt
equals diffusers' encode_prompt exactly).

Usage:  .venv/bin/python scripts/make_prompt_fixtures.py   (needs the tiny models of
make_fixtures.py and make_sdxl_fixtures.py; a few seconds, ~0.3 MB)
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (offline, 2 threads, no ftfy)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = mf.FIXTURES / "prompts"
CHUNK = 75
BACKTRACK = 20

# The tiny vocabularies split most words into several tokens, so 120 tokens come quickly.
LONG = ", ".join([
    "(masterpiece:1.2)", "best quality", "a watercolor painting of a red fox in the snow",
    "((detailed fur))", "soft morning light", "[blurry]", "pine trees in the background",
    "a frozen lake", "mountains far away", "(dramatic sky:0.8)", "intricate details",
    "artstation", "trending", "by a famous painter", "high resolution",
])
CASES = {
    "plain": "a cat on a mat",
    "empty": "",
    "weights": "(masterpiece:1.2), ((best quality)), [blurry], a \\(cat\\) on a mat",
    "nested_unbalanced": "a (red (cat:1.5) sits on [a mat) with] stray) brackets \\ here",
    "negative_weight": "a cat, (dog:-0.5), (mat:0)",
    "break": "a cat on a mat BREAK a dog in a hat",
    "long": LONG,
    "long_break": LONG + " BREAK (a small bird:1.3)",
}
PAIR = ("long", "weights")  # positive, negative of the padded pair

# Textual-inversion embeddings (embeddings/): name -> (file content builder, family).
EMB_DIR = OUT / "embeddings"
# Cases that name embeddings, per family (the other family's would be refused).
EMB_CASES = {
    "sd1": {
        "emb_negative": "worst quality, EasyNeg, (blurry:1.2)",
        "emb_comfy_weighted": "a red fox, (embedding:fox-style:1.3), snow",
        "emb_long": LONG + ", EasyNeg",
    },
    "xl": {
        "emb_xl": "embedding:XlNeg, worst quality, (XlNeg:0.8)",
    },
}


# ---------------------------------------------------------------------------------------
# embedding files


def make_embeddings() -> dict:
    """The files (A1111's emb_params, diffusers' one-key file, SDXL's clip_l / clip_g, and a
    pickle that must be refused) and the database {name: [matrix per encoder]}."""
    EMB_DIR.mkdir(parents=True)
    g = torch.Generator().manual_seed(5)

    def randn(*shape):
        # about the spread of the tiny encoders' token embeddings
        return (torch.randn(*shape, generator=g) * 0.3).contiguous()

    files = {
        "EasyNeg": {"emb_params": randn(4, 32)},
        "fox-style": {"<fox-style>": randn(32)},
        "XlNeg": {"clip_l": randn(2, 32), "clip_g": randn(2, 48)},
    }
    db = {}
    for name, tensors in files.items():
        save_file(tensors, str(EMB_DIR / f"{name}.safetensors"))
        if "clip_l" in tensors:
            db[name] = [tensors["clip_l"], tensors["clip_g"]]
        else:
            (t,) = tensors.values()
            db[name] = [t.reshape(-1, t.shape[-1])]
    (EMB_DIR / "OldPickle.pt").write_bytes(b"\x80\x02}q\x00." )  # a (tiny) pickle: refused, never read
    return db


# ---------------------------------------------------------------------------------------
# A1111's emphasis syntax

TOKEN = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""", re.X)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(text: str) -> list[tuple[str, float]]:
    """[(text, weight)], BREAK as ("BREAK", -1.0)."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in TOKEN.finditer(text):
        tok, number = m.group(0), m.group(1)
        if tok.startswith("\\"):
            pieces.append([tok[1:], 1.0])
        elif tok == "(":
            round_open.append(len(pieces))
        elif tok == "[":
            square_open.append(len(pieces))
        elif number is not None and round_open:
            scale(round_open.pop(), float(number))
        elif tok == ")" and round_open:
            scale(round_open.pop(), 1.1)
        elif tok == "]" and square_open:
            scale(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(BREAK.split(tok)):
                if i:
                    pieces.append(["BREAK", -1.0])
                pieces.append([part, 1.0])
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1)
    if not pieces:
        pieces = [["", 1.0]]
    merged: list[list] = []
    for piece in pieces:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(list(piece))
    return [(t, w) for t, w in merged]


# ---------------------------------------------------------------------------------------
# chunks


def chunks(parsed, tok, db=None):
    """[(ids, weights, fixes)] with fixes [(position in ids, name)]."""
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    comma = tok.get_vocab().get(",</w>")
    db = db or {}
    lookup = sorted(((tok(n, add_special_tokens=False)["input_ids"], n) for n in db), key=lambda x: -len(x[0]))
    out = []
    ids: list[int] = []
    ws: list[float] = []
    fixes: list[tuple[int, str]] = []
    last_comma = -1

    def close():
        nonlocal ids, ws, fixes, last_comma
        full = [bos] + ids + [eos] * (CHUNK - len(ids)) + [eos]
        first_end = full.index(eos)
        full = full[:first_end + 1] + [pad] * (len(full) - first_end - 1)
        out.append((full, [1.0] + ws + [1.0] * (CHUNK - len(ws)) + [1.0], [(p + 1, n) for p, n in fixes]))
        ids, ws, fixes, last_comma = [], [], [], -1

    for text, weight in parsed:
        if text == "BREAK" and weight == -1:
            close()
            continue
        tokens = tok(text.replace("embedding:", "") if db else text, add_special_tokens=False)["input_ids"]
        pos = 0
        while pos < len(tokens):
            t = tokens[pos]
            if t == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK and last_comma != -1 and len(ids) - last_comma <= BACKTRACK:
                cut = last_comma + 1
                moved_ids, moved_ws = ids[cut:], ws[cut:]
                # (A1111 leaves the embeddings of the moved phrase behind; they move with it here)
                moved_fixes = [(p - cut, n) for p, n in fixes if p >= cut]
                ids, ws, fixes = ids[:cut], ws[:cut], [(p, n) for p, n in fixes if p < cut]
                close()
                ids, ws, fixes = moved_ids, moved_ws, moved_fixes
            if len(ids) == CHUNK:
                close()
            found = next(((name_ids, n) for name_ids, n in lookup if tokens[pos:pos + len(name_ids)] == name_ids), None)
            if found is None:
                ids.append(t)
                ws.append(weight)
                pos += 1
                continue
            name_ids, name = found
            n_vec = db[name][0].shape[0]
            if len(ids) + n_vec > CHUNK:
                close()
            fixes.append((len(ids), name))
            ids += [0] * n_vec
            ws += [weight] * n_vec
            pos += len(name_ids)
    if ids or not out:
        close()
    return out


class Fixed(torch.nn.Module):
    """A token embedding whose rows at the fixes are an embedding's vectors (A1111's
    EmbeddingsWithFixes), for a batch of one chunk."""

    def __init__(self, base, vectors):
        super().__init__()
        self.base, self.vectors = base, vectors

    def forward(self, ids):
        e = self.base(ids).clone()
        for pos, vec in self.vectors:
            e[0, pos:pos + vec.shape[0]] = vec
        return e


def run_fixed(enc, ids, fixes, db, encoder, **kw):
    base = enc.get_input_embeddings()
    enc.set_input_embeddings(Fixed(base, [(p, db[n][encoder]) for p, n in fixes]))
    try:
        return enc(torch.tensor([ids]), **kw)
    finally:
        enc.set_input_embeddings(base)


def emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One chunk [1, 77, width]: A1111's "Original" emphasis, z * w * mean(z) / mean(z * w).

    The two means are taken in float64 (A1111 takes them in the model's dtype): a chunk's
    mean is a small difference of large sums, on these random tiny encoders close to 0,
    and float32 summation order alone moved the ratio by 3e-3 relative."""
    w = weights.reshape(1, -1, 1)
    factor = (z.double().mean() / (z.double() * w.double()).mean()).float()
    return z * w * factor


# ---------------------------------------------------------------------------------------
# encoders


@torch.no_grad()
def encode_sd1(model_dir: Path, prompt: str, db=None):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    enc = CLIPTextModel.from_pretrained(str(model_dir / "text_encoder")).eval()
    cs = chunks(parse(prompt), tok, db)
    raw = [run_fixed(enc, ids, fixes, db, 0).last_hidden_state for ids, _, fixes in cs]
    zs = [emphasis(z, torch.tensor(ws)) for z, (_, ws, _) in zip(raw, cs)]
    return cs, torch.cat(zs, dim=1), torch.cat(raw, dim=1)


@torch.no_grad()
def encode_xl(model_dir: Path, prompt: str, db=None):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tok1 = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(str(model_dir / "tokenizer_2"))
    enc1 = CLIPTextModel.from_pretrained(str(model_dir / "text_encoder")).eval()
    enc2 = CLIPTextModelWithProjection.from_pretrained(str(model_dir / "text_encoder_2")).eval()
    parsed = parse(prompt)
    c1, c2 = chunks(parsed, tok1, db), chunks(parsed, tok2, db)
    assert len(c1) == len(c2), (prompt, len(c1), len(c2))
    zs, pooled = [], None
    for (ids1, ws1, f1), (ids2, ws2, f2) in zip(c1, c2):
        h1 = run_fixed(enc1, ids1, f1, db, 0, output_hidden_states=True).hidden_states[-2]
        o2 = run_fixed(enc2, ids2, f2, db, 1, output_hidden_states=True)
        h2 = o2.hidden_states[-2]
        if pooled is None:
            pooled = o2.text_embeds
        zs.append(torch.cat([emphasis(h1, torch.tensor(ws1)), emphasis(h2, torch.tensor(ws2))], dim=-1))
    return c1, c2, torch.cat(zs, dim=1), pooled


def amplification(raw: torch.Tensor, weights: torch.Tensor) -> float:
    """How much the rescale can amplify a relative error of the encoder's output: per chunk
    sum|z| / |sum z| and the same for z * w (a mean that is a small difference of large
    sums), the largest."""
    worst = 1.0
    z = raw.double().reshape(weights.shape[0], 77, -1)
    w = weights.double().reshape(weights.shape[0], 77, 1)
    for zc, wc in zip(z, w):
        for v in (zc, zc * wc):
            worst = max(worst, float(v.abs().sum() / v.sum().abs().clamp_min(1e-30)))
    return worst


def pad_pair(pos: torch.Tensor, neg: torch.Tensor, empty: torch.Tensor):
    """The "pad prompt/negative prompt" option: the shorter gets empty-prompt chunks."""
    n = max(pos.shape[1], neg.shape[1])

    def pad(z):
        missing = (n - z.shape[1]) // 77
        return torch.cat([z] + [empty] * missing, dim=1)

    return pad(pos), pad(neg)


@torch.no_grad()
def diffusers_checks(sd1: Path, xl: Path) -> dict:
    """A plain prompt encodes exactly as diffusers does."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out = {}
    pipe = StableDiffusionPipeline.from_pretrained(str(sd1), safety_checker=None, requires_safety_checker=False)
    want = pipe.encode_prompt(CASES["plain"], "cpu", 1, False)[0]
    got = encode_sd1(sd1, CASES["plain"])[1]
    out["sd1_plain_vs_diffusers_max_abs_diff"] = float((want - got).abs().max())
    assert out["sd1_plain_vs_diffusers_max_abs_diff"] == 0.0
    pipe = StableDiffusionXLPipeline.from_pretrained(str(xl))
    want, _, want_pooled, _ = pipe.encode_prompt(CASES["plain"], device="cpu", do_classifier_free_guidance=False)
    _, _, got, got_pooled = encode_xl(xl, CASES["plain"])
    out["xl_plain_vs_diffusers_max_abs_diff"] = float((want - got).abs().max())
    out["xl_plain_pooled_vs_diffusers_max_abs_diff"] = float((want_pooled - got_pooled).abs().max())
    assert out["xl_plain_vs_diffusers_max_abs_diff"] == 0.0
    assert out["xl_plain_pooled_vs_diffusers_max_abs_diff"] == 0.0
    return out


def main() -> None:
    torch.manual_seed(0)
    sd1 = mf.FIXTURES / "models" / "tiny-a"
    xl = mf.FIXTURES / "models" / "tiny-xl"
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tensors = {}
    meta = {"cases": {}, "chunk_tokens": CHUNK, "comma_backtrack": BACKTRACK}
    contexts = {}
    for name, prompt in CASES.items():
        c, z, raw = encode_sd1(sd1, prompt)
        tensors[f"sd1.{name}.ids"] = torch.tensor([ids for ids, _, _ in c], dtype=torch.int64)
        tensors[f"sd1.{name}.weights"] = torch.tensor([ws for _, ws, _ in c], dtype=torch.float32)
        tensors[f"sd1.{name}.context"] = z.contiguous()
        tensors[f"sd1.{name}.raw"] = raw.contiguous()
        c1, c2, zx, pooled = encode_xl(xl, prompt)
        tensors[f"xl.{name}.ids"] = torch.tensor([ids for ids, _, _ in c1], dtype=torch.int64)
        tensors[f"xl.{name}.ids_2"] = torch.tensor([ids for ids, _, _ in c2], dtype=torch.int64)
        tensors[f"xl.{name}.weights"] = torch.tensor([ws for _, ws, _ in c1], dtype=torch.float32)
        tensors[f"xl.{name}.context"] = zx.contiguous()
        tensors[f"xl.{name}.pooled"] = pooled.contiguous()
        contexts[name] = (z, zx)
        meta["cases"][name] = {
            "prompt": prompt,
            "pieces": [[t, w] for t, w in parse(prompt)],
            "chunks_sd1": len(c),
            "chunks_xl": len(c1),
            "amplification_sd1": amplification(raw, tensors[f"sd1.{name}.weights"]),
        }
        print(f"{name}: {len(c)} chunk(s) sd1, {len(c1)} xl; pieces {meta['cases'][name]['pieces'][:4]}")
    db = make_embeddings()
    meta["embedding_cases"] = {}
    for fam, cases in EMB_CASES.items():
        for name, prompt in cases.items():
            if fam == "sd1":
                c, z, raw = encode_sd1(sd1, prompt, db)
                tensors[f"sd1.{name}.raw"] = raw.contiguous()
                amp = amplification(raw, torch.tensor([ws for _, ws, _ in c]))
            else:
                c, _, z, pooled = encode_xl(xl, prompt, db)
                tensors[f"xl.{name}.pooled"] = pooled.contiguous()
                amp = None
            assert any(f for _, _, f in c), (name, "names no embedding")
            tensors[f"{fam}.{name}.ids"] = torch.tensor([ids for ids, _, _ in c], dtype=torch.int64)
            tensors[f"{fam}.{name}.weights"] = torch.tensor([ws for _, ws, _ in c], dtype=torch.float32)
            tensors[f"{fam}.{name}.context"] = z.contiguous()
            meta["embedding_cases"][name] = {
                "family": fam, "prompt": prompt, "chunks": len(c),
                "embeddings": [[i, p, n] for i, (_, _, f) in enumerate(c) for p, n in f],
                "amplification_sd1": amp,
            }
            print(f"{name}: {len(c)} chunk(s), embeddings {meta['embedding_cases'][name]['embeddings']}")
    meta["embeddings"] = {
        "folder": "embeddings/",
        "files": {"EasyNeg.safetensors": "A1111: emb_params [4, 32] (SD1.x, tiny-a's width)",
                  "fox-style.safetensors": "diffusers learned_embeds: one key '<fox-style>' [32]",
                  "XlNeg.safetensors": "SDXL: clip_l [2, 32], clip_g [2, 48] (tiny-xl's widths)",
                  "OldPickle.pt": "a pickle: refused with the conversion command when named"},
        "matching": "each name tokenized alone, matched on the prompt's tokens (longest first); "
                    "'embedding:' removed first (ComfyUI's syntax); the vectors replace the token "
                    "embeddings at placeholder positions (id 0), one per vector, with the piece's weight",
        "deviation": "A1111's comma backtrack leaves a moved phrase's embeddings behind; here they move "
                     "with it (no case exercises it)",
    }
    pos, neg = PAIR
    for i, p in enumerate(("sd1", "xl")):
        a, b = pad_pair(contexts[pos][i], contexts[neg][i], contexts["empty"][i])
        tensors[f"{p}.pair.context_pos"] = a.contiguous()
        tensors[f"{p}.pair.context_neg"] = b.contiguous()
    meta["pair"] = {"positive": pos, "negative": neg,
                    "padding": "the shorter context gets the empty prompt's 77-token encoding per missing chunk"}
    meta["checks"] = diffusers_checks(sd1, xl)
    import diffusers
    import transformers

    meta["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                        "diffusers": diffusers.__version__}
    save_file(tensors, str(OUT / "golden.safetensors"))
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({sum(t.numel() * t.element_size() for t in tensors.values()):,} bytes of tensors)")


if __name__ == "__main__":
    main()
