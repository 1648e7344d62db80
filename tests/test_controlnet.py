"""ControlNet in `hypersd generate`: control-image preprocessing, conditioning, bad input."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hypersd.errors import UserError
from hypersd.inference.controlnet import canny, check_fits, prepare_control, scribble


def white_square(size=32, lo=8, hi=24):
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[lo:hi, lo:hi] = 255
    return rgb


def strokes_mask(size=32):
    mask = np.zeros((size, size), bool)
    mask[10:12, 4:28] = True  # a horizontal stroke, 2 px thick
    mask[4:28, 20:22] = True  # a vertical one crossing it
    return mask


def test_canny_marks_the_square_border_and_nothing_else():
    edges = canny(white_square())
    assert edges.shape == (32, 32, 3) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    assert (edges == edges[:, :, :1]).all()  # three equal channels: white edges on black
    on = edges[:, :, 0] > 0
    band = np.zeros_like(on)  # the pixel on either side of each step from black to white
    band[7:25, 7:25] = True
    band[9:23, 9:23] = False
    assert not (on & ~band).any()
    sides = [on[7:9, 8:24].any(axis=0), on[23:25, 8:24].any(axis=0),
             on[8:24, 7:9].any(axis=1), on[8:24, 23:25].any(axis=1)]
    assert all(side.sum() >= 14 for side in sides)  # each of the 16-px sides is traced (corners may round)
    same = np.asarray(prepare_control(Image.fromarray(white_square()), "canny", (32, 32)))
    assert np.array_equal(same, edges)


def test_canny_thresholds_drop_faint_edges():
    faint = white_square() // 8  # a step of 31 grey levels
    assert canny(faint, 10, 20).any() and not canny(faint, 100, 200).any()


def test_scribble_turns_dark_strokes_on_white_into_white_strokes_on_black():
    mask = strokes_mask()
    drawing = np.full((32, 32, 3), 255, np.uint8)
    drawing[mask] = 0
    out = scribble(drawing)
    assert out.shape == (32, 32, 3) and (out == out[:, :, :1]).all()
    assert np.array_equal(out[:, :, 0], np.where(mask, 255, 0))
    assert np.array_equal(scribble(255 - drawing), out)  # light strokes on a dark ground: kept as strokes
    assert not scribble(np.full((32, 32, 3), 200, np.uint8)).any()  # a flat image has no strokes


def test_control_image_is_resized_to_the_generation_size():
    wide = Image.fromarray(np.repeat(np.repeat(white_square(), 2, axis=0), 3, axis=1))  # 96 x 64
    for mode in ("canny", "scribble", "none"):
        assert prepare_control(wide, mode, (32, 40)).size == (32, 40)
    kept = prepare_control(Image.fromarray(white_square()), "none", (32, 32))
    assert np.array_equal(np.asarray(kept), white_square())


def test_a_controlnet_of_another_architecture_is_refused():
    unet = SimpleNamespace(config={"in_channels": 4, "block_out_channels": [16, 32, 32], "cross_attention_dim": 32})
    other = SimpleNamespace(config={"in_channels": 4, "block_out_channels": (320, 640, 1280),
                                    "cross_attention_dim": 32})
    check_fits(SimpleNamespace(config=dict(unet.config)), unet, "cn")
    with pytest.raises(UserError, match="does not fit the base model"):
        check_fits(other, unet, "cn")


@pytest.fixture
def cli(capsys, monkeypatch):
    from hypersd.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["hypersd", "generate", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code or 0, capsys.readouterr()

    return run


@pytest.fixture
def square_png(tmp_path):
    path = tmp_path / "square.png"
    Image.fromarray(white_square()).save(path)
    return path


def read_images(folder):
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return np.stack([np.asarray(Image.open(folder / r["file"]), dtype=int) for r in records]), records


def test_controlnet_conditions_generation_and_scale_zero_is_the_plain_pipeline(
        tiny_pipeline_dir, tiny_controlnet_dir, square_png, tmp_path, cli):
    prompts, base = ["a red circle", "two blue squares"], ["--base", tiny_pipeline_dir, "--steps", 2]
    control = ["--controlnet", tiny_controlnet_dir, "--control-image", square_png]
    code, printed = cli(*prompts, *base, "--out", tmp_path / "plain")
    assert code == 0, printed.err
    code, printed = cli(*prompts, *base, *control, "--out", tmp_path / "cn")
    assert code == 0, printed.err
    code, printed = cli(*prompts, *base, *control, "--control-scale", 0, "--out", tmp_path / "cn0")
    assert code == 0, printed.err
    plain, _ = read_images(tmp_path / "plain")
    conditioned, records = read_images(tmp_path / "cn")
    zero_scale, _ = read_images(tmp_path / "cn0")
    assert np.abs(conditioned - plain).max() > 8  # the ControlNet changed the images
    assert np.abs(zero_scale - plain).max() <= 1  # scale 0: the plain pipeline (up to PNG rounding)
    saved = np.asarray(Image.open(tmp_path / "cn" / "control.png"))
    assert np.array_equal(saved, canny(white_square()))  # what conditioned the model, at 32x32
    assert records[0]["control"] == "canny" and records[0]["control_scale"] == 1.0
    assert records[0]["controlnet"] == str(tiny_controlnet_dir) and records[0]["canny_thresholds"] == [100, 200]
    assert not (tmp_path / "plain" / "control.png").exists()


def test_loras_stay_active_under_the_controlnet(tiny_pipeline_dir, tiny_controlnet_dir, square_png, tmp_path, cli):
    import torch
    from diffusers import StableDiffusionPipeline

    from hypersd.lora.adapters import add_lora
    from hypersd.lora.files import save_lora

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q", "to_v"])
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    lora = save_lora(tmp_path / "style.safetensors", pipe.unet, "student")
    base = ["a red circle", "--base", tiny_pipeline_dir, "--steps", 1]
    control = ["--controlnet", tiny_controlnet_dir, "--control-image", square_png, "--control", "scribble"]
    outs = {}
    for name, extra in [("base", []), ("lora", ["--lora", lora]),
                        ("lora-cn0", ["--lora", lora, *control, "--control-scale", 0])]:
        code, printed = cli(*base, *extra, "--out", tmp_path / name)
        assert code == 0, printed.err
        outs[name] = read_images(tmp_path / name)[0]
    assert np.abs(outs["lora"] - outs["base"]).max() > 8
    assert np.abs(outs["lora-cn0"] - outs["lora"]).max() <= 1


def assert_one_line_error(code, err, needle):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and needle in lines[0], err


@pytest.mark.parametrize("case,needle", [
    ("missing-image", "control image not found"),
    ("unreadable-image", "cannot read control image"),
    ("image-without-controlnet", "--control-image needs --controlnet"),
    ("controlnet-without-image", "--controlnet needs --control-image"),
    ("unknown-control", "unknown --control 'depth'"),
    ("missing-controlnet", "ControlNet folder not found"),
    ("not-a-controlnet", "not a diffusers ControlNet folder"),
    ("no-weights", "cannot load ControlNet folder"),
    ("negative-scale", "--control-scale must be >= 0"),
    ("bad-canny", "canny thresholds need 0 <= low <= high"),
])
def test_bad_control_input(case, needle, tiny_pipeline_dir, tiny_controlnet_dir, square_png, tmp_path, cli):
    garbage = tmp_path / "garbage.png"
    garbage.write_text("not an image")
    empty = tmp_path / "empty-cn"
    empty.mkdir()
    weightless = tmp_path / "weightless-cn"
    weightless.mkdir()
    (weightless / "config.json").write_text((tiny_controlnet_dir / "config.json").read_text())
    args = {
        "missing-image": ["--controlnet", tiny_controlnet_dir, "--control-image", tmp_path / "nope.png"],
        "unreadable-image": ["--controlnet", tiny_controlnet_dir, "--control-image", garbage],
        "image-without-controlnet": ["--control-image", square_png],
        "controlnet-without-image": ["--controlnet", tiny_controlnet_dir],
        "unknown-control": ["--controlnet", tiny_controlnet_dir, "--control-image", square_png, "--control", "depth"],
        "missing-controlnet": ["--controlnet", tmp_path / "nope", "--control-image", square_png],
        "not-a-controlnet": ["--controlnet", empty, "--control-image", square_png],
        "no-weights": ["--controlnet", weightless, "--control-image", square_png],
        "negative-scale": ["--controlnet", tiny_controlnet_dir, "--control-image", square_png, "--control-scale", -1],
        "bad-canny": ["--controlnet", tiny_controlnet_dir, "--control-image", square_png, "--canny-low", 300],
    }[case]
    code, printed = cli("a red circle", "--base", tiny_pipeline_dir, "--steps", 1, *args, "--out", tmp_path / "out")
    assert_one_line_error(code, printed.err, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_sdxl_base_gets_the_sdxl_controlnet_pipeline(tiny_sdxl_dir, tiny_sdxl_controlnet_dir, square_png,
                                                     tmp_path, cli):
    sdxl = tiny_sdxl_dir
    base = ["a red circle", "--base", sdxl, "--steps", 1, "--scheduler", "ddim-trailing", "--guidance", 0]
    control = ["--controlnet", tiny_sdxl_controlnet_dir, "--control-image", square_png]
    outs = {}
    for name, extra in [("plain", []), ("cn", control), ("cn0", [*control, "--control-scale", 0])]:
        code, printed = cli(*base, *extra, "--out", tmp_path / name)
        assert code == 0, printed.err
        outs[name] = read_images(tmp_path / name)[0]
    assert np.abs(outs["cn"] - outs["plain"]).max() > 8
    assert np.abs(outs["cn0"] - outs["plain"]).max() <= 1
