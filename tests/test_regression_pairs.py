"""DMD's regression loss on teacher pairs (hypersd.data.pairs, dmd.regression_weight): the pair file,
the teacher's deterministic map from the stored noise, the term pulling the generator to the pairs,
exact resume, and `hypersd data pairs`."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hypersd.cli import main
from hypersd.data.pairs import TeacherPairs, is_pair_file, load_pairs, sample_pairs, save_pairs
from hypersd.errors import UserError
from hypersd.models.pipelines import load_pipeline
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run


def _pairs(n=4, shape=(4, 4, 4)) -> TeacherPairs:
    g = torch.Generator().manual_seed(0)
    return TeacherPairs(torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g),
                        [f"a red circle {i}" for i in range(n)], {"steps": 2})


def test_pair_file_round_trip(tmp_path):
    pairs = _pairs()
    path = save_pairs(tmp_path / "p.safetensors", pairs)
    back = load_pairs(path)
    assert back.captions == pairs.captions and back.info == pairs.info and is_pair_file(path)
    torch.testing.assert_close(back.noise, pairs.noise, rtol=0, atol=0)
    torch.testing.assert_close(back.latents, pairs.latents, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # no temporary left behind


def test_foreign_and_missing_pair_files_are_refused(tmp_path):
    save_file({"noise": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not a teacher pair file"):
        load_pairs(tmp_path / "other.safetensors")
    assert not is_pair_file(tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_pairs(tmp_path / "missing.safetensors")
    (tmp_path / "p.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="safetensors"):
        load_pairs(tmp_path / "p.pt")


def test_draw_follows_torchs_stream():
    pairs = _pairs(8)
    torch.manual_seed(3)
    z1, y1, c1 = pairs.draw(5, "cpu")
    torch.manual_seed(3)
    z2, y2, c2 = pairs.draw(5, "cpu")
    assert c1 == c2 and torch.equal(z1, z2) and torch.equal(y1, y2)
    i = pairs.captions.index(c1[0])
    assert torch.equal(z1[0], pairs.noise[i]) and torch.equal(y1[0], pairs.latents[i])


def test_pairs_are_the_teachers_ddim_samples_of_the_stored_noise(tiny_pipeline_dir):
    """Pair i's noise is randn(seed + i) whatever the batch; its latent is the trailing DDIM sample
    (eta 0) of the guided teacher from that noise."""
    from diffusers import DDIMScheduler

    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    captions = ["a red circle", "two blue squares"]
    whole = sample_pairs(pipe, captions, steps=3, guidance=4.0, seed=7, batch_size=2)
    split = sample_pairs(pipe, captions, steps=3, guidance=4.0, seed=7, batch_size=1)
    torch.testing.assert_close(whole.noise, split.noise, rtol=0, atol=0)
    torch.testing.assert_close(whole.latents, split.latents, rtol=1e-3, atol=1e-4)  # batch-size rounding
    shape = whole.noise.shape[1:]
    assert torch.equal(whole.noise[1], torch.randn(shape, generator=torch.Generator().manual_seed(8)))
    own = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(own.config, timestep_spacing="trailing")
    direct = pipe(prompt=captions[1:], latents=whole.noise[1:], num_inference_steps=3, guidance_scale=4.0,
                  eta=0.0, output_type="latent").images
    pipe.scheduler = own
    torch.testing.assert_close(whole.latents[1:], direct, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(whole.latents[0], whole.latents[1])


def _recipe(tmp_path, pairs_file, dmd_keys: str, iterations: int = 3, extra=(), lr: float = 1e-2):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: tiny-regression\nstages:\n"
        f"  - {{method: dmd, segments: 1, iterations: {iterations}, learning_rate: {lr}, mse_weight: 0, "
        f"dmd: {{generator_timestep: 800, fake_rank: 2, batch_size: 2, regression_pairs: {pairs_file}, "
        f"{dmd_keys}}}}}\n"
        "lora: {rank: 2, alpha: 2, targets: [to_q, to_v, conv1, conv2]}\ndata: {pool_size: 16}\nsamples: {prompts: 1}\n")
    return load_recipe(path, ["training.batch_size=2", "training.checkpoint_every=1", "training.log_every=1", *extra])


@pytest.fixture(scope="module")
def tiny_pairs(tiny_pipeline_dir, tmp_path_factory):
    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    pairs = sample_pairs(pipe, ["a red circle", "a blue square"], steps=2, guidance=3.0, seed=0)
    return save_pairs(tmp_path_factory.mktemp("pairs") / "pairs.safetensors", pairs)


def _logged(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_regression_term_pulls_the_generator_to_the_teacher_pairs(tiny_pipeline_dir, tiny_pairs, tmp_path):
    """A pure regression stage (dmd_weight 0): its loss falls over the steps, the fake score is never
    updated, and the logged loss is regression_weight * the regression term."""
    recipe = _recipe(tmp_path, tiny_pairs, "dmd_weight: 0, regression_weight: 2.0, regression_distance: mse",
                     iterations=25, lr=5e-2)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    run.train()
    reg, loss = _logged(tmp_path / "run", "regression"), _logged(tmp_path / "run", "loss")
    assert len(reg) == 25 and sum(reg[-5:]) < 0.8 * sum(reg[:5])  # a detached or sign-flipped term stays or rises
    assert loss[0] == pytest.approx(2.0 * reg[0])
    assert not run.fake_optimizer.state_dict()["state"]  # no distribution matching: the fake score rests


def test_dmd_with_regression_adds_both_terms(tiny_pipeline_dir, tiny_pairs, tmp_path):
    recipe = _recipe(tmp_path, tiny_pairs, "regression_weight: 0.5", iterations=1)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    run.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    row = next(r for r in rows if "regression" in r)
    assert row["loss"] == pytest.approx(row["dmd"] + 0.5 * row["regression"], rel=1e-5)
    assert run.fake_optimizer.state_dict()["state"]


def test_regression_needs_its_pair_file(tiny_pipeline_dir, tmp_path):
    recipe = _recipe(tmp_path, tmp_path / "missing.safetensors", "regression_weight: 1.0")
    with pytest.raises(UserError, match="regression_pairs: .* not found"):
        Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    recipe = _recipe(tmp_path, tmp_path / "w.safetensors", "regression_weight: 1.0")
    with pytest.raises(UserError, match="not a teacher pair file"):
        Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="regression_pairs"):
        _recipe(tmp_path, "", "regression_weight: 1.0")
    with pytest.raises(UserError, match="regression_distance"):
        _recipe(tmp_path, tmp_path / "missing.safetensors", "regression_distance: lpips")


def test_resume_with_regression_is_exact(tiny_pipeline_dir, tiny_pairs, tmp_path):
    recipe = _recipe(tmp_path, tiny_pairs, "regression_weight: 0.5", iterations=3)
    Run(recipe, tiny_pipeline_dir, tmp_path / "whole").train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=1)
    assert latest_checkpoint(tmp_path / "killed") is not None
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(resume=True)
    a = load_file(tmp_path / "whole" / "loras" / "dmd-one-step-t800.safetensors")
    b = load_file(tmp_path / "killed" / "loras" / "dmd-one-step-t800.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _cli(args, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["hypersd", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out + captured.err


def test_cli_data_pairs(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pairs.safetensors"
    args = ["data", "pairs", "--model", str(tiny_pipeline_dir), "--n", "3", "--steps", "2", "--out", str(out)]
    assert _cli(args, monkeypatch, capsys)[0] == 0
    pairs = load_pairs(out)
    assert len(pairs) == 3 and pairs.info["steps"] == 2 and pairs.info["guidance"] == 5.0
    code, text = _cli(args, monkeypatch, capsys)
    assert code != 0 and "--overwrite" in text
    assert _cli([*args, "--overwrite"], monkeypatch, capsys)[0] == 0
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign))
    code, text = _cli([*args[:-1], str(foreign), "--overwrite"], monkeypatch, capsys)
    assert code != 0 and "not a teacher pair file" in text and "Traceback" not in text
    assert load_file(str(foreign))["w"].shape == (1,)  # untouched
    code, text = _cli(["data", "pairs", "--model", str(tiny_pipeline_dir), "--guidance", "0.5",
                       "--out", str(tmp_path / "x.safetensors")], monkeypatch, capsys)
    assert code != 0 and "--guidance" in text


def test_init_unet_starts_the_full_unet_generator_from_given_weights(tiny_pipeline_dir, tiny_pairs, tmp_path):
    """--init-unet: the full-UNet generator starts from the weights given (a pipeline folder, a UNet
    folder or a file), not from base + LoRA; a foreign file or a LoRA-generator recipe is refused."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(tmp_path / "trained-unet")
    keys = "dmd_weight: 0, regression_weight: 1.0, generator: unet"
    recipe = _recipe(tmp_path, tiny_pairs, keys, iterations=1)
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run", init_unet=tmp_path / "trained-unet")
    started = run.generator_unet(0).state_dict()
    for name, tensor in unet.state_dict().items():
        assert torch.equal(started[name], tensor), name
    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="does not fit this model"):
        Run(recipe, tiny_pipeline_dir, tmp_path / "run2", init_unet=tmp_path / "foreign.safetensors").generator_unet(0)
    with pytest.raises(UserError, match="no UNet weights in"):
        Run(recipe, tiny_pipeline_dir, tmp_path / "run3", init_unet=tmp_path)
    lora_recipe = _recipe(tmp_path, tiny_pairs, "dmd_weight: 0, regression_weight: 1.0", iterations=1)
    with pytest.raises(UserError, match="needs a dmd stage with dmd.generator: unet"):
        Run(lora_recipe, tiny_pipeline_dir, tmp_path / "run4", init_unet=tmp_path / "trained-unet")


