#!/usr/bin/env python3
"""The reference side of `ditail eval`'s benchmark: the three metric networks with
transformers / pytorch-fid (PyTorch, CPU, float32) on the same weights, written as the
JSON of scripts/bench_reference.py.

  clip_image   CLIPModel.get_image_features on a [B, 3, 224, 224] batch (ViT-L/14 vision
               tower + visual projection)
  clip_text    CLIPModel.get_text_features on [B, 77] token ids (no attention mask)
  dino_keys    ViTModel (DINO ViT-B/8) up to and including the last layer's key projection
               (what the structure distance uses): embeddings, layers 0..10, layer 11's
               layernorm_before and key projection -> [B, 785, 768]; checked once against a
               forward hook on the whole model
  inception    pytorch-fid's InceptionV3([3]) (resize to 299, 2x - 1, pool3) on a
               [B, 3, 299, 299] batch in [0, 1] -> [B, 2048] features

Weights: --weights DIR (default fixtures-full/eval) with clip/ and dino/ as written by
`make_eval_fixtures.py --full-size fixtures-full` (random weights, the real configs); the
Inception weights follow make_eval_fixtures.py's counter-hash rule (build_inception).
Inputs are random (seed 0).  Timing: median of --runs timed runs after one warm-up, under
torch.inference_mode; peak memory: RSS high-water mark reset before each row (as
bench_reference.py).

Usage:
  OMP_WAIT_POLICY=PASSIVE python scripts/bench_eval_reference.py --threads 2 --runs 3 \\
      --json bench-out/eval-reference.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_reference as br  # noqa: E402  (measure: warm-up + timed runs + peak RSS)
import make_eval_fixtures as mef  # noqa: E402  (build_inception, dino_keys; sets 2 threads on import)

import torch  # noqa: E402

ROWS = ("clip_image", "clip_text", "dino_keys", "inception")


def dino_keys_fn(model):
    """ViTModel up to the last layer's key projection: [B, 3, 224, 224] -> [B, tokens, hidden]."""
    layers = model.layers
    last = layers[-1]

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        h = model.embeddings(pixel_values)
        for layer in layers[:-1]:
            h = layer(h, None)
        return last.attention.k_proj(last.layernorm_before(h))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=mef.REPO / "fixtures-full" / "eval",
                    help="folder with clip/ and dino/ (make_eval_fixtures.py --full-size OUTDIR writes OUTDIR/eval)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers attn_implementation of CLIP and DINO (the goldens use eager)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)  # after the imports: make_fixtures sets 2 on import
    wants = lambda w: not a.only or w in a.only.split(",")  # noqa: E731
    unknown = set(filter(None, a.only.split(","))) - set(ROWS)
    if unknown:
        sys.exit(f"error: unknown rows {sorted(unknown)}; rows are {', '.join(ROWS)}")
    for sub in ("clip", "dino"):
        if not (a.weights / sub / "model.safetensors").is_file():
            sys.exit(f"error: {a.weights / sub}/model.safetensors missing; run "
                     "scripts/make_eval_fixtures.py --full-size fixtures-full first")

    import pytorch_fid
    import transformers
    from transformers import CLIPModel, ViTModel

    b, dev = a.batch, "cpu"
    load_s = {}
    t0 = time.perf_counter()
    clip = CLIPModel.from_pretrained(a.weights / "clip", dtype=torch.float32, attn_implementation=a.attn).eval()
    load_s["clip"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dino = ViTModel.from_pretrained(a.weights / "dino", dtype=torch.float32, add_pooling_layer=False,
                                    attn_implementation=a.attn).eval()
    load_s["dino"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inception, _, _ = mef.build_inception()
    load_s["inception"] = time.perf_counter() - t0
    for m in (clip, dino, inception):
        for n, p in m.named_parameters():
            assert p.dtype == torch.float32, n

    g = torch.Generator().manual_seed(0)
    pv_clip = torch.randn(b, 3, 224, 224, generator=g)
    ids = torch.full((b, 77), 49407, dtype=torch.int64)  # <|endoftext|> = pad
    ids[:, 0] = 49406  # <|startoftext|>
    ids[:, 1:16] = torch.randint(0, 49406, (b, 15), generator=g)
    pv_dino = torch.randn(b, 3, 224, 224, generator=g)
    img_inc = torch.rand(b, 3, 299, 299, generator=g)

    keys = dino_keys_fn(dino)
    with torch.inference_mode():  # the shortened forward equals the hooked whole-model keys
        mine = keys(pv_dino[:1])[0]
    ref = mef.dino_keys(dino, pv_dino[:1])
    diff = float((mine - ref).abs().max())
    assert diff <= 1e-5 * float(ref.abs().max()), diff

    print(f"eval reference bench: device {dev} dtype fp32, {a.threads} torch threads, batch {b}, "
          f"attention {a.attn}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"pytorch-fid {pytorch_fid.__version__}; load " + ", ".join(f"{k} {v:.1f} s" for k, v in load_s.items()),
          flush=True)
    print(f"{'row':<12} {'input':<20} {'median s':>9} {'per image ms':>13}  {'peak RSS GiB':>12}  runs s", flush=True)
    results: dict = {}

    def report(name: str, shape: list, fn) -> None:
        r = br.measure(fn, a.runs, dev)
        r["input_shape"] = shape
        print(f"{name:<12} {'x'.join(map(str, shape)):<20} {r['median_s']:>9.3f} {1e3 * r['median_s'] / b:>13.1f}  "
              f"{r['peak_rss_bytes'] / 2**30:>12.2f}  {[round(t, 3) for t in r['runs_s']]}", flush=True)
        results[name] = r

    if wants("clip_image"):
        report("clip_image", list(pv_clip.shape), lambda: clip.get_image_features(pixel_values=pv_clip).pooler_output)
    if wants("clip_text"):
        report("clip_text", list(ids.shape), lambda: clip.get_text_features(input_ids=ids).pooler_output)
    if wants("dino_keys"):
        report("dino_keys", list(pv_dino.shape), lambda: keys(pv_dino))
    if wants("inception"):
        report("inception", list(img_inc.shape), lambda: mef.inception_features(inception, img_inc))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"tool": "pytorch", "device": dev, "dtype": "fp32", "threads": a.threads,
                                      "torch": torch.__version__, "transformers": transformers.__version__,
                                      "pytorch_fid": pytorch_fid.__version__, "attn_implementation": a.attn,
                                      "batch": b, "runs": a.runs, "load_s": load_s, "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
