#!/usr/bin/env python3
"""Write the full-size random SD 1.5 model of `make_fixtures.py --full-size` as an A1111 /
Civitai-style single-file checkpoint (LDM key layout, float16 like most published files),
for the loading-memory benchmark (`examples/bench_load.rs`).  Not committed (~2 GB).

Uses the diffusers -> LDM mapping of `make_loading_fixtures.py` with the real SD 1.5
configs.  The file is checked by loading it back with diffusers' `from_single_file`.

Usage:  python scripts/make_full_single_file.py [fixtures-full]   (writes
        fixtures-full/sd15-random.fp16.safetensors; about 10 GB of RAM)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_loading_fixtures as mlf  # noqa: E402

import torch  # noqa: E402


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures-full").resolve()
    model = root / "model"
    mlf.MODEL_DIR = model
    mlf.SPEC = {c: json.loads((model / c / "config.json").read_text()) for c in ("unet", "vae")}
    folder = mlf.load_folder()
    ldm = mlf.to_ldm(folder)
    ck = mlf.build_checkpoint(ldm, torch.float16)
    out = root / "sd15-random.fp16.safetensors"
    mlf.save(out, ck)
    mlf.log(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB, {len(ck)} tensors)")
    del ck, ldm
    checked = mlf.verify_components(out, folder, torch.float16)
    mlf.log(f"diffusers from_single_file agrees: {checked}")


if __name__ == "__main__":
    main()
