#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/<target>/seed-*.

Standard library only; the image seeds also need ImageMagick's `convert` (skipped, with a
note, where it is missing). The seeds are made from the test fixtures: safetensors files
keep their headers (keys, dtypes, metadata) with each large tensor's first dimension set to
0, so that a seed is a few kilobytes and still says everything the planners read. Run from
anywhere, with target names to make only theirs; then `scripts/fuzz.sh` fuzzes from these
and FUZZ_MERGE=1 minimises.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1}


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    return header, b[8 + n:]


def write_st(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def shrunk(path, keep_bytes=64, dedupe=False, keep=()):
    """A fixture's header with small tensors kept whole and larger ones emptied."""
    header, data = read_st(path)
    meta = header.pop("__metadata__", None)
    out, seen = [], set()
    for name, info in header.items():
        pattern = re.sub(r"\d+", "#", name)
        if dedupe and pattern in seen and name not in keep:
            continue
        seen.add(pattern)
        s, e = info["data_offsets"]
        shape = info["shape"]
        if e - s <= keep_bytes:
            out.append((name, info["dtype"], shape, data[s:e]))
        else:
            out.append((name, info["dtype"], [0] + shape[1:], b""))
    return write_st(out, meta)


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f16(*v):
    return struct.pack("<%de" % len(v), *v)


def bf16(*v):
    return b"".join(struct.pack("<f", x)[2:] for x in v)


def f64(*v):
    return struct.pack("<%dd" % len(v), *v)


def single_file():
    loading = os.path.join(FIX, "loading")
    for name in ["flux-like", "inpaint-like", "ip2p-like", "sd2-like", "sd3-like", "sdxl-like",
                 "vae-tiny-a", "tiny-a-noprefix.bf16"]:
        put("single_file", name, shrunk(os.path.join(loading, name + ".safetensors"), dedupe=True,
                                        keep=("model.diffusion_model.input_blocks.0.0.weight",)))
    put("single_file", "tiny-a", shrunk(os.path.join(loading, "tiny-a.safetensors"), dedupe=True,
                                        keep=("model.diffusion_model.input_blocks.0.0.weight",)))
    for name in ["header-length-overrun", "header-overrun", "not-safetensors", "truncated"]:
        put("single_file", name, open(os.path.join(loading, name + ".safetensors"), "rb").read())
    # Real data in every float type, on the paths that convert it: a reshaped VAE attention
    # weight, the row-chunked token table, a text key without `text_model.`.
    put("single_file", "data", write_st([
        ("model.diffusion_model.input_blocks.0.0.weight", "F32", [1, 4, 1, 1], f32(1, 2, 3, 4)),
        ("model.diffusion_model.input_blocks.1.1.proj_in.weight", "F16", [2, 2, 1, 1], f16(1, -1, .5, 0)),
        ("model.diffusion_model.time_embed.0.bias", "F64", [2], f64(1e-3, -7)),
        ("first_stage_model.decoder.mid.attn_1.q.weight", "BF16", [2, 2, 1, 1], bf16(1, 2, 3, 4)),
        ("first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", "F16", [2, 1, 1, 1], f16(3, 4)),
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "F32", [3, 1], f32(1, 2, 3)),
        ("cond_stage_model.transformer.encoder.layers.0.mlp.fc1.bias", "F16", [1], f16(2)),
        ("model_ema.decay", "F32", [], f32(0.999)),
        ("alphas_cumprod", "I64", [1], struct.pack("<q", 5)),
    ], {"format": "pt"}))


def lora():
    loading = os.path.join(FIX, "loading")
    for name in ["lora-kohya", "lora-peft"]:
        put("lora", name, open(os.path.join(loading, name + ".safetensors"), "rb").read())
    for name in ["loha", "lora-bad-key", "lora-sdxl"]:
        put("lora", name, shrunk(os.path.join(loading, name + ".safetensors"), dedupe=True))


