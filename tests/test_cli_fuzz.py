"""A fuzzed command line (Hypothesis): for every verb, drawn arguments end in exit 0 with valid
output or in exit 2 with exactly one `error:` line; never a traceback, never a partial output,
never a NaN in a written weights file.

Reproducible: examples are derandomized (the same ones on every run, CI included). The default
profile tries 20 per verb; `HYPOTHESIS_PROFILE=slow pytest -m slow tests/test_cli_fuzz.py` many more.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hypersd.cli import main

settings.register_profile("default", max_examples=20, derandomize=True, database=None, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("slow", max_examples=150, derandomize=True, database=None, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

NUMBERS = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(
    ["nan", "inf", "-inf", "1e309", "-0", "0.5", "abc", "", "99999999999999999999", "1,2", " 2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr))
TEXT = st.one_of(st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")),
                 st.sampled_from(["a red circle", "two blue squares", "\x00\x1b[31m", "\n", ""]))
LISTS = st.lists(st.integers(-5, 1200), max_size=5).map(lambda xs: ",".join(map(str, xs)))


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Paths of every kind the drawn arguments point at."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file.txt").write_text("not a model")
    (root / "folder").mkdir()
    (root / "folder" / "note.txt").write_text("x")
    (root / "empty").mkdir()
    return {"file": root / "file.txt", "folder": root / "folder", "empty": root / "empty",
            "missing": root / "missing" / "deeper", "unwritable": Path("/proc/hypersd-fuzz"), "new": root / "new"}


def invoke(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    argv = sys.argv
    sys.argv = ["hypersd", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


def check(args: list[str], out: Path | None = None) -> None:
    existed = out is not None and out.exists()
    code, err = invoke(args)
    assert "Traceback" not in err, err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        if out is not None and not existed:
            assert not out.exists(), f"partial output left in {out}"
    else:
        assert code == 0, (args, code, err)
    if out is not None and out.parent.exists():
        assert not [p for p in out.parent.rglob("*") if ".tmp-" in p.name], "a temporary was left behind"
    for file in (out.rglob("*.safetensors") if out is not None and out.is_dir() else []):
        from safetensors.torch import load_file

        assert all(t.isfinite().all() for t in load_file(file).values() if t.is_floating_point()), file


PLACE = st.sampled_from(["file", "folder", "empty", "missing", "unwritable", "new"])


def small(n: str, most: int = 3, refused_above: float = float("inf")) -> str:
    """A count that would be real work (a valid number above `most`) is cut to `most`; the rest kept
    (numbers above `refused_above` too: the program refuses them without work)."""
    try:
        return str(most) if most < float(n) <= refused_above else n
    except ValueError:
        return n


@given(steps=NUMBERS, eta=NUMBERS, guidance=NUMBERS, scheduler=st.sampled_from(["ddim", "tcd", "lcm", "heun", ""]),
       timesteps=LISTS, prompt=TEXT, out=PLACE, model=st.sampled_from(["tiny", "file", "missing"]))
@example(steps="1", eta="0", guidance="0", scheduler="ddim", timesteps="", prompt="a red circle", out="new",
         model="tiny")
@example(steps="100000", eta="0", guidance="0", scheduler="ddim", timesteps="", prompt="a red circle", out="new",
         model="tiny")
@example(steps="1", eta="0", guidance="0", scheduler="lcm", timesteps="200,800", prompt="a red circle", out="new",
         model="tiny")
def test_fuzzed_sample(tiny_pipeline_dir, places, steps, eta, guidance, scheduler, timesteps, prompt, out, model):
    target = places[out] / "s" if out == "new" else places[out]
    model_path = tiny_pipeline_dir if model == "tiny" else places[model]
    args = ["sample", "--model", str(model_path), "--prompt", prompt, "--steps", small(steps, 4, refused_above=1000), "--eta", eta,
            "--guidance", guidance, "--scheduler", scheduler, "--out", str(target), "--batch-size", "4"]
    if timesteps:
        args += ["--timesteps", timesteps]
    check(args, target if out in ("new", "missing") else None)


@given(n=NUMBERS, size=st.sampled_from(["32", "16", "abc", "-1", "nan"]), out=PLACE)
def test_fuzzed_data_shapes_and_prompts(places, n, size, out):
    target = places[out] / "d" if out == "new" else places[out]
    check(["data", "shapes", "--n", small(n), "--size", size, "--out", str(target)],
          target if out in ("new", "missing") else None)
    check(["data", "prompts", "--n", small(n), "--out", str(target)], None)


@given(ratio=NUMBERS, a=st.sampled_from(["lora", "file", "folder", "missing"]),
       out=st.sampled_from(["new.safetensors", "new.txt", "folder"]))
@example(ratio="nan", a="lora", out="new.safetensors")
def test_fuzzed_lora_merge(lora_file, places, ratio, a, out):
    path = lora_file if a == "lora" else places[a]
    target = places["folder"] if out == "folder" else places["new"].parent / out
    check(["lora", "merge", str(path), str(lora_file), "--ratio", ratio, "--out", str(target)])
    if target.is_file():
        from safetensors.torch import load_file

        assert all(t.isfinite().all() for t in load_file(target).values())
        target.unlink()


@given(key=st.sampled_from(["stages.0.iterations", "stages.0.segments", "training.batch_size", "lora.rank",
                            "stages.0.learning_rate", "stages.5.skip", "nonsense", "data.source",
                            "stages.0.guidance_min", "stages.0.t_end"]), value=NUMBERS)
def test_fuzzed_distill_recipe_overrides(key, value):
    check(["distill", "--dry-run", "--set", f"{key}={value}"])


@given(n=NUMBERS)
def test_fuzzed_evaluator_check(n):
    check(["evaluator", "check", "--n", small(n)])


@pytest.fixture(scope="module")
def lora_file(tiny_pipeline_dir, tmp_path_factory):
    import torch

    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import save_lora
    from hypersd.models.sd import load_model

    model = load_model(tiny_pipeline_dir)
    torch.manual_seed(0)
    add_lora(model.unet, 2, 2, ["to_q", "to_v"], name="student")
    return save_lora(tmp_path_factory.mktemp("lora") / "l.safetensors", model.unet, "student")


@pytest.mark.slow
def test_the_slow_profile_tries_many_more():
    """Run this file with HYPOTHESIS_PROFILE=slow (150 examples per verb instead of 20)."""
    assert settings.get_profile("slow").max_examples > settings.get_profile("default").max_examples
