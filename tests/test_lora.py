"""LoRA files: diffusers' loader reads them unchanged (alpha included) and they carry inference settings."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from hypersd.errors import UserError
from hypersd.lora.adapters import add_lora
from hypersd.lora.files import INFERENCE_KEY, LoraSpec, inference_settings, read_metadata, save_lora
from hypersd.train.recipe import Lora

SETTINGS = {"scheduler": "ddim-trailing", "steps": 4, "guidance": 0.0, "eta": 0.0}


def _randomise(unet):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


def _unet_output(unet):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    context = torch.randn(2, 32, unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        return unet(x, torch.tensor([999, 400]), context).sample


def test_saved_lora_loads_in_plain_diffusers_with_equal_outputs(tiny_pipeline_dir, tmp_path):
    ours = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    base_out = _unet_output(ours.unet)
    cfg = Lora(rank=4, alpha=8.0)  # alpha != rank: the scale must survive the round trip
    add_lora(ours.unet, cfg.rank, cfg.alpha, cfg.targets)
    _randomise(ours.unet)
    expected = _unet_output(ours.unet)
    assert (expected - base_out).abs().max() > 1e-3

    path = save_lora(tmp_path / "k4.safetensors", ours.unet, "student", inference=SETTINGS, extra={"stage": "k4"})
    plain = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    plain.load_lora_weights(str(path))
    torch.testing.assert_close(_unet_output(plain.unet), expected, rtol=1e-5, atol=1e-5)
    n_lora = sum(1 for n, _ in plain.unet.named_parameters() if "lora_A" in n)
    assert n_lora == sum(1 for n, _ in ours.unet.named_parameters() if "lora_A" in n) > 50
    assert inference_settings(path) == SETTINGS
    assert read_metadata(path)["hypersd_stage"] == "k4"
    assert not list(tmp_path.glob("tmp*"))  # nothing left behind


def test_conv_and_time_targets_are_saved(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, Lora().targets)
    path = save_lora(tmp_path / "a.safetensors", pipe.unet, "student")
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    assert any("conv1.lora_A" in k for k in keys) and any("time_emb_proj.lora_A" in k for k in keys)
    assert inference_settings(path) == {}


def test_bad_lora_files(tmp_path):
    with pytest.raises(UserError, match="LoRA file not found"):
        inference_settings(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not a safetensors file"):
        inference_settings(junk)


def test_unknown_target_is_a_clear_error(tiny_pipeline_dir):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    with pytest.raises(UserError, match="cannot add LoRA"):
        add_lora(pipe.unet, 2, 2.0, ["no_such_module"])


def test_metadata_is_json(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q"])
    path = save_lora(tmp_path / "b.safetensors", pipe.unet, "student", inference=SETTINGS)
    assert json.loads(read_metadata(path)["hypersd_inference"])["steps"] == 4


def test_sample_applies_the_lora_settings_unless_overridden(tiny_pipeline_dir, tmp_path, monkeypatch):
    import sys

    from hypersd.cli import main

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q"])
    path = save_lora(tmp_path / "k2.safetensors", pipe.unet, "student",
                     inference={"scheduler": "tcd", "steps": 2, "guidance": 0.0, "eta": 0.3})

    def run(*extra):
        out = tmp_path / f"out{len(extra)}"
        monkeypatch.setattr(sys, "argv", ["hypersd", "sample", "--model", str(tiny_pipeline_dir), "--lora",
                                          str(path), "--prompt", "a red circle", "--out", str(out), *extra])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code in (0, None)
        return json.loads((out / "samples.jsonl").read_text().splitlines()[0])

    stored = run()
    assert (stored["scheduler"], stored["steps"], stored["eta"]) == ("tcd", 2, 0.3)
    overridden = run("--steps", "3", "--eta", "1.0")
    assert (overridden["scheduler"], overridden["steps"], overridden["eta"]) == ("tcd", 3, 1.0)


def test_a_recommendation_is_taken_whole_and_gives_way_to_another_scheduler(tmp_path):
    """A LoRA's settings replace a model folder's as a whole (no LCM timesteps left beside a DDIM
    LoRA's steps), and a TCD eta is dropped when the user picks another scheduler."""
    from hypersd.inference.settings import resolve_settings

    folder = tmp_path / "one-step"
    folder.mkdir()
    (folder / "hypersd_inference.json").write_text(json.dumps({"scheduler": "lcm", "steps": 1, "timesteps": [800]}))
    lora = tmp_path / "k8.safetensors"
    save_file({"unet.x.lora_A.weight": torch.zeros(1, 1)}, lora,
              metadata={INFERENCE_KEY: json.dumps({"scheduler": "ddim-trailing", "steps": 8})})
    none = {"steps": None, "scheduler": None, "guidance": None, "eta": None, "timesteps": None}
    chosen = resolve_settings(none, [LoraSpec(lora)], folder)
    assert (chosen["scheduler"], chosen["steps"], chosen["timesteps"]) == ("ddim-trailing", 8, None)
    tcd = tmp_path / "unified.safetensors"
    save_file({"unet.x.lora_A.weight": torch.zeros(1, 1)}, tcd,
              metadata={INFERENCE_KEY: json.dumps({"scheduler": "tcd", "steps": 4, "eta": 0.3})})
    assert resolve_settings(none, [LoraSpec(tcd)])["eta"] == 0.3
    assert resolve_settings({**none, "scheduler": "ddim-trailing"}, [LoraSpec(tcd)])["eta"] is None
    assert resolve_settings({**none, "steps": 2}, [LoraSpec(tcd)])["eta"] == 0.3  # same scheduler


def test_stored_timesteps_give_way_to_other_steps_or_scheduler(tmp_path):
    from hypersd.inference.settings import resolve_settings

    folder = tmp_path / "one-step"
    folder.mkdir()
    (folder / "hypersd_inference.json").write_text(json.dumps({"scheduler": "lcm", "steps": 1, "timesteps": [800]}))
    none = {"steps": None, "scheduler": None, "guidance": None, "eta": None, "timesteps": None}
    assert resolve_settings(none, [], folder)["timesteps"] == [800]
    four = resolve_settings({**none, "steps": 4}, [], folder)
    assert (four["scheduler"], four["steps"], four["timesteps"]) == ("lcm", 4, None)
    assert resolve_settings({**none, "timesteps": [999]}, [], folder)["timesteps"] == [999]
    assert resolve_settings({**none, "scheduler": "lcm"}, [], folder)["timesteps"] == [800]  # same scheduler
    ddim = resolve_settings({**none, "scheduler": "ddim-trailing"}, [], folder)
    assert (ddim["scheduler"], ddim["steps"], ddim["timesteps"]) == ("ddim-trailing", 1, None)
    (folder / "hypersd_inference.json").write_text("{nope")
    with pytest.raises(UserError, match="hypersd_inference.json is not valid JSON"):
        resolve_settings(none, [], folder)


def test_step_timesteps_give_the_timesteps_at_each_step_count(tmp_path, capsys, monkeypatch):
    """A unified LoRA's step_timesteps table (written by `hypersd lora schedule`) names the timesteps at the
    step counts it lists; other counts keep trailing spacing; the user's timesteps or scheduler win."""
    import sys

    from safetensors.torch import load_file

    from hypersd.cli import main
    from hypersd.embedded.rows import metadata_settings
    from hypersd.inference.settings import resolve_settings

    lora = tmp_path / "unified.safetensors"
    save_file({"unet.x.lora_A.weight": torch.ones(1, 1)}, lora,
              metadata={INFERENCE_KEY: json.dumps({"scheduler": "tcd", "steps": 4, "eta": 0.3}), "other": "kept"})

    def schedule(*args):
        monkeypatch.setattr(sys, "argv", ["hypersd", "lora", "schedule", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code or 0, capsys.readouterr()

    out = tmp_path / "scheduled.safetensors"
    code, printed = schedule(lora, "--at", "1=700", "--at", "2=900,450", "--out", out)
    assert code == 0, printed.err
    assert torch.equal(load_file(out)["unet.x.lora_A.weight"], torch.ones(1, 1)) and read_metadata(out)["other"] == "kept"
    assert inference_settings(out)["step_timesteps"] == {"1": [700], "2": [900, 450]}
    from hypersd.io import current_umask
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not safetensors' owner-only mode
    none = {"steps": None, "scheduler": None, "guidance": None, "eta": None, "timesteps": None}
    assert [metadata_settings(out, n).timesteps for n in (1, 2, 4)] == [[700], [900, 450], None]
    assert metadata_settings(out).steps == 4 and metadata_settings(lora, 1).timesteps is None
    assert resolve_settings({**none, "steps": 2, "timesteps": [999, 500]}, [LoraSpec(out)])["timesteps"] == [999, 500]
    assert resolve_settings({**none, "steps": 1, "scheduler": "lcm"}, [LoraSpec(out)])["timesteps"] is None
    for bad, why in ((["--at", "2=450,900"], "2 distinct decreasing timesteps"),
                     (["--at", "1=700,300"], "1 distinct decreasing"), (["--at", "1=x"], "integer timesteps")):
        code, printed = schedule(lora, *bad, "--out", tmp_path / "bad.safetensors")
        assert code == 2 and why in printed.err and "Traceback" not in printed.err
        assert not (tmp_path / "bad.safetensors").exists()
    code, printed = schedule(lora, "--at", "1=600", "--out", out)  # never over an existing file
    assert code == 2 and "already exists" in printed.err and inference_settings(out)["step_timesteps"]["1"] == [700]


def test_plain_diffusers_with_the_stored_settings_reproduces_the_project_sampler(tiny_pipeline_dir, tmp_path):
    import numpy as np
    from diffusers import DDIMScheduler

    from hypersd.inference.sample import apply_loras, generate
    from hypersd.inference.settings import SampleSettings
    from hypersd.lora.files import LoraSpec
    from hypersd.models.pipelines import load_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 4, 4.0, Lora().targets)
    _randomise(pipe.unet)
    path = save_lora(tmp_path / "k2.safetensors", pipe.unet, "student",
                     inference={"scheduler": "ddim-trailing", "steps": 2, "guidance": 0.0, "eta": 0.0})

    ours = load_pipeline(tiny_pipeline_dir)
    apply_loras(ours, [LoraSpec(path)])
    settings = SampleSettings(steps=2, scheduler="ddim-trailing", guidance=0.0, loras=[LoraSpec(path)])
    expected = generate(ours, ["a red circle", "two blue squares"], settings, seeds=[3, 4])

    plain = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    plain.load_lora_weights(str(path))
    plain.scheduler = DDIMScheduler.from_config(plain.scheduler.config, timestep_spacing="trailing")
    got = plain(["a red circle", "two blue squares"], num_inference_steps=2, guidance_scale=0.0, output_type="np",
                generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    got = (np.clip(got, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    base = generate(load_pipeline(tiny_pipeline_dir), ["a red circle", "two blue squares"],
                    SampleSettings(steps=2, scheduler="ddim-trailing", guidance=0.0), seeds=[3, 4])
    assert np.abs(base.astype(int) - expected.astype(int)).max() > 1  # the LoRA matters


def _random_lora_file(tiny_pipeline_dir, path, rank, alpha, targets, seed):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, rank, alpha, targets)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return save_lora(path, pipe.unet, "student", inference=SETTINGS)


def test_merged_lora_equals_both_loras_at_the_ratio(tiny_pipeline_dir, tmp_path):
    from hypersd.lora.merge import merge_lora_files

    a = _random_lora_file(tiny_pipeline_dir, tmp_path / "a.safetensors", 4, 8.0, Lora().targets, 1)
    b = _random_lora_file(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, 1.0, ["to_q", "to_v", "conv1"], 2)
    merged = merge_lora_files(a, b, tmp_path / "m.safetensors", ratio=0.4)

    both = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    both.load_lora_weights(str(a), adapter_name="a")
    both.load_lora_weights(str(b), adapter_name="b")
    both.set_adapters(["a", "b"], [1.0, 0.4])
    one = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    one.load_lora_weights(str(merged))
    expected = _unet_output(both.unet)
    torch.testing.assert_close(_unet_output(one.unet), expected, rtol=1e-4, atol=1e-5)
    only_a = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    only_a.load_lora_weights(str(a))
    assert (_unet_output(only_a.unet) - expected).abs().max() > 1e-3  # b really contributes
    assert inference_settings(merged) == SETTINGS
    assert json.loads(read_metadata(merged)["hypersd_merge"])["ratio"] == 0.4


def test_merge_refuses_files_that_are_not_loras(tmp_path):
    from safetensors.torch import save_file

    from hypersd.lora.merge import merge_lora_files

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(UserError, match="no lora_adapter_metadata"):
        merge_lora_files(tmp_path / "x.safetensors", tmp_path / "x.safetensors", tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="LoRA file not found"):
        merge_lora_files(tmp_path / "nope.safetensors", tmp_path / "x.safetensors", tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_fused_unet_equals_the_adapted_unet_and_has_no_adapters(tiny_pipeline_dir):
    from hypersd.lora.adapters import fused_unet

    unet = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir).unet
    add_lora(unet, 2, 2.0, ["to_q", "to_v", "conv1"], name="student")
    add_lora(unet, 2, 2.0, ["to_k"], name="feedback")
    add_lora(unet, 2, 2.0, ["to_q"], name="other")  # not fused: dropped
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    unet.set_adapter(["student", "feedback"])
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():  # fused at its current scale, as the run's merge ratio sets it
        if isinstance(module, LoraLayer) and "feedback" in module.scaling:
            module.set_scale("feedback", 0.5)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    cond = torch.randn(2, 77, unet.config.cross_attention_dim)
    expected = unet(x, t, cond).sample
    fused = fused_unet(unet, ["student", "feedback"])
    torch.testing.assert_close(fused(x, t, cond).sample, expected, rtol=1e-4, atol=1e-5)
    assert not any("lora" in name for name, _ in fused.named_parameters())
    assert not getattr(fused, "_hf_peft_config_loaded", False)
    torch.testing.assert_close(unet(x, t, cond).sample, expected, rtol=0, atol=0)  # the original is untouched
    assert not torch.allclose(fused(x, t, cond).sample, StableDiffusionPipeline.from_pretrained(
        tiny_pipeline_dir).unet(x, t, cond).sample, atol=1e-4)  # and the LoRAs did count


def test_kohya_export_loads_in_plain_diffusers_with_equal_outputs(tiny_pipeline_dir, tmp_path):
    """ComfyUI/A1111 layout: lora_unet_* keys, lora_down/lora_up, alpha = (alpha / r) * r per module
    (alpha 4 at rank 2 here, so a lost alpha would halve the LoRA and fail the comparison)."""
    from safetensors.torch import load_file

    from hypersd.lora.export import export_kohya

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 4.0, ["to_q", "to_v", "conv1", "time_emb_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    native = save_lora(tmp_path / "native.safetensors", pipe.unet, "student", inference={"steps": 2})
    kohya = export_kohya(native, tmp_path / "kohya.safetensors")
    tensors = load_file(kohya)
    assert all(k.startswith("lora_unet_") for k in tensors)
    alphas = [v for k, v in tensors.items() if k.endswith(".alpha")]
    assert alphas and all(float(a) == 4.0 for a in alphas)
    assert len(alphas) == sum(k.endswith(".lora_down.weight") for k in tensors)
    assert inference_settings(kohya) == {"steps": 2}

    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    cond = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)
    outputs = []
    for path in (native, kohya):
        plain = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
        plain.load_lora_weights(str(path))
        outputs.append(plain.unet(x, t, cond).sample)
    base = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir).unet(x, t, cond).sample
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs[0], base, atol=1e-3)  # the LoRA did something


def test_lora_export_command_takes_a_run_folder_and_names_bad_input(tiny_pipeline_dir, tmp_path, capsys,
                                                                      monkeypatch):
    import sys

    from safetensors.torch import load_file

    from hypersd.cli import main

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 2.0, ["to_q", "to_v"])
    run = tmp_path / "run"
    save_lora(run / "loras" / "tscd-k2.safetensors", pipe.unet, "student")
    save_lora(run / "loras" / "tscd-k1.safetensors", pipe.unet, "student", inference={"steps": 1})

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["hypersd", "lora", "export", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return info.value.code or 0, capsys.readouterr()

    code, printed = cli(run, "--out", tmp_path / "k.safetensors")
    assert code == 0 and "tscd-k1.safetensors" in printed.out  # the final TSCD LoRA (no unified one here)
    assert all(k.startswith("lora_unet_") for k in load_file(tmp_path / "k.safetensors"))
    monkeypatch.setattr(sys, "argv", ["hypersd", "sample", "--model", str(tiny_pipeline_dir), "--lora",
                                      str(tmp_path / "k.safetensors"), "--prompt", "a red circle",
                                      "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as info:  # `sample` takes the kohya file too, with its stored settings
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "samples.jsonl").read_text().splitlines()[0])["steps"] == 1
    code, _ = cli(run, "--format", "diffusers", "--out", tmp_path / "d.safetensors")
    assert code == 0 and inference_settings(tmp_path / "d.safetensors") == {"steps": 1}
    code, printed = cli(run, "--format", "onnx", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "--format must be kohya or diffusers" in printed.err and "Traceback" not in printed.err
    code, printed = cli(run, "--format", "diffusers", "--dtype", "fp16", "--out", tmp_path / "h.safetensors")
    half, full = load_file(tmp_path / "h.safetensors"), load_file(tmp_path / "d.safetensors")
    assert code == 0 and "fp16" in printed.out and half.keys() == full.keys()
    assert all(v.dtype == torch.float16 and torch.equal(v, full[k].half()) for k, v in half.items())
    assert inference_settings(tmp_path / "h.safetensors") == {"steps": 1}  # metadata kept
    code, printed = cli(run, "--dtype", "int8", "--out", tmp_path / "y.safetensors")
    assert code == 2 and "--dtype must be keep, fp32, fp16 or bf16" in printed.err
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    code, printed = cli(tmp_path / "junk.safetensors", "--out", tmp_path / "y.safetensors")
    assert code == 2 and "not a safetensors file" in printed.err and not (tmp_path / "y.safetensors").exists()


def test_fused_pipeline_samples_like_the_lora_and_keeps_its_settings(tiny_pipeline_dir, tmp_path, monkeypatch,
                                                                      capsys):
    import sys

    from hypersd.cli import main
    from hypersd.inference.sample import apply_loras, generate
    from hypersd.inference.settings import SampleSettings
    from hypersd.lora.files import LoraSpec
    from hypersd.models.pipelines import load_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    add_lora(pipe.unet, 2, 4.0, ["to_q", "to_v", "conv1"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    lora = save_lora(tmp_path / "l.safetensors", pipe.unet, "student",
                     inference={"scheduler": "tcd", "steps": 2, "eta": 0.3, "guidance": 0.0})
    monkeypatch.setattr(sys, "argv", ["hypersd", "lora", "fuse", "--model", str(tiny_pipeline_dir), "--lora",
                                      f"{lora}:0.8", "--out", str(tmp_path / "fused")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "fused" / "hypersd_inference.json").read_text())["scheduler"] == "tcd"
    settings = SampleSettings(steps=2, scheduler="tcd", eta=0.3)
    with_lora = load_pipeline(tiny_pipeline_dir)
    apply_loras(with_lora, [LoraSpec(lora, 0.8)])
    expected = generate(with_lora, ["a red circle", "two blue squares"], settings).astype(int)
    fused = generate(load_pipeline(tmp_path / "fused"), ["a red circle", "two blue squares"], settings).astype(int)
    assert abs(fused - expected).max() <= 1  # uint8 images, equal up to rounding
    plain = generate(load_pipeline(tiny_pipeline_dir), ["a red circle", "two blue squares"], settings).astype(int)
    assert abs(plain - expected).max() > 8  # and the LoRA mattered


def test_a_lower_rank_lora_grows_into_a_higher_rank_adapter_unchanged(tiny_pipeline_dir, tmp_path):
    from peft.utils import get_peft_model_state_dict

    from hypersd.lora.files import load_into_adapter

    small = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir).unet
    add_lora(small, 2, 2.0, Lora().targets)
    _randomise(small)
    path = save_lora(tmp_path / "r2.safetensors", small, "student")
    large = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir).unet
    add_lora(large, 6, 6.0, Lora().targets)  # same scale alpha / r
    fresh_a = {k: v.clone() for k, v in get_peft_model_state_dict(large, adapter_name="student").items()
               if ".lora_A." in k}
    assert load_into_adapter(large, path, "student") > 0
    assert torch.allclose(_unet_output(large), _unet_output(small), atol=1e-5)
    state = get_peft_model_state_dict(large, adapter_name="student")
    key_a = next(k for k in state if "to_q.lora_A" in k)
    key_b = key_a.replace("lora_A", "lora_B")
    assert torch.equal(state[key_b][:, 2:], torch.zeros_like(state[key_b][:, 2:]))  # the new rank adds nothing yet
    assert torch.equal(state[key_a][2:], fresh_a[key_a][2:]) and state[key_a][2:].abs().sum() > 0  # but can learn
    shrunk = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir).unet
    add_lora(shrunk, 1, 1.0, Lora().targets)
    with pytest.raises(UserError, match="rank or above"):
        load_into_adapter(shrunk, path, "student")