def latents():
    meta = {"source": "tests/fixtures/models/tiny-a",
            "settings": {"prompt": "a photo of a cat", "negative_prompt": "worst quality",
                         "alpha": 2.0, "beta": 0.5, "steps": 2, "size": 16},
            "image_sha256": "00" * 32}
    z = f32(*[i / 7 for i in range(16)])
    tensors = [("z0", "F32", [1, 4, 2, 2], z), ("inverted.1", "F32", [1, 4, 2, 2], z),
               ("inverted.501", "F32", [1, 4, 2, 2], z)]
    put("latents", "two-steps", write_st(tensors, {"ditail_inversion": json.dumps(meta)}))
    put("latents", "final-f16", write_st(
        [("z0", "F16", [1, 4, 1, 1], f16(1, 2, 3, 4)), ("inverted.981", "BF16", [1, 4, 1, 1], bf16(1, 2, 3, 4)),
         ("final", "F64", [1, 4, 1, 1], f64(1, 2, 3, 4))],
        {"ditail_inversion": json.dumps(dict(meta, settings=dict(meta["settings"], steps=1)))}))
    put("latents", "int", write_st(
        [("z0", "I64", [1, 1, 1, 1], struct.pack("<q", 3)), ("inverted.1", "U8", [1, 1, 1, 1], b"\x07")],
        {"ditail_inversion": json.dumps(dict(meta, settings=dict(meta["settings"], steps=1)))}))


def diffusers_config():
    for model in ["tiny-a", "tiny-b"]:
        d = os.path.join(FIX, "models", model)
        for sub, name in [("unet", "config.json"), ("vae", "config.json"),
                          ("text_encoder", "config.json"), ("scheduler", "scheduler_config.json"),
                          ("", "model_index.json")]:
            put("diffusers_config", f"{model}-{sub or 'model'}-{name}", open(os.path.join(d, sub, name), "rb").read())
    put("diffusers_config", "index.json", json.dumps(
        {"metadata": {"total_size": 10}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                        "b.weight": "model-00002-of-00002.safetensors"}}))
    put("diffusers_config", "scheduler-trailing.json", json.dumps(
        {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing", "num_train_timesteps": 20,
         "set_alpha_to_one": True, "steps_offset": 0}))
    put("diffusers_config", "scheduler-linspace.json", json.dumps(
        {"beta_schedule": "linear", "timestep_spacing": "linspace", "num_train_timesteps": 7,
         "beta_start": 0.1, "beta_end": 0.2}))
    put("diffusers_config", "unet-sd15.json", json.dumps(
        {"block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8,
         "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
         "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "layers_per_block": 2,
         "num_attention_heads": None, "use_linear_projection": False, "cross_attention_dim": 768}))


def tokenizer_files():
    tok = os.path.join(FIX, "models", "tiny-a", "tokenizer")
    put("tokenizer_files", "tiny-a-vocab.json", open(os.path.join(tok, "vocab.json"), "rb").read())
    put("tokenizer_files", "tiny-a-merges.txt", open(os.path.join(tok, "merges.txt"), "rb").read())
    put("tokenizer_files", "small-vocab.json", json.dumps(
        {"<|startoftext|>": 5, "<|endoftext|>": 6, "a</w>": 0, "c": 1, "at</w>": 2, "c at</w>": 3, "cat</w>": 4}))
    put("tokenizer_files", "small-merges.txt", "#version: 0.2\nc at</w>\na t</w>\nph o\n")


def manifest():
    put("manifest", "basic.csv", "id,image,prompt,target,lora,mask\n"
        "cat-toon,photos/cat.jpg,a photo of a cat,toonyou.safetensors,,\n"
        "cat-ghibli,photos/cat.jpg,a cat,sd15.safetensors,loras/ghibli.safetensors:0.8,left\n")
    put("manifest", "quirks.csv", "\ufeffID , Prompt,no-injection,seed,output\r\n"
        "# a comment\r\n"
        "a,\"two\r\nlines, \"\"quoted\"\"\",yes,42,a.png\r\n"
        ",,,,\r\n"
        "b,émoji 🐱 עברית,0,-1,\r\n")
    put("manifest", "basic.jsonl", '{"id": "one", "prompt": "a cat", "alpha": 2.5, "seed": 7}\n'
        '# comment\n\n'
        '{"prompt": "a dog", "lora": ["a.safetensors:0.5", "b.safetensors"], "no_injection": true, "mask": null}\n'
        '{"id": 5, "output": "five.png", "size": 256, "steps": 20, "clip_skip": 2}\n')
    put("manifest", "bad.jsonl", '{"id": "../escape"}\n[1, 2]\n{"unknown": 1}\n')
    put("manifest", "shard", "2/5")


