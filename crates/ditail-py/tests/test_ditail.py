"""The `ditail` Python package against the command line and the C API, on the tiny
random-weight models the Rust tests use (tests/fixtures/models): the same transfer gives
the same pixels on all three faces; inversions round-trip through their file; progress,
cancellation and Ctrl+C; errors map to their classes; two threads run two models.

Run by scripts/test_python.sh (which builds the package into a virtual environment with
maturin); the CLI and the C library are the workspace's test build's (`DITAIL_BIN`,
`DITAIL_LIB` override them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ditail

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "tests" / "fixtures" / "models"
TINY_A, TINY_B, TINY_XL = (str(MODELS / n) for n in ("tiny-a", "tiny-b", "tiny-xl"))
CONTENT = ROOT / "tests" / "fixtures" / "pipeline" / "content.png"
BIN = Path(os.environ.get("DITAIL_BIN", ROOT / "target" / "debug" / "ditail"))
# What the workspace's test build links the C library as (`cargo test` leaves it in deps/).
LIB = Path(
    os.environ.get("DITAIL_LIB", ROOT / "target" / "debug" / "deps" / "libditail_capi.so")
)
PROMPT = "a photo of a cat"
# Small and quick: the tiny models at 64 px, 4 + 4 steps.
FAST = dict(size=64, inv_steps=4, steps=4, progress=False)


@pytest.fixture(scope="module")
def a() -> ditail.Model:
    return ditail.load(TINY_A, device="cpu")


@pytest.fixture(scope="module")
def b() -> ditail.Model:
    return ditail.load(TINY_B, device="cpu")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def cli(*args: str) -> None:
    run = subprocess.run([str(BIN), "--backend", "cpu", "--quiet", *args], capture_output=True)
    assert run.returncode == 0, run.stderr.decode()


# ---------------------------------------------------------------------------------------
# The same pixels as the other faces


def test_a_transfer_equals_the_clis_and_the_c_apis(a, b, tmp_path):
    cli_out, capi_out = tmp_path / "cli.png", tmp_path / "capi.png"
    cli("transfer", str(CONTENT), "--prompt", PROMPT, "--source", TINY_A, "--target", TINY_B,
        "--size", "64", "--inv-steps", "4", "--steps", "4", "-o", str(cli_out))
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "transfer.py"), TINY_A, TINY_B,
         str(CONTENT), str(capi_out), "--prompt", PROMPT, "--size", "64", "--inv-steps", "4",
         "--steps", "4", "--backend", "cpu", "--lib", str(LIB), "--quiet"],
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr.decode()
    from_path = ditail.transfer(a, b, CONTENT, PROMPT, **FAST)
    from_pil = ditail.transfer(a, b, Image.open(CONTENT), PROMPT, **FAST)
    from_numpy = ditail.transfer(a, b, pixels(CONTENT), PROMPT, **FAST)
    assert isinstance(from_path, Image.Image) and isinstance(from_pil, Image.Image)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.uint8
    expected = pixels(cli_out)
    assert expected.shape == (64, 80, 3)
    np.testing.assert_array_equal(np.asarray(from_path), expected)
    np.testing.assert_array_equal(np.asarray(from_pil), expected)
    np.testing.assert_array_equal(from_numpy, expected)
    np.testing.assert_array_equal(pixels(capi_out), expected)


def test_generate_equals_the_clis(a, tmp_path):
    out = tmp_path / "gen.png"
    cli("generate", "--model", TINY_A, "--prompt", "a dog", "--size", "64", "--steps", "3", "--seed", "7",
        "-o", str(out))
    img = ditail.generate(a, "a dog", size=64, steps=3, seed=7, progress=False)
    np.testing.assert_array_equal(np.asarray(img), pixels(out))
    other = ditail.generate(a, "a dog", size=64, steps=3, seed=8, progress=False)
    assert not np.array_equal(np.asarray(other), np.asarray(img))


def test_a_cocktail_is_every_source_into_every_target(a, b):
    grid = ditail.cocktail([a, b], CONTENT, PROMPT, size=64, inv_steps=4, steps=4,
                           progress=False)
    assert [len(row) for row in grid] == [2, 2]
    for s, source in enumerate([a, b]):
        for t, target in enumerate([a, b]):
            one = ditail.transfer(source, target, CONTENT, PROMPT, **FAST)
            np.testing.assert_array_equal(np.asarray(grid[s][t]), np.asarray(one))
    assert not np.array_equal(np.asarray(grid[0][1]), np.asarray(grid[0][0]))


# ---------------------------------------------------------------------------------------
# Inversions


def test_an_inversion_round_trips_through_its_file(a, b, tmp_path):
    inv = ditail.invert(a, CONTENT, PROMPT, steps=4, size=64, progress=False)
    assert (inv.size, inv.steps, inv.prompt) == ((80, 64), 4, PROMPT)
    path = tmp_path / "cat.latents.safetensors"
    inv.save(path)
    loaded = ditail.load_inversion(path, b)
    assert (loaded.size, loaded.steps, loaded.source) == (inv.size, inv.steps, inv.source)
    first = ditail.sample(b, inv, PROMPT, steps=4, progress=False)
    again = ditail.sample(b, loaded, PROMPT, steps=4, progress=False)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_the_clis_latents_file_samples_to_the_clis_image(b, tmp_path):
    out, latents = tmp_path / "cli.png", tmp_path / "cli.latents.safetensors"
    cli("transfer", str(CONTENT), "--prompt", PROMPT, "--source", TINY_A, "--target", TINY_B,
        "--size", "64", "--inv-steps", "4", "--steps", "4", "--save-latents", str(latents),
        "-o", str(out))
    inv = ditail.load_inversion(latents, b)
    img = ditail.sample(b, inv, PROMPT, steps=4, progress=False)
    np.testing.assert_array_equal(np.asarray(img), pixels(out))


def test_an_inversion_that_does_not_fit_the_target_is_refused(a, b):
    inv = ditail.invert(a, CONTENT, PROMPT, steps=4, size=64, progress=False)
    with pytest.raises(ditail.InvalidInputError, match="timestep"):
        ditail.sample(b, inv, PROMPT, steps=3, progress=False)
    xl = ditail.load(TINY_XL, device="cpu")
    with pytest.raises(ditail.InvalidInputError):
        ditail.sample(xl, inv, PROMPT, steps=4, progress=False)


# ---------------------------------------------------------------------------------------
# Progress, cancellation, Ctrl+C


def test_the_callback_sees_every_step_in_order_with_previews(a, b):
    seen = []

    def callback(step, total, stage, preview):
        seen.append((stage, step, total))
        assert isinstance(preview, Image.Image) and preview.size == (10, 8)

    ditail.transfer(a, b, CONTENT, PROMPT, callback=callback, previews=True, **FAST)
    assert seen == [("inversion", i, 4) for i in range(1, 5)] + [
        ("sampling", i, 4) for i in range(1, 5)
    ]


def test_no_previews_unless_asked(a):
    previews = []
    ditail.invert(a, CONTENT, PROMPT, steps=2, size=64, progress=False,
                  callback=lambda *args: previews.append(args[3]))
    assert previews == [None, None]


def test_false_from_the_callback_cancels_and_the_model_stays_usable(a, b):
    seen = []

    def stop_at_2(step, total, stage, preview):
        seen.append(step)
        return step < 2

    with pytest.raises(ditail.CancelledError):
        ditail.transfer(a, b, CONTENT, PROMPT, callback=stop_at_2, **FAST)
    assert seen == [1, 2]
    assert ditail.transfer(a, b, CONTENT, PROMPT, **FAST).size == (80, 64)


def test_an_exception_in_the_callback_stops_the_call_and_is_raised(a):
    def boom(step, total, stage, preview):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        ditail.invert(a, CONTENT, PROMPT, steps=4, size=64, callback=boom, progress=False)


def test_ctrl_c_cancels_after_the_step_and_leaves_the_interpreter_usable(a, b):
    started, steps = threading.Event(), []

    def note(step, total, stage, preview):
        steps.append(step)
        started.set()

    # A real SIGINT from another thread, arriving while the call runs (without the GIL).
    # 999 steps (1000 would pass the training timesteps) leave the killer time to run on a
    # loaded machine: with 200 it once came after the call had ended, while a build held
    # both cores.
    killer = threading.Thread(
        target=lambda: started.wait(60) and os.kill(os.getpid(), signal.SIGINT)
    )
    killer.start()
    with pytest.raises(KeyboardInterrupt):
        ditail.invert(a, CONTENT, PROMPT, steps=999, size=64, callback=note, progress=False)
    killer.join()
    assert 1 <= len(steps) < 999
    assert ditail.transfer(a, b, CONTENT, PROMPT, **FAST).size == (80, 64)


def test_a_progress_bar_by_default_and_none_when_off(a, capsys):
    ditail.invert(a, CONTENT, PROMPT, steps=2, size=64)
    assert "inversion" in capsys.readouterr().err
    ditail.invert(a, CONTENT, PROMPT, steps=2, size=64, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------
# Errors


def test_a_numpy_image_of_the_wrong_dtype_or_shape(a, b):
    img = pixels(CONTENT)
    with pytest.raises(TypeError, match="uint8"):
        ditail.transfer(a, b, img.astype(np.float32) / 255, PROMPT, **FAST)
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        ditail.transfer(a, b, img[:, :, 0], PROMPT, **FAST)
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        ditail.transfer(a, b, np.dstack([img, img[:, :, :1]]), PROMPT, **FAST)
    with pytest.raises(TypeError, match="PIL"):
        ditail.transfer(a, b, [[0, 0, 0]], PROMPT, **FAST)


def test_settings_out_of_range_are_invalid_input_and_value_errors(a, b):
    for bad in (dict(steps=0), dict(size=12), dict(alpha=float("nan")), dict(conv_ratio=2.0),
                dict(mask="diagonal")):
        settings = {**FAST, **bad}
        with pytest.raises(ditail.InvalidInputError) as caught:
            ditail.transfer(a, b, CONTENT, PROMPT, **settings)
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, ditail.DitailError)
    # The checks shared with the command line name a setting by its keyword, not its flag.
    with pytest.raises(ditail.InvalidInputError, match="^sites nowhere: ") as caught:
        ditail.transfer(a, b, CONTENT, PROMPT, **{**FAST, "sites": ["nowhere"]})
    assert "--" not in str(caught.value)
    with pytest.raises(ditail.InvalidInputError, match="size"):
        ditail.generate(a, "x", size=30, steps=1, progress=False)
    with pytest.raises(ditail.InvalidInputError, match="seed"):
        ditail.generate(a, "x", seed=-1, progress=False)


def test_a_negative_count_is_an_invalid_input_naming_its_setting(a, b):
    with pytest.raises(ditail.InvalidInputError, match="steps=-3"):
        ditail.transfer(a, b, CONTENT, PROMPT, **{**FAST, "steps": -3})
    with pytest.raises(ditail.InvalidInputError, match=r"\(height, width, 3\)"):
        ditail.transfer(a, b, pixels(CONTENT)[:, :, :2], PROMPT, **FAST)


def test_a_value_of_the_wrong_type_names_its_setting(a, b):
    with pytest.raises(TypeError, match="steps"):
        ditail.transfer(a, b, CONTENT, PROMPT, **{**FAST, "steps": "four"})
    with pytest.raises(TypeError, match="unexpected"):
        ditail.cocktail([a], CONTENT, PROMPT, colour="blue")
    with pytest.raises(TypeError):
        ditail.transfer(a, b, CONTENT, PROMPT, strength=0.5)


def test_models_devices_and_files_map_to_their_classes(tmp_path):
    with pytest.raises(ditail.ModelError, match="nothing/here.safetensors"):
        ditail.load(tmp_path / "nothing/here.safetensors", device="cpu")
    with pytest.raises(ditail.DeviceError, match="tpu"):
        ditail.load(TINY_A, device="tpu")
    with pytest.raises(ditail.DeviceError):
        ditail.load(TINY_A, device="cpu:7")
    with pytest.raises(ditail.InvalidInputError, match="lora"):
        ditail.load(TINY_A, device="cpu", loras=[tmp_path / "missing.safetensors"])
    with pytest.raises(ditail.InvalidInputError, match="clip_skip"):
        ditail.load(TINY_A, device="cpu", clip_skip=0)
    with pytest.raises(ditail.InvalidInputError):
        ditail.load(TINY_A, device="cpu", dtype="int8")
    with pytest.raises(ditail.InvalidInputError, match="not-an-image"):
        (tmp_path / "not-an-image.png").write_bytes(b"plain text")
        ditail.invert(ditail.load(TINY_A, device="cpu"), tmp_path / "not-an-image.png", "x",
                      progress=False)
    with pytest.raises(ditail.InvalidInputError):
        ditail.load_inversion(tmp_path / "not-an-image.png", ditail.load(TINY_A, device="cpu"))


def test_the_model_and_defaults_describe_themselves(a):
    assert (a.family, a.native_size, a.backend, a.dtype) == ("sd1", 512, "cpu", "f32")
    assert "tiny-a" in repr(a)
    assert ditail.DEFAULTS["alpha"] == 2.0 and ditail.DEFAULTS["lora_scale"] == 0.7
    assert any(d["backend"] == "cpu" for d in ditail.devices())


# ---------------------------------------------------------------------------------------
# Threads


def test_two_threads_with_two_models_give_the_sequential_results(a, b):
    expected = {
        "ab": np.asarray(ditail.transfer(a, b, CONTENT, PROMPT, **FAST)),
        "ba": np.asarray(ditail.transfer(b, a, CONTENT, PROMPT, **FAST)),
    }
    results, errors = {}, []

    def run(name, source, target):
        try:
            results[name] = np.asarray(ditail.transfer(source, target, CONTENT, PROMPT, **FAST))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=("ab", a, b)),
               threading.Thread(target=run, args=("ba", b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, image in expected.items():
        np.testing.assert_array_equal(results[name], image)


# ---------------------------------------------------------------------------------------
# Metrics


def test_evaluate_gives_the_clis_report(tmp_path):
    import json

    ev = ROOT / "tests" / "fixtures" / "eval"
    nets = ["--clip", str(ev / "clip-tiny"), "--dino", str(ev / "dino-tiny")]
    out = tmp_path / "scores.json"
    cli("eval", "--results", str(ev / "images" / "results"), "--content",
        str(ev / "images" / "content"), "--prompts", str(ev / "images" / "prompts.txt"),
        *nets, "--json", str(out))
    expected = json.loads(out.read_text())
    stages = []
    report = ditail.evaluate(
        ev / "images" / "results",
        content=ev / "images" / "content",
        prompts=ev / "images" / "prompts.txt",
        clip=str(ev / "clip-tiny"),
        dino=str(ev / "dino-tiny"),
        device="cpu",
        callback=lambda done, total, stage, _: stages.append((stage, done, total)),
        progress=False,
    )
    assert report == expected
    assert len(report["images"]) == 4 and report["clip_score"] is not None
    assert stages[-1] == ("structure distance", 4, 4) and stages[0][0] == "clip score"
    # Prompts as a dict: the same scores.
    lines = (ev / "images" / "prompts.txt").read_text().splitlines()
    as_dict = dict(line.split("\t", 1) for line in lines if line.strip())
    again = ditail.evaluate(ev / "images" / "results", prompts=as_dict,
                            clip=str(ev / "clip-tiny"), device="cpu", progress=False)
    assert [i["clip_score"] for i in again["images"]] == [
        i["clip_score"] for i in expected["images"]
    ]
    with pytest.raises(ditail.InvalidInputError, match="nothing to compute"):
        ditail.evaluate(ev / "images" / "results", device="cpu", progress=False)
    # The fixtures are not ditail's PNGs: nothing to take prompts from, said in keywords.
    with pytest.raises(ditail.InvalidInputError, match=r"^prompts=True: no result") as caught:
        ditail.evaluate(ev / "images" / "results", prompts=True, device="cpu", progress=False)
    assert "give prompts instead" in str(caught.value) and "--" not in str(caught.value)
    with pytest.raises(ditail.DitailError, match="missing"):
        ditail.evaluate(tmp_path / "missing", prompts=as_dict, device="cpu", progress=False)
