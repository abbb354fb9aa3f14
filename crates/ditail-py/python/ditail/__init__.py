"""ditail: Diffusion Cocktail (Ditail) for Python.

Training-free mixing of Stable Diffusion checkpoints and LoRAs: a content image is
DDIM-inverted with a *source* model, then a *target* model samples from those latents while
the source's ResNet features and self-attention q/k are injected, so the result keeps the
content and takes the target's style.

A session::

    import ditail
    from PIL import Image

    real = ditail.load("realisticVision.safetensors")
    anime = ditail.load("anything-v5.safetensors", loras=[("lineart.safetensors", 0.7)])
    out = ditail.transfer(real, anime, Image.open("photo.jpg"), "a cozy cottage, anime style")
    out.save("anime.png")

    # Or in two steps, keeping the inversion for several targets:
    inv = ditail.invert(real, "photo.jpg", "a cozy cottage")
    inv.save("cottage.latents.safetensors")
    images = [ditail.sample(t, inv, "a cozy cottage") for t in (anime, real)]

Images go in as PIL images, numpy ``uint8`` arrays of shape ``(H, W, 3)`` or paths (read by
ditail's own decoder, as the command line reads them), and come out as the type that went
in (PIL for a path). The keyword arguments' defaults are the method's (the paper's demo),
the same the ``ditail`` command and its web app use.

Long calls release the GIL; models and inversions are read-only once made, so threads may
share them (each call runs on the device of its model). Progress goes to a tqdm bar when
tqdm is installed (``progress=False`` turns it off) and to an optional
``callback(step, total, stage, preview)`` after every step, where ``stage`` is
``"inversion"``, ``"sampling"`` or ``"generation"`` and ``preview`` is a small PIL image of
the latents (``None`` unless ``previews=True``); returning ``False`` cancels the call
(:class:`CancelledError`). Ctrl+C (``KeyboardInterrupt``) cancels after the current step and
leaves the interpreter and the models usable.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image as _PIL

from . import _native
from ._native import Inversion, Model
from .errors import CancelledError, DeviceError, DitailError, InvalidInputError, ModelError

__version__: str = _native.__version__

__all__ = [
    "Model",
    "Inversion",
    "load",
    "devices",
    "invert",
    "load_inversion",
    "sample",
    "transfer",
    "cocktail",
    "generate",
    "evaluate",
    "DEFAULTS",
    "DitailError",
    "InvalidInputError",
    "ModelError",
    "DeviceError",
    "CancelledError",
]

#: The method's defaults (the application layer's: the command line and the web app use the
#: same numbers).
DEFAULTS: Dict[str, Any] = dict(_native.defaults())
_D = DEFAULTS

PathLike = Union[str, "os.PathLike[str]"]
#: What a content image can be.
ImageLike = Union[_PIL.Image, np.ndarray, str, "os.PathLike[str]"]
#: ``callback(step, total, stage, preview) -> None | bool``.
Callback = Callable[[int, int, str, Optional[_PIL.Image]], Optional[bool]]


# ---------------------------------------------------------------------------------------
# Models


def load(
    spec: PathLike,
    *,
    loras: Sequence[Union[PathLike, Tuple[PathLike, float]]] = (),
    vae: Optional[PathLike] = None,
    clip_skip: int = _D["clip_skip"],
    embeddings: Sequence[PathLike] = (),
    device: str = "auto",
    dtype: Optional[str] = None,
) -> Model:
    """Loads a Stable Diffusion 1.x or SDXL model.

    Args:
        spec: a single-file checkpoint (``.safetensors``; ``.ckpt`` is refused with the
            command that converts it), a diffusers folder, or a Hugging Face repo id
            (downloaded into the hub cache unless ``HF_HUB_OFFLINE`` is set).
        loras: LoRAs to merge, each a path (scale ``DEFAULTS["lora_scale"]``) or
            ``(path, scale)``.
        vae: a VAE to use instead of the model's (a file, a folder or a repo id).
        clip_skip: text-encoder layers to skip, A1111 style (1 = none, 2 = penultimate).
        embeddings: folders of textual-inversion embeddings that prompts may name
            (default: the ``embeddings`` folder of the A1111 or ComfyUI installation the
            model file is in).
        device: ``"auto"`` (CUDA, else a wgpu GPU, else the CPU), ``"cpu"``, ``"wgpu"``,
            ``"cuda"``, or one of those with a device index (``"wgpu:1"``).
        dtype: ``"f32"`` or ``"f16"``; ``None``: f32 on the CPU, f16 on GPUs.

    Raises:
        ModelError: the model, a LoRA or the VAE cannot be loaded.
        DeviceError: the device asked for is not there.
        InvalidInputError: a LoRA argument or ``clip_skip`` is refused.
    """
    backend, index = _parse_device(device)
    lora_args: List[str] = []
    for lora in loras:
        if isinstance(lora, tuple):
            path, scale = lora
            lora_args.append(f"{os.fspath(path)}:{float(scale)!r}")
        else:
            lora_args.append(f"{os.fspath(lora)}:{float(_D['lora_scale'])!r}")
    if not isinstance(clip_skip, int) or isinstance(clip_skip, bool):
        raise TypeError(f"clip_skip must be an int, not {type(clip_skip).__name__}")
    if clip_skip < 1:
        raise InvalidInputError(
            f"clip_skip={clip_skip}: 1 uses the text encoder's last layer, 2 the penultimate"
        )
    return _native.load(
        os.fspath(spec),
        lora_args,
        None if vae is None else os.fspath(vae),
        clip_skip,
        [os.fspath(e) for e in embeddings],
        backend,
        dtype,
        index,
    )


def devices() -> List[Dict[str, Any]]:
    """The backends this build has and the devices each sees (dicts with ``backend``,
    ``name``, ``kind`` and ``is_gpu``)."""
    return list(_native.devices())


def _parse_device(device: str) -> Tuple[Optional[str], Optional[int]]:
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'auto' or 'wgpu:0', not {device!r}")
    name, _, index = device.partition(":")
    if name == "auto":
        if index:
            raise InvalidInputError(f"device={device!r}: 'auto' takes no index")
        return None, None
    if index and not index.isdigit():
        raise InvalidInputError(f"device={device!r}: the index after ':' is a number")
    return name, int(index) if index else None


# ---------------------------------------------------------------------------------------
# Images


def _to_native(image: ImageLike) -> Union[str, Tuple[bytes, int, int]]:
    """A content image as the native module takes it."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, _PIL.Image):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return rgb.tobytes(), rgb.width, rgb.height
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"a numpy image must have dtype uint8 (0-255), not {image.dtype}; "
                "for floats in [0, 1] use (a * 255).round().astype(np.uint8)"
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInputError(
                f"a numpy image must have shape (height, width, 3), not {image.shape}"
            )
        data = np.ascontiguousarray(image)
        return data.tobytes(), int(data.shape[1]), int(data.shape[0])
    raise TypeError(
        "an image is a PIL.Image.Image, a numpy uint8 array (H, W, 3) or a path, "
        f"not {type(image).__name__}"
    )