def tokenizer():
    for name, text in [("plain", "a photo of a cat, best quality"),
                       ("unicode", "un chat 🐱 sur le toit, 猫, قطة, Ｆｕｌｌｗｉｄｔｈ, e\u0301, ﬁ"),
                       ("control", "a\x00b\tc\r\n  d\u200b\u202ee"),
                       ("special", "<|startoftext|>x<|endoftext|> it's they'll 123 ..."),
                       ("long", " ".join(["masterpiece"] * 100))]:
        put("tokenizer", name, text)


def png_metadata():
    for name, text in [("plain", "a photo of a cat\x1fworst quality\x1fa cat\x1fsd15.safetensors\x1floras/x.safetensors"),
                       ("latin1", "café crème, naïve\x1f\xa0\xff\x1f\x1fmodel\x1f"),
                       ("unicode", "猫 🐱 \u202e\x00 nul\x1f\r\n\x1f\x1f/path/to/model@rev\x1fC:\\loras\\x.safetensors"),
                       ("quotes", 'a "quoted", prompt\nNegative prompt: x\x1fSteps: 1, Seed: 2\x1f')]:
        put("png_metadata", name, text)


def png(width, height):
    """An 8-bit RGB PNG, gray, made without an image library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def png_header(width, height):
    """A PNG that declares its size and holds no pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def serve_request():
    """Raw HTTP/1.1 requests to the web app; `{tiny-a}` / `{tiny-b}` stand for those
    models' catalog ids (the fuzz body substitutes them)."""
    host = "Host: 127.0.0.1:7860\r\n"
    auth = "Authorization: Bearer fuzz-token\r\n"

    def req(method, path, headers="", body=b""):
        if isinstance(body, str):
            body = body.encode()
        head = f"{method} {path} HTTP/1.1\r\n{host}{headers}Content-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    for name, path in [("index", "/"), ("app-js", "/assets/app.js"), ("style", "/assets/style.css"),
                       ("asset-missing", "/assets/x.js"), ("health", "/health"),
                       ("models", "/api/models"), ("defaults", "/api/defaults"),
                       ("jobs", "/api/jobs"), ("job-missing", "/api/jobs/0"),
                       ("events-missing", "/api/jobs/0/events"), ("results", "/api/results"),
                       ("result-missing", "/api/results/a.png"),
                       ("result-escape", "/api/results/..%2Fsecret.png"),
                       ("unknown", "/api/nothing?x=1")]:
        put("serve_request", "get-" + name, req("GET", path, auth))
    put("serve_request", "rescan", req("POST", "/api/models/rescan", auth))
    put("serve_request", "cancel-missing", req("POST", "/api/jobs/0/cancel", auth))
    put("serve_request", "token-link", req("GET", "/?token=fuzz-token"))
    put("serve_request", "token-cookie", req("GET", "/api/models", "Cookie: a=b; ditail_token=fuzz-token\r\n"))
    put("serve_request", "bad-host", "GET /api/models HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    put("serve_request", "cross-origin",
        req("POST", "/api/jobs", auth + "Origin: http://evil.example\r\nContent-Type: application/json\r\n", "{}"))
    job = {"source": {"model": "{tiny-a}"}, "targets": [{"model": "{tiny-b}", "clip_skip": 1}],
           "prompt": "a photo of a cat", "content_prompt": "a cat", "size": 64, "inv_steps": 2,
           "steps": 2}
    put("serve_request", "submit-json",
        req("POST", "/api/jobs", auth + "Content-Type: application/json\r\n", json.dumps(job)))
    cocktail = dict(job, mode="cocktail", targets=[{"model": "{tiny-a}"}, {"model": "{tiny-b}"}])
    put("serve_request", "submit-cocktail",
        req("POST", "/api/jobs", auth + "Content-Type: application/json\r\n", json.dumps(cocktail)))
    content = open(os.path.join(FIX, "pipeline", "content.png"), "rb").read()
    boundary = "fuzzboundary"

    def form(parts):
        body = b""
        for name, ctype, data in parts:
            filename = f'; filename="{name}.png"' if name != "settings" else ""
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n"
                     f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
        return body + f"--{boundary}--\r\n".encode()

    ctype = f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    with_image = dict(job, content_prompt=None)
    put("serve_request", "submit-image", req("POST", "/api/jobs", auth + ctype, form([
        ("settings", "application/json", json.dumps(with_image).encode()),
        ("image", "image/png", content)])))
    painted = dict(with_image, mask="painted")
    put("serve_request", "submit-mask", req("POST", "/api/jobs", auth + ctype, form([
        ("settings", "application/json", json.dumps(painted).encode()),
        ("image", "image/png", content), ("mask", "image/png", content)])))
    put("serve_request", "submit-bomb", req("POST", "/api/jobs", auth + ctype, form([
        ("settings", "application/json", json.dumps(with_image).encode()),
        ("image", "image/png", png_header(30000, 30000))])))