def test_full_unet_generator_keeps_its_weights_every_save_lora_every_steps(tiny_pipeline_dir, tiny_pairs, tmp_path):
    """training.save_lora_every with a full-UNet generator: RUN/snapshots/<stage>-unet-<step> holds the
    generator's weights at that step, equal to the checkpoint's (a later step's differ: it is not the end)."""
    from hypersd.train.outputs import snapshot_unet

    recipe = _recipe(tmp_path, tiny_pairs, "dmd_weight: 0, regression_weight: 1.0, generator: unet", iterations=3,
                     extra=["training.save_lora_every=2", "training.checkpoint_every=2"])
    run = Run(recipe, tiny_pipeline_dir, tmp_path / "run")
    run.train()
    kept = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert kept == [snapshot_unet(tmp_path / "run", "one-step-t800", 2).name]
    assert kept == ["one-step-t800-unet-0000002.safetensors"]
    at_2 = load_file(tmp_path / "run" / "snapshots" / kept[0])
    checkpoint_2 = load_file(tmp_path / "run" / "checkpoints" / "s00-0000002" / "generator.safetensors")
    assert at_2.keys() == checkpoint_2.keys()
    assert all(torch.equal(at_2[k], checkpoint_2[k]) for k in at_2)
    final = run.generator_unet(0).state_dict()
    assert any(not torch.equal(at_2[k], final[k]) for k in at_2)


def test_merge_pairs_concatenates_files_of_one_sampler(tmp_path, monkeypatch, capsys):
    a, b = _pairs(3), _pairs(2)
    b.info = {"steps": 2, "seed": 9}
    save_pairs(tmp_path / "a.safetensors", a)
    save_pairs(tmp_path / "b.safetensors", b)
    monkeypatch.setattr(sys, "argv", ["hypersd", "data", "merge-pairs", str(tmp_path / "a.safetensors"),
                                      str(tmp_path / "b.safetensors"), "--out", str(tmp_path / "ab.safetensors")])
    with pytest.raises(SystemExit) as info:
        main()
    assert (info.value.code or 0) == 0, capsys.readouterr().err
    merged = load_pairs(tmp_path / "ab.safetensors")
    assert torch.equal(merged.noise, torch.cat([a.noise, b.noise])) and merged.captions == a.captions + b.captions
    assert merged.info["seeds"] == [None, 9] and merged.info["steps"] == 2
    other = _pairs(2)
    other.info = {"steps": 4}
    save_pairs(tmp_path / "c.safetensors", other)
    from hypersd.data.pairs import merge_pairs

    with pytest.raises(UserError, match="other settings"):
        merge_pairs([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
