#!/usr/bin/env python3
"""Encode prompts with Hugging Face's CLIP tokenizers; helper for make_fixtures.py.

Reads a JSON list of prompts on stdin and writes one JSON object on stdout:

    {"transformers": "...", "tokenizers": "...", "ftfy": false,
     "slow": [[77 ids], ...] or null, "fast": [[77 ids], ...]}

* ``slow``: the pure-Python ``transformers.CLIPTokenizer`` (transformers < 5 only; 5.x
  removed it), built from models/clip/vocab.json + merges.txt.
* ``fast``: ``CLIPTokenizerFast`` converted from the same two files (transformers < 5),
  or, under transformers >= 5, ``CLIPTokenizer``, which is then the `tokenizers`-backed one.

Every call is ``tok(prompt, padding="max_length", max_length=77, truncation=True)``, the
way diffusers' Stable Diffusion pipeline calls it.

ftfy is kept out on purpose (``sys.modules["ftfy"] = None`` before transformers is
imported): without it the slow tokenizer falls back to its BasicTokenizer cleanup, which
is the behaviour the Rust port reproduces.  Needs no torch.

Usage:  python scripts/tokenizer_ids.py [--vocab-dir models/clip] < prompts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.modules["ftfy"] = None  # must precede any transformers import

REPO = Path(__file__).resolve().parent.parent
MAX_LEN = 77


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-dir", type=Path, default=REPO / "models" / "clip")
    args = ap.parse_args()
    prompts = json.load(sys.stdin)
    assert isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)

    import tokenizers
    import transformers

    vocab = str(args.vocab_dir / "vocab.json")
    merges = str(args.vocab_dir / "merges.txt")
    major = int(transformers.__version__.split(".")[0])

    def encode(tok) -> list[list[int]]:
        out = []
        for p in prompts:
            ids = tok(p, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
            assert len(ids) == MAX_LEN, (p, len(ids))
            out.append([int(i) for i in ids])
        return out

    try:
        import ftfy  # noqa: F401

        ftfy_importable = True
    except ImportError:
        ftfy_importable = False

    slow = None
    if major < 5:
        from transformers import CLIPTokenizer, CLIPTokenizerFast

        slow_tok = CLIPTokenizer(vocab, merges)
        # The slow tokenizer uses ftfy when it can import it; make sure it did not.
        assert slow_tok.fix_text is None, "ftfy got used by the slow tokenizer"
        assert len(slow_tok) == 49408
        slow = encode(slow_tok)
        fast_tok = CLIPTokenizerFast(vocab_file=vocab, merges_file=merges, from_slow=True)
    else:
        from transformers import CLIPTokenizer

        fast_tok = CLIPTokenizer(vocab=vocab, merges=merges)
    assert len(fast_tok) == 49408
    fast = encode(fast_tok)

    json.dump(
        {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "ftfy": ftfy_importable,
            "ftfy_installed": _installed("ftfy"),
            "slow_class": "transformers.CLIPTokenizer" if slow is not None else None,
            "fast_class": type(fast_tok).__module__ + "." + type(fast_tok).__name__,
            "slow": slow,
            "fast": fast,
        },
        sys.stdout,
    )


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
