"""Reward plug-ins: the Shapes clean reward, the LAION aesthetic predictor (tiny random CLIP), the
Shapes instance segmenter (annotations, loss, decoding, files) and the `hypersd rewards` CLI."""

import json
import random
import sys

import numpy as np
import pytest
import torch

from hypersd.cli import main
from hypersd.errors import UserError
from hypersd.rewards import convert_head, load_reward
from hypersd.rewards.segmenter import SegmenterConfig, ShapesSegmenter, decode_instances, instance_loss
from hypersd.shapes.annotations import NUM_CLASSES, class_name, dense_targets, instance_masks, object_class
from hypersd.shapes.batches import ShapesStream
from hypersd.shapes.world import sample_scene


def test_object_classes_round_trip():
    assert class_name(0) is None
    for color in ("red", "cyan"):
        for shape in ("circle", "cross"):
            assert class_name(object_class(color, shape)) == (color, shape)
    assert NUM_CLASSES == 25


def test_masks_cover_each_object_alone():
    rng = random.Random(3)
    for _ in range(20):
        scene = sample_scene(rng)
        masks = instance_masks(scene)
        assert masks.shape == (len(scene.objects), 32, 32)
        for obj, mask in zip(scene.objects, masks):
            area = float(mask.sum())
            box = obj.side ** 2
            expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}.get(obj.shape)
            if expected is not None:
                assert abs(area - expected * box) < 0.08 * box, (obj, area)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= obj.x and xs.max() <= obj.x + obj.side  # PIL polygons touch the far edge
        assert (masks.sum(0) <= 1.0 + 1e-6).all()  # objects never overlap


def test_dense_targets_point_to_centres():
    scenes = ShapesStream(1).scenes(8)
    t = dense_targets(scenes)
    for i, scene in enumerate(scenes):
        present = sorted(set(t["semantic"][i].unique().tolist()) - {0})
        assert present == sorted({object_class(o.color, o.shape) for o in scene.objects})
        for obj in scene.objects:  # centre pixel's offset points at most half a pixel away
            cx, cy = obj.center
            px, py = int(cx), int(cy)
            if t["foreground"][i, 0, py, px] > 0:
                assert abs(t["offset"][i, 0, py, px]) <= 0.5 and abs(t["offset"][i, 1, py, px]) <= 0.5
            assert t["center"][i, 0].max() > 0.8


def _perfect_prediction(targets):
    semantic = torch.nn.functional.one_hot(targets["semantic"], NUM_CLASSES).permute(0, 3, 1, 2).float() * 20
    return {"semantic": semantic, "center": targets["center"], "offset": targets["offset"]}


def test_instance_decoding_of_the_truth_recovers_every_object():
    scenes = ShapesStream(2).scenes(40)
    found = decode_instances(_perfect_prediction(dense_targets(scenes)))
    truth = [sorted((o.color, o.shape) for o in s.objects) for s in scenes]
    assert sum(f == t for f, t in zip(found, truth)) >= 38


def test_instance_loss_ranks_and_differentiates():
    torch.manual_seed(0)
    x, _, scenes = ShapesStream(3).batch(4)
    targets = dense_targets(scenes)
    config = SegmenterConfig()
    perfect = instance_loss(_perfect_prediction(targets), targets, config)
    model = ShapesSegmenter(config)
    image = x.clone().requires_grad_(True)
    random_loss = instance_loss(model(image), targets, config)
    assert perfect < 0.01 < random_loss.item()
    random_loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    per_image = instance_loss(model(x), targets, config, reduce=False)
    assert per_image.shape == (4,)


def test_segmenter_files_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ShapesSegmenter(SegmenterConfig(width=16)).eval()
    model.save(tmp_path / "seg")
    loaded = ShapesSegmenter.load(tmp_path / "seg")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(model(x)["semantic"], loaded(x)["semantic"])
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(UserError, match="segmenter weights not found"):
        ShapesSegmenter.load(tmp_path / "missing")


def test_clean_reward_orders_real_blurred_noisy_and_has_gradients():
    reward = load_reward("shapes-clean")
    x, captions, _ = ShapesStream(4).batch(32)
    noisy = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    real, blur, noise = (reward.score(v, captions).mean().item() for v in (x, blurred, noisy))
    assert 6.0 < real <= 10.0 and real > blur > noise and noise < 2.0
    image = noisy.clone().requires_grad_(True)
    reward.score(image, captions).sum().backward()
    assert image.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tiny_clip_aesthetic(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from hypersd.rewards.laion_aesthetic import AestheticHead

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("aesthetic")
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=24)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    head = AestheticHead(24)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(root / "head.safetensors"))
    torch.save(head.state_dict(), root / "head.pth")
    return root


