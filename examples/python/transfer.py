#!/usr/bin/env python3
"""Style transfer through ditail's C API from Python, with ctypes only (no packages).

    cargo build --release -p ditail-capi
    python3 examples/python/transfer.py tests/fixtures/models/tiny-a tests/fixtures/models/tiny-b \
        tests/fixtures/pipeline/content.png out.png --size 64 --inv-steps 4 --steps 4 --backend cpu

The library is found from --lib, else $DITAIL_LIB, else target/release or target/debug.
The structs below mirror crates/ditail-capi/include/ditail.h (API version 1).
"""

import argparse
import ctypes as C
import os
import sys
from pathlib import Path

API_VERSION = 1
OK, CANCELLED = 0, 10
BACKENDS = {"auto": 0, "cpu": 1, "wgpu": 2, "cuda": 3}
DTYPES = {"auto": 0, "f32": 1, "f16": 2}
PHASES = {0: "inversion", 1: "sampling", 2: "generation"}


class ContextSettings(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("backend", C.c_int), ("dtype", C.c_int)]


class Lora(C.Structure):
    _fields_ = [("path", C.c_char_p), ("scale", C.c_float)]


class ModelSpec(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("model", C.c_char_p),
        ("loras", C.POINTER(Lora)),
        ("n_loras", C.c_size_t),
        ("vae", C.c_char_p),
        ("clip_skip", C.c_int32),
    ]


class InversionSettings(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("prompt", C.c_char_p),
        ("negative_prompt", C.c_char_p),
        ("alpha", C.c_double),
        ("beta", C.c_double),
        ("steps", C.c_uint32),
        ("size", C.c_uint32),
    ]


class SamplingSettings(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("prompt", C.c_char_p),
        ("negative_prompt", C.c_char_p),
        ("omega", C.c_double),
        ("steps", C.c_uint32),
        ("conv_ratio", C.c_double),
        ("attn_ratio", C.c_double),
        ("mask", C.c_char_p),
        ("no_injection", C.c_bool),
    ]


PROGRESS = C.CFUNCTYPE(C.c_bool, C.c_int, C.c_int, C.c_int, C.c_void_p)


class DitailError(Exception):
    def __init__(self, status, message):
        super().__init__(f"status {status}: {message}")
        self.status = status


def find_library(explicit):
    if explicit:
        return explicit
    if os.environ.get("DITAIL_LIB"):
        return os.environ["DITAIL_LIB"]
    name = {"win32": "ditail_capi.dll", "darwin": "libditail_capi.dylib"}.get(
        sys.platform, "libditail_capi.so"
    )
    root = Path(__file__).resolve().parents[2]
    for profile in ("release", "debug"):
        if (root / "target" / profile / name).exists():
            return str(root / "target" / profile / name)
    sys.exit(f"{name} not found: build it with `cargo build --release -p ditail-capi`, or give --lib")


class Ditail:
    """The library, with each function's signature declared."""

    def __init__(self, path):
        lib = self.lib = C.CDLL(path)
        handle = C.c_void_p
        out = C.POINTER(C.c_void_p)
        sigs = {
            "ditail_api_version": (C.c_uint32, []),
            "ditail_last_error": (C.c_char_p, []),
            "ditail_context_default_settings": (ContextSettings, []),
            "ditail_context_new": (C.c_int, [C.POINTER(ContextSettings), out]),
            "ditail_context_free": (C.c_int, [handle]),
            "ditail_model_default_spec": (ModelSpec, []),
            "ditail_model_load": (C.c_int, [handle, C.POINTER(ModelSpec), out]),
            "ditail_model_free": (C.c_int, [handle]),
            "ditail_inversion_default_settings": (InversionSettings, []),
            "ditail_invert_file": (
                C.c_int,
                [handle, C.c_char_p, C.POINTER(InversionSettings), PROGRESS, C.c_void_p, out],
            ),
            "ditail_inversion_free": (C.c_int, [handle]),
            "ditail_sampling_default_settings": (SamplingSettings, []),
            "ditail_sample": (
                C.c_int,
                [handle, handle, C.POINTER(SamplingSettings), PROGRESS, C.c_void_p, out],
            ),
            "ditail_latents_free": (C.c_int, [handle]),
            "ditail_decode": (
                C.c_int,
                [handle, handle, C.POINTER(C.POINTER(C.c_uint8)), C.POINTER(C.c_uint32),
                 C.POINTER(C.c_uint32)],
            ),
            "ditail_rgb_free": (C.c_int, [C.POINTER(C.c_uint8)]),
            "ditail_write_png": (
                C.c_int, [C.c_char_p, C.POINTER(C.c_uint8), C.c_uint32, C.c_uint32]
            ),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        if lib.ditail_api_version() != API_VERSION:
            raise RuntimeError(f"{path} implements API {lib.ditail_api_version()}, not {API_VERSION}")

    def __getattr__(self, name):
        fn = getattr(self.lib, "ditail_" + name)

        def call(*args):
            status = fn(*args)
            if status != OK:
                raise DitailError(status, self.lib.ditail_last_error().decode())

        return call


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("image")
    p.add_argument("output")
    p.add_argument("--prompt", default="a photo of a cat")
    p.add_argument("--size", type=int, default=0)  # 0: the model family's own size
    p.add_argument("--inv-steps", type=int, default=50)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--dtype", choices=DTYPES, default="auto")
    p.add_argument("--lib")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    d = Ditail(find_library(args.lib))

    @PROGRESS
    def on_step(phase, step, total, _user_data):
        if not args.quiet:
            print(f"{PHASES.get(phase, phase)} {step}/{total}", file=sys.stderr)
        return True  # False cancels the run

    ctx, source, target, inv, latents = (C.c_void_p() for _ in range(5))
    rgb, width, height = C.POINTER(C.c_uint8)(), C.c_uint32(), C.c_uint32()
    try:
        cs = d.lib.ditail_context_default_settings()
        cs.backend, cs.dtype = BACKENDS[args.backend], DTYPES[args.dtype]
        d.context_new(C.byref(cs), C.byref(ctx))

        spec = d.lib.ditail_model_default_spec()
        spec.model = args.source.encode()
        d.model_load(ctx, C.byref(spec), C.byref(source))
        spec.model = args.target.encode()
        d.model_load(ctx, C.byref(spec), C.byref(target))

        prompt = args.prompt.encode()
        inv_settings = d.lib.ditail_inversion_default_settings()
        inv_settings.prompt, inv_settings.size, inv_settings.steps = prompt, args.size, args.inv_steps
        d.invert_file(source, args.image.encode(), C.byref(inv_settings), on_step, None, C.byref(inv))

        sampling = d.lib.ditail_sampling_default_settings()
        sampling.prompt, sampling.steps = prompt, args.steps
        d.sample(target, inv, C.byref(sampling), on_step, None, C.byref(latents))

        d.decode(target, latents, C.byref(rgb), C.byref(width), C.byref(height))
        d.write_png(args.output.encode(), rgb, width, height)
        if not args.quiet:
            print(f"wrote {args.output} ({width.value}x{height.value})")
    except DitailError as e:
        sys.exit(f"ditail: {e}")
    finally:
        # Every free accepts NULL.
        d.lib.ditail_rgb_free(rgb)
        for free, h in [("latents", latents), ("inversion", inv), ("model", target),
                        ("model", source), ("context", ctx)]:
            getattr(d.lib, f"ditail_{free}_free")(h)


if __name__ == "__main__":
    main()
