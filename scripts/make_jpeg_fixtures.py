#!/usr/bin/env python3
"""Generate tests/fixtures/jpeg/: JPEGs of every kind users feed ditail, and the pixels Pillow
decodes from each, so the Rust test can check that ditail decodes JPEGs exactly as Pillow
(libjpeg-turbo) does, without Python.

For every case NAME it writes

  NAME.jpg   a procedural photo-like picture (smooth gradients, hard edges in saturated
             colours, fine texture, noise) saved by Pillow with the case's settings;
  NAME.png   what ``ImageOps.exif_transpose(Image.open(NAME.jpg)).convert("RGB")`` gives:
             the reference's and diffusers' ``load_image`` way of reading a content image
             (``exif_transpose`` only changes the EXIF-rotated case);

and meta.json: per case the settings, the mode Pillow opens it in, its chroma subsampling,
and the versions of Pillow and of the libjpeg-turbo inside it.

Sizes are odd and not multiples of 16, so the partial blocks and the edge rows and columns
of chroma upsampling are exercised.

Usage:  python scripts/make_jpeg_fixtures.py      (Pillow and numpy only; under a second)
A rerun gives byte-identical files with the same Pillow.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, JpegImagePlugin, features

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "jpeg"

# name: (width, height, mode saved, Pillow save arguments, EXIF orientation or None)
CASES = {
    "q90-420": (77, 53, "RGB", dict(quality=90), None),  # Pillow's default subsampling (4:2:0)
    "q90-444": (77, 53, "RGB", dict(quality=90, subsampling=0), None),
    "q75-422": (61, 45, "RGB", dict(quality=75, subsampling=1), None),
    "q95-420-progressive": (83, 59, "RGB", dict(quality=95, progressive=True), None),
    "q85-420-optimized-restarts": (70, 49, "RGB", dict(quality=85, optimize=True, restart_marker_blocks=3), None),
    "q50-420": (64, 64, "RGB", dict(quality=50), None),
    "gray": (67, 41, "L", dict(quality=90), None),
    "cmyk": (58, 43, "CMYK", dict(quality=90), None),
    # stored landscape, shown portrait: EXIF orientation 6 (rotate 90 degrees clockwise)
    "exif-rotated": (75, 51, "RGB", dict(quality=90), 6),
}


def procedural(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([
        127 + 100 * np.sin(x / (5 + 3 * rng.random()) + rng.random() * 6),
        127 + 100 * np.cos(y / (7 + 3 * rng.random()) + x / 13),
        255 * (x + y) / (w + h),
    ], axis=-1)
    # fine texture (aliases against the 8x8 blocks) and noise
    base += 30 * ((x.astype(int) // 2 + y.astype(int) // 3) % 2)[..., None]
    base += rng.normal(0.0, 8.0, base.shape)
    img = Image.fromarray(np.clip(np.rint(base), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    # saturated shapes with hard edges: where chroma upsampling differs the most
    for _ in range(5):
        x0, y0 = (int(v) for v in rng.integers(0, [w, h]))
        x1, y1 = x0 + int(rng.integers(5, w // 2)), y0 + int(rng.integers(5, h // 2))
        colour = tuple(int(c) for c in rng.choice([0, 255], 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], outline=colour, width=2)
    draw.line([0, h - 1, w - 1, 0], fill=(255, 0, 255), width=1)
    return img


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    meta = {
        "what": "NAME.jpg saved by Pillow; NAME.png = ImageOps.exif_transpose(Image.open(NAME.jpg)).convert('RGB')",
        "versions": {
            "Pillow": Image.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "cases": {},
    }
    for i, (name, (w, h, mode, save, orientation)) in enumerate(CASES.items()):
        img = procedural(w, h, seed=300 + i).convert(mode)
        path = OUT / f"{name}.jpg"
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            save = dict(save, exif=exif.tobytes())
        img.save(path, format="JPEG", **save)
        opened = Image.open(path)
        assert opened.format == "JPEG"
        decoded = ImageOps.exif_transpose(opened).convert("RGB")
        decoded.save(OUT / f"{name}.png", format="PNG")
        meta["cases"][name] = {
            "size_stored": [w, h],
            "size_decoded": list(decoded.size),
            "mode_saved": mode,
            "mode_opened": opened.mode,
            "save_arguments": {k: v for k, v in save.items() if k != "exif"},
            "exif_orientation": orientation,
            # Pillow's code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0, -1 = not YCbCr
            "subsampling": JpegImagePlugin.get_sampling(opened),
            "progressive": bool(opened.info.get("progressive", 0)),
            "adobe_marker": "adobe" in opened.info,
            "bytes": path.stat().st_size,
        }
        print(f"{name}: {opened.mode} {opened.size} -> {decoded.size}, {path.stat().st_size} bytes")
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