def _pil(pixels: Tuple[bytes, int, int]) -> _PIL.Image:
    data, width, height = pixels
    return _PIL.frombytes("RGB", (width, height), data)


# ---------------------------------------------------------------------------------------
# Progress


class _Progress:
    """The callback the native calls get: a tqdm bar per stage and the user's callback."""

    def __init__(self, callback: Optional[Callback], progress: bool, desc: str = "") -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self.callback = callback
        self.desc = desc
        self.bar: Any = None
        self.stage: Optional[str] = None
        self.tqdm: Any = None
        if progress:
            try:
                from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def __call__(self, stage: str, step: int, total: int, preview: Any) -> Optional[bool]:
        if self.tqdm is not None:
            if self.bar is None or stage != self.stage or step == 1:
                self.close()
                label = f"{self.desc} {stage}".strip()
                self.bar = self.tqdm(total=total, desc=label, unit="step", leave=False)
                self.stage = stage
            self.bar.update(step - self.bar.n)
        if self.callback is not None:
            image = None if preview is None else _pil(preview)
            return self.callback(step, total, stage, image)
        return None

    def native(self) -> Optional[Callable[..., Optional[bool]]]:
        return self if (self.callback is not None or self.tqdm is not None) else None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _settings(**kwargs: Any) -> Dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _sites(sites: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    if sites is None:
        return None
    if isinstance(sites, str):
        return [s.strip() for s in sites.split(",") if s.strip()]
    return list(sites)


# ---------------------------------------------------------------------------------------
# The method


def invert(
    model: Model,
    image: ImageLike,
    prompt: str,
    *,
    negative_prompt: str = _D["negative_prompt"],
    alpha: float = _D["alpha"],
    beta: float = _D["beta"],
    steps: int = _D["inv_steps"],
    size: Optional[int] = None,
    callback: Optional[Callback] = None,
    previews: bool = False,
    progress: bool = True,
) -> Inversion:
    """DDIM-inverts a content image with a source model under scaled conditioning
    (``alpha`` times the prompt's, ``beta`` times the negative prompt's).

    Args:
        size: the image's shorter side is resized to this (then cropped to multiples of 8);
            default: the model's family's size (512 SD1.x, 1024 SDXL).
        callback, previews, progress: see the module's documentation.

    Returns:
        The inversion: the latents at every inversion timestep, for any number of
        :func:`sample` calls (and ``.save(path)``).
    """
    with _Progress(callback, progress, "invert") as bar:
        return _native.invert(
            model,
            _to_native(image),
            prompt,
            _settings(
                negative_prompt=negative_prompt,
                alpha=alpha,
                beta=beta,
                inv_steps=steps,
                size=size,
            ),
            bar.native(),
            previews,
        )


def load_inversion(path: PathLike, model: Model) -> Inversion:
    """Reads a latents file (``Inversion.save``'s, ``ditail transfer --save-latents``') onto
    ``model``'s device."""
    return _native.load_inversion(os.fspath(path), model)


def sample(
    model: Model,
    inversion: Inversion,
    prompt: str,
    *,
    negative_prompt: str = _D["negative_prompt"],
    omega: float = _D["omega"],
    steps: int = _D["steps"],
    conv_ratio: float = _D["conv_ratio"],
    attn_ratio: float = _D["attn_ratio"],
    mask: PathLike = _D["mask"],
    no_injection: bool = False,
    sites: Union[None, str, Sequence[str]] = None,
    callback: Optional[Callback] = None,
    previews: bool = False,
    progress: bool = True,
) -> _PIL.Image:
    """Samples an inversion with a target model while injecting the source's features.

    Args:
        omega: classifier-free guidance scale.
        steps: DDIM sampling steps (each must be one of the inversion's timesteps).
        conv_ratio, attn_ratio: the share of steps that inject ResNet features and
            self-attention q/k.
        mask: where to inject: ``"full"``, ``"left"``, ``"right"``, ``"top"``,
            ``"bottom"`` or a grayscale PNG (white = inject).
        no_injection: inject nothing (plain inversion + sampling, an ablation).
        sites: diffusers module paths to inject at (default: the method's sites for the
            target's family).

    Returns:
        The decoded image.
    """
    with _Progress(callback, progress, "sample") as bar:
        pixels = _native.sample(
            model,
            inversion,
            prompt,
            _settings(
                negative_prompt=negative_prompt,
                omega=omega,
                steps=steps,
                conv_ratio=conv_ratio,
                attn_ratio=attn_ratio,
                mask=os.fspath(mask),
                no_injection=no_injection,
                sites=_sites(sites),
            ),
            bar.native(),
            previews,
        )
    return _pil(pixels)


def _like(image: ImageLike, result: _PIL.Image) -> Any:
    return np.asarray(result).copy() if isinstance(image, np.ndarray) else result


#: The transfer's keyword arguments that concern the inversion.
_INVERSION_KEYS = frozenset(
    {"negative_prompt", "inv_prompt", "inv_negative_prompt", "alpha", "beta", "inv_steps"}
)
#: The transfer's keyword arguments that concern the sampling.
_SAMPLING_KEYS = frozenset(
    {"negative_prompt", "omega", "steps", "conv_ratio", "attn_ratio", "mask", "no_injection",
     "sites"}
)


def _invert_for(
    source: Model,
    target: Model,
    image: ImageLike,
    prompt: str,
    size: Optional[int],
    run: Dict[str, Any],
    *,
    negative_prompt: str = _D["negative_prompt"],
    inv_prompt: Optional[str] = None,
    inv_negative_prompt: Optional[str] = None,
    alpha: float = _D["alpha"],
    beta: float = _D["beta"],
    inv_steps: int = _D["inv_steps"],
) -> Inversion:
    """A transfer's inversion as ``ditail transfer`` makes it: the inversion prompts default
    to the sampling ones, the working size to the target's family's. ``run`` holds the
    progress arguments (callback, previews, progress)."""
    return invert(
        source,
        image,
        prompt if inv_prompt is None else inv_prompt,
        negative_prompt=negative_prompt if inv_negative_prompt is None else inv_negative_prompt,
        alpha=alpha,
        beta=beta,
        steps=inv_steps,
        size=target.native_size if size is None else size,
        **run,
    )


def transfer(
    source: Model,
    target: Model,
    image: ImageLike,
    prompt: str,
    *,
    negative_prompt: str = _D["negative_prompt"],
    inv_prompt: Optional[str] = None,
    inv_negative_prompt: Optional[str] = None,
    alpha: float = _D["alpha"],
    beta: float = _D["beta"],
    omega: float = _D["omega"],
    inv_steps: int = _D["inv_steps"],
    steps: int = _D["steps"],
    conv_ratio: float = _D["conv_ratio"],
    attn_ratio: float = _D["attn_ratio"],
    mask: PathLike = _D["mask"],
    no_injection: bool = False,
    sites: Union[None, str, Sequence[str]] = None,
    size: Optional[int] = None,
    callback: Optional[Callback] = None,
    previews: bool = False,
    progress: bool = True,
) -> Any:
    """One transfer, as ``ditail transfer`` makes it (the same pixels): inverts ``image``
    with ``source`` (prompt ``inv_prompt``, default ``prompt``), then samples with
    ``target``. ``size`` defaults to the target's family's size.

    Returns:
        The result, as the type ``image`` was (PIL for a path).
    """
    inversion = _invert_for(
        source,
        target,
        image,
        prompt,
        size,
        dict(callback=callback, previews=previews, progress=progress),
        negative_prompt=negative_prompt,
        inv_prompt=inv_prompt,
        inv_negative_prompt=inv_negative_prompt,
        alpha=alpha,
        beta=beta,
        inv_steps=inv_steps,
    )
    result = sample(
        target,
        inversion,
        prompt,
        negative_prompt=negative_prompt,
        omega=omega,
        steps=steps,
        conv_ratio=conv_ratio,
        attn_ratio=attn_ratio,
        mask=mask,
        no_injection=no_injection,
        sites=sites,
        callback=callback,
        previews=previews,
        progress=progress,
    )
    return _like(image, result)


def cocktail(
    models: Sequence[Model],
    image: ImageLike,
    prompt: str,
    *,
    targets: Optional[Sequence[Model]] = None,
    size: Optional[int] = None,
    callback: Optional[Callback] = None,
    previews: bool = False,
    progress: bool = True,
    **settings: Any,
) -> List[List[Any]]:
    """The cocktail grid (``ditail cocktail``): every model as a source and every model (or
    every one of ``targets``) as a target; each source inverts the image once.

    Args:
        settings: :func:`transfer`'s other keyword arguments.

    Returns:
        ``grid[s][t]``: source ``s`` transferred into target ``t``, as the type ``image``
        was.
    """
    targets = list(models) if targets is None else list(targets)
    if not models or not targets:
        raise InvalidInputError("a cocktail needs at least one source and one target")
    families = {m.family for m in list(models) + targets}
    if len(families) > 1:
        raise InvalidInputError(
            "a cocktail mixes models of one family; got " + " and ".join(sorted(families))
        )
    unknown = set(settings) - _INVERSION_KEYS - _SAMPLING_KEYS
    if unknown:
        raise TypeError(f"cocktail() got unexpected keyword arguments {sorted(unknown)}")
    inv_settings = {k: v for k, v in settings.items() if k in _INVERSION_KEYS}
    sample_settings = {k: v for k, v in settings.items() if k in _SAMPLING_KEYS}
    run: Dict[str, Any] = dict(callback=callback, previews=previews, progress=progress)
    grid: List[List[Any]] = []
    for source in models:
        inversion = _invert_for(source, targets[0], image, prompt, size, run, **inv_settings)
        row = []
        for target in targets:
            result = sample(target, inversion, prompt, **run, **sample_settings)
            row.append(_like(image, result))
        grid.append(row)
    return grid


def generate(
    model: Model,
    prompt: str,
    *,
    negative_prompt: str = _D["negative_prompt"],
    omega: float = _D["generation_omega"],
    steps: int = _D["steps"],
    size: Optional[int] = None,
    seed: int = 0,
    callback: Optional[Callback] = None,
    previews: bool = False,
    progress: bool = True,
) -> _PIL.Image:
    """Text to image (``ditail generate``): a square image of ``size`` pixels (default: the
    family's size), seeded (the same seed gives the same image)."""
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed={seed!r}: a seed is an int from 0")
    with _Progress(callback, progress, "generate") as bar:
        pixels = _native.generate(
            model,
            prompt,
            seed,
            _settings(
                negative_prompt=negative_prompt,
                omega=omega,
                steps=steps,
                size=size,
            ),
            bar.native(),
            previews,
        )
    return _pil(pixels)


# ---------------------------------------------------------------------------------------
# Metrics


def evaluate(
    results: PathLike,
    *,
    content: Optional[PathLike] = None,
    prompts: Union[None, bool, PathLike, Dict[str, str]] = None,
    reference: Optional[PathLike] = None,
    clip: str = _D["eval_clip"],
    dino: str = _D["eval_dino"],
    inception: Optional[PathLike] = None,
    fid_native: bool = False,
    batch: int = _D["eval_batch"],
    dino_antialias: bool = False,
    device: str = "auto",
    dtype: Optional[str] = None,
    callback: Optional[Callback] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """The paper's metrics over a folder of results (``ditail eval``): the CLIP score of
    each result against its prompt, the DINO structure distance to its content image, and
    the FID of all results against a reference folder.

    Args:
        results: the folder of results (ditail's PNGs, or any images).
        content: the content images, paired with the results by file name (with
            ``prompts=True``, by the content hash ditail records).
        prompts: a file of ``name<TAB>prompt`` lines or a JSON object, a dict
            ``{result name: prompt}``, or ``True`` to take each result's prompt (and its
            content image) from the metadata ditail writes into its PNGs.
        reference: a folder of reference images: enables FID.
        clip, dino: the metric networks (a transformers folder, a .safetensors file or a
            repo id).
        inception: pytorch-fid's InceptionV3 weights as .safetensors (default: in ditail's
            cache folder).
        fid_native: FID on the images as they are instead of squashed to 224x224 as the
            Ditail reference does.

    Returns:
        The report ``ditail eval --json`` writes: ``images`` (per result ``name``,
        ``clip_score``, ``structure_distance``), the means, ``fid`` and ``dino_resize``.
        A statistic on too few images is warned about (``warnings.warn``).
    """
    backend, index = _parse_device(device)
    if isinstance(prompts, (str, os.PathLike)):
        prompts = os.fspath(prompts)

    def opt(path: Optional[PathLike]) -> Optional[str]:
        return None if path is None else os.fspath(path)

    with _Progress(callback, progress, "evaluate") as bar:
        report, notes = _native.evaluate(
            os.fspath(results),
            opt(content),
            prompts,
            opt(reference),
            opt(inception),
            fid_native,
            clip,
            dino,
            batch,
            dino_antialias,
            backend,
            dtype,
            index,
            bar.native(),
        )
    for note in notes:
        warnings.warn(note, stacklevel=2)
    parsed: Dict[str, Any] = json.loads(report)
    return parsed