def image():
    put("image", "content.png", open(os.path.join(FIX, "pipeline", "content.png"), "rb").read())
    # Small files that decode to images too narrow to work at (refused before resizing).
    put("image", "narrow-1x100000.png", png(1, 100000))
    put("image", "narrow-100000x1.png", png(100000, 1))
    convert = shutil.which("convert", path="/usr/bin:/bin") or shutil.which("convert")
    probe = subprocess.run([convert, "-version"], capture_output=True, text=True) if convert else None
    if not probe or "ImageMagick" not in probe.stdout:
        print("note: ImageMagick's convert is missing: image seeds other than content.png skipped",
              file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.png")
        subprocess.run([convert, "-size", "12x9", "gradient:red-blue", "-define",
                        "png:exclude-chunk=date,time", src], check=True)
        cases = [
            ("rgb.png", []), ("gray-alpha.png", ["-colorspace", "Gray", "-alpha", "on", "-define", "png:color-type=4"]),
            ("rgb16.png", ["-depth", "16"]), ("palette.png", ["-colors", "4", "-define", "png:color-type=3"]),
            ("interlaced.png", ["-interlace", "PNG"]), ("1x1.png", ["-resize", "1x1!"]),
            ("tall.png", ["-resize", "2x40!"]),
            ("mask.png", ["-colorspace", "Gray", "-threshold", "50%"]),
            ("baseline.jpg", ["-quality", "70"]), ("progressive.jpg", ["-interlace", "JPEG"]),
            ("gray.jpg", ["-colorspace", "Gray"]), ("cmyk.jpg", ["-colorspace", "CMYK"]),
            ("rotated.jpg", ["-orient", "RightTop"]), ("mirrored.png", ["-orient", "TopRight"]),
            ("lossless.webp", ["-define", "webp:lossless=true"]), ("lossy.webp", ["-quality", "50"]),
            ("alpha.webp", ["-alpha", "on", "-channel", "A", "-evaluate", "set", "50%", "+channel"]),
        ]
        for name, args in cases:
            out = os.path.join(tmp, name)
            # No creation dates, so that the seeds are the same on every run.
            r = subprocess.run([convert, src, *args, "+set", "date:create", "+set", "date:modify",
                                "-define", "png:exclude-chunk=date,time", out], capture_output=True)
            if r.returncode == 0 and os.path.exists(out):
                put("image", name, open(out, "rb").read())
            else:
                print(f"note: {name}: {r.stderr.decode().strip()}", file=sys.stderr)


MAKERS = [single_file, lora, latents, diffusers_config, tokenizer_files, manifest, tokenizer,
          png_metadata, image, serve_request]

if __name__ == "__main__":
    # `make_fuzz_seeds.py [TARGET ...]`: only those targets' seeds (default: all).
    wanted = sys.argv[1:]
    unknown = set(wanted) - {m.__name__ for m in MAKERS}
    if unknown:
        sys.exit(f"unknown targets: {sorted(unknown)}")
    for make in MAKERS:
        if not wanted or make.__name__ in wanted:
            make()