def test_laion_aesthetic_scores_with_gradients(tiny_clip_aesthetic):
    reward = load_reward(f"laion-aesthetic:{tiny_clip_aesthetic / 'clip'},{tiny_clip_aesthetic / 'head.safetensors'}")
    assert not any(p.requires_grad for p in reward.parameters())
    images = (torch.rand(3, 3, 48, 40) * 2 - 1).requires_grad_(True)
    scores = reward.score(images, ["a", "b", "c"])
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert scores.std() > 0  # different images, different scores
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    half = reward.score(images.detach().to(torch.bfloat16), ["a", "b", "c"])
    assert torch.allclose(half, scores.detach(), atol=0.05)


def test_laion_aesthetic_missing_or_wrong_files(tiny_clip_aesthetic, tmp_path):
    clip, head = tiny_clip_aesthetic / "clip", tiny_clip_aesthetic / "head.safetensors"
    with pytest.raises(UserError, match="CLIP model folder not found"):
        load_reward(f"laion-aesthetic:{tmp_path / 'nope'},{head}")
    with pytest.raises(UserError, match="aesthetic head weights not found"):
        load_reward(f"laion-aesthetic:{clip},{tmp_path / 'nope.safetensors'}")
    with pytest.raises(UserError, match="must be .safetensors"):
        load_reward(f"laion-aesthetic:{clip},{tiny_clip_aesthetic / 'head.pth'}")
    with pytest.raises(UserError, match="needs CLIP_FOLDER,HEAD"):
        load_reward("laion-aesthetic:onlyone")
    with pytest.raises(UserError, match="unknown reward 'pickscore'"):
        load_reward("pickscore")


def test_convert_head_refuses_pickle_unless_allowed(tiny_clip_aesthetic, tmp_path):
    source = tiny_clip_aesthetic / "head.pth"
    with pytest.raises(UserError, match="pickle file"):
        convert_head(source, tmp_path / "h.safetensors", allow_pickle=False)
    out = convert_head(source, tmp_path / "h.safetensors", allow_pickle=True)
    a = load_reward(f"laion-aesthetic:{tiny_clip_aesthetic / 'clip'},{out}")
    b = load_reward(f"laion-aesthetic:{tiny_clip_aesthetic / 'clip'},{tiny_clip_aesthetic / 'head.safetensors'}")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(a.score(x, ["", ""]), b.score(x, ["", ""]))


def _cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hypersd", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_scores_an_image_folder(tmp_path, capsys, monkeypatch):
    code, _, err = _cli(["data", "shapes", "--n", "12", "--out", str(tmp_path / "real")], capsys, monkeypatch)
    assert code in (0, None), err
    code, out, err = _cli(["rewards", "score", str(tmp_path / "real")], capsys, monkeypatch)
    assert code in (0, None), err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["images"] == 12 and 6.0 < result["shapes-clean"] <= 10.0
    code, _, err = _cli(["rewards", "score", str(tmp_path / "real"), "--reward", "nope"], capsys, monkeypatch)
    assert code == 2 and err.strip() == "error: unknown reward 'nope'; choose one of shapes-clean, shapes-presence, laion-aesthetic, image-reward"


def _blip_name(key):
    """This module's key -> the released checkpoint's BLIP naming (the inverse of the converter)."""
    import re

    rules = [(r"^vision\.embeddings\.class_embedding$", "blip.visual_encoder.cls_token"),
             (r"^vision\.embeddings\.position_embedding$", "blip.visual_encoder.pos_embed"),
             (r"^vision\.embeddings\.patch_embedding\.", "blip.visual_encoder.patch_embed.proj."),
             (r"^vision\.encoder\.layers\.(\d+)\.layer_norm1\.", r"blip.visual_encoder.blocks.\1.norm1."),
             (r"^vision\.encoder\.layers\.(\d+)\.layer_norm2\.", r"blip.visual_encoder.blocks.\1.norm2."),
             (r"^vision\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blip.visual_encoder.blocks.\1.attn.qkv."),
             (r"^vision\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blip.visual_encoder.blocks.\1.attn.proj."),
             (r"^vision\.encoder\.layers\.(\d+)\.mlp\.", r"blip.visual_encoder.blocks.\1.mlp."),
             (r"^vision\.post_layernorm\.", "blip.visual_encoder.norm."),
             (r"^text\.", "blip.text_encoder."), (r"^head\.", "mlp.")]
    for pattern, repl in rules:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    raise AssertionError(key)


@pytest.fixture(scope="module")
def tiny_image_reward_release(tmp_path_factory):
    from transformers import BertTokenizer

    from hypersd.rewards.image_reward import ImageRewardNet, _config_from_shapes

    root = tmp_path_factory.mktemp("image-reward")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "and"]
    (root / "bert").mkdir()
    (root / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(root / "bert" / "vocab.txt")).save_pretrained(root / "bert")
    torch.manual_seed(0)
    net = ImageRewardNet({"vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                     "num_attention_heads": 1, "patch_size": 8, "image_size": 32, "layer_norm_eps": 1e-6},
                          "text": {"vocab_size": len(words) + 2, "hidden_size": 64, "encoder_hidden_size": 64,
                                   "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 1,
                                   "max_position_embeddings": 40, "layer_norm_eps": 1e-12}})
    release = {_blip_name(k): v for k, v in net.state_dict().items()}
    release["blip.text_encoder.embeddings.position_ids"] = torch.arange(40)[None]
    torch.save(release, root / "ImageReward.pt")
    assert _config_from_shapes(net.state_dict())["vision"]["image_size"] == 32
    return root, net


def test_image_reward_converts_the_release_and_scores_with_gradients(tiny_image_reward_release, tmp_path):
    from hypersd.rewards.image_reward import convert_release

    root, net = tiny_image_reward_release
    with pytest.raises(UserError, match="pickle file"):
        convert_release(root / "ImageReward.pt", root / "bert", tmp_path / "ir", allow_pickle=False)
    assert not (tmp_path / "ir").exists()
    convert_release(root / "ImageReward.pt", root / "bert", tmp_path / "ir", allow_pickle=True)
    reward = load_reward(f"image-reward:{tmp_path / 'ir'}")
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    scores = reward.score(images, ["a red circle", "a blue square and a red circle"])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and scores[0] != scores[1]
    scores.sum().backward()
    assert images.grad.abs().sum() > 0
    # the same numbers as the network built directly, fed the same tokens (conversion is exact)
    tokens = reward.tokenizer(["a red circle"], padding="max_length", truncation=True, max_length=35,
                              return_tensors="pt")
    from hypersd.rewards.laion_aesthetic import clip_preprocess

    net.eval()
    direct = net(clip_preprocess(images[:1].detach(), 32), tokens.input_ids, tokens.attention_mask)
    torch.testing.assert_close(direct, scores[:1].detach())
    with pytest.raises(UserError, match="ImageReward folder incomplete"):
        load_reward(f"image-reward:{tmp_path / 'nope'}")


def test_named_objects_and_reward_scores_of_a_perfect_segmenter(monkeypatch):
    from hypersd.embedded import reward_report as report
    from hypersd.shapes.world import render_array

    assert report.named_objects("two red circles") == [("red", "circle"), ("red", "circle")]
    assert report.named_objects("a blue cross to the left of a red square") == [("blue", "cross"), ("red", "square")]
    scenes = ShapesStream(9).scenes(12)
    images, prompts = render_array(scenes), [s.caption for s in scenes]
    truth = dense_targets(scenes)

    class Oracle(torch.nn.Module):  # answers with the ground truth of these scenes
        def forward(self, x):
            return _perfect_prediction(truth)

    scores = report.reward_scores(images, prompts, Oracle())
    assert scores["segmenter_agreement"] >= 11 / 12 and 6.0 < scores["shapes_clean"] <= 10.0
    assert scores["shapes_presence"] > 9.0
    swapped = report.reward_scores(images, prompts[1:] + prompts[:1], Oracle())
    assert swapped["segmenter_agreement"] < 0.5  # wrong prompts: the named objects are not there
    assert swapped["shapes_presence"] < scores["shapes_presence"] - 3.0


def test_presence_reward_wants_the_named_objects_and_nothing_else():
    reward = load_reward("shapes-presence")
    scenes = ShapesStream(21).scenes(40)
    from hypersd.shapes.batches import to_tensor
    from hypersd.shapes.world import render_array

    x = to_tensor(render_array(scenes))
    right = reward.score(x, [s.caption for s in scenes]).mean().item()
    wrong = reward.score(x, [s.caption for s in scenes[1:] + scenes[:1]]).mean().item()
    empty = torch.ones_like(x[:4]) * 0.8  # a pale empty canvas
    nothing = reward.score(empty, [s.caption for s in scenes[:4]]).mean().item()
    assert right > 9.0 and wrong < 4.0 and nothing < 2.0, (right, wrong, nothing)
    image = x[:2].clone().requires_grad_(True)
    reward.score(image, [s.caption for s in scenes[:2]]).sum().backward()
    assert image.grad is not None
