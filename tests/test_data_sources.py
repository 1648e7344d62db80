"""Training data sources: tar shards (streamed), transforms and buckets, latent caches, `hypersd cache`."""

import io
import json
import shutil
import sys
import tarfile

import pytest
import torch
from PIL import Image

from hypersd.data.batches import BucketedLatentPool, CacheBatches, ShardStreamBatches, batch_source
from hypersd.data.cache import LatentCache
from hypersd.data.shards import ShardStream, expand_braces
from hypersd.data.transforms import ImageTransform, fit, make_buckets, nearest_bucket
from hypersd.errors import UserError
from hypersd.train.checkpoint import latest_checkpoint
from hypersd.train.recipe import Data

COLORS = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange", "gray", "pink", "cyan", "brown"]


def _image_bytes(size=(16, 16), color="red", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _good_shards(folder, shards=3, per_shard=4, size=(16, 16)):
    folder.mkdir(exist_ok=True)
    for s in range(shards):
        members = []
        for j in range(per_shard):
            color = COLORS[(s * per_shard + j) % len(COLORS)]
            key = f"{s:02d}{j:04d}"
            members += [(f"{key}.png", _image_bytes(size, color)), (f"{key}.txt", f"s{s}-{j}".encode())]
        _tar(folder / f"shard-{s:03d}.tar", members)
    return folder


@pytest.fixture(scope="module")
def vae(tiny_pipeline_dir):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(tiny_pipeline_dir / "vae").eval()


# ---------------------------------------------------------------- transforms and buckets
def test_center_crop_records_sdxl_size_conditioning():
    image = Image.new("RGB", (20, 40), "red")          # 40 high, 20 wide
    fitted = fit(image, (16, 16), "center")
    # resized to cover 16x16: 32 high, 16 wide; centred crop starts 8 rows down
    assert fitted.time_ids == (40, 20, 8, 0, 16, 16) and fitted.array.shape == (16, 16, 3)
    tops = {fit(image, (16, 16), "random", __import__("random").Random(s)).time_ids[2] for s in range(40)}
    assert tops <= set(range(17)) and len(tops) > 5
    square = Image.new("RGB", (32, 32), "blue")
    assert fit(square, (32, 32)).time_ids == (32, 32, 0, 0, 32, 32)


def test_buckets_have_the_area_and_pick_the_nearest_aspect():
    assert make_buckets(32) == [(24, 48), (24, 40), (32, 32), (40, 24), (48, 24)]
    big = make_buckets(1024)
    assert all(h % 64 == 0 and w % 64 == 0 and abs(h * w / 1024 ** 2 - 1) < 0.1 for h, w in big)
    assert (1024, 1024) in big and len(big) == len(set(big))
    assert nearest_bucket(20, 40, make_buckets(32)) == (24, 48)
    assert nearest_bucket(40, 28, make_buckets(32)) == (40, 24)   # ratio 1.43: 5/3 nearer than 1
    assert nearest_bucket(31, 32, make_buckets(32)) == (32, 32)
    transform = ImageTransform(32, "center", make_buckets(32))
    assert transform(Image.new("RGB", (100, 50))).array.shape == (24, 48, 3)


def test_brace_patterns_expand_with_padding():
    assert expand_braces("/d/s-{000008..000010}.tar") == ["/d/s-000008.tar", "/d/s-000009.tar", "/d/s-000010.tar"]
    assert expand_braces("{a,b}-{1..2}.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"]


# ---------------------------------------------------------------- tar shards
def test_tar_shards_skip_and_count_bad_items(vae, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    _tar(folder / "a.tar", [("c.png", b"not an image"), ("c.txt", b"broken"),
                            ("d.png", _image_bytes()),                                  # no caption
                            ("a.jpg", _image_bytes(color="green", fmt="JPEG")), ("a.txt", b"a green square")])
    _tar(folder / "b.tar", [("f.txt", b"caption without image"),
                            ("b.png", _image_bytes((40, 20), "blue")),
                            ("b.json", json.dumps({"caption": "blue"}).encode()),
                            ("e.webp", _image_bytes(color="red", fmt="WEBP")), ("e.txt", b"red")])
    pool = batch_source(vae, Data(source=str(folder), resolution=16, shuffle_buffer=1))
    assert isinstance(pool, ShardStreamBatches)
    drawn = pool.draw(3)
    assert drawn.latents.shape == (3, 4, 4, 4) and torch.isfinite(drawn.latents).all()
    assert sorted(drawn.captions) == ["a green square", "blue", "red"]
    assert pool.skipped == {"unreadable image": 1, "no caption": 1, "no image": 1}
    row = drawn.captions.index("blue")
    assert drawn.time_ids[row].tolist() == [20, 40, 0, 8, 16, 16]  # 20 high, 40 wide -> 16x32: crop 8 from the left
    info = pool.info()
    assert info["shards"] == 2 and info["skipped"]["no caption"] == 1


def test_stream_reads_shards_lazily_in_seeded_order(tmp_path):
    folder = _good_shards(tmp_path / "s")
    pattern = str(folder / "shard-{000..002}.tar")
    stream = ShardStream(pattern, ImageTransform(16), seed=5, shuffle_buffer=2)
    first = stream.next_batch(2)
    assert len(stream.opened) == 1                      # 2 items: the first shard of the order only
    shard = int(stream.opened[0].name[6:9])
    assert all(caption.startswith(f"s{shard}-") for caption, _ in first)
    rest = stream.next_batch(10)
    assert sorted(stream.opened) == sorted(folder.glob("*.tar"))
    epoch = [c for c, _ in first + rest]
    assert sorted(epoch) == sorted(f"s{s}-{j}" for s in range(3) for j in range(4))
    again = ShardStream(pattern, ImageTransform(16), seed=5, shuffle_buffer=2)
    assert [c for c, _ in again.next_batch(12)] == epoch and again.opened == stream.opened
    other = ShardStream(pattern, ImageTransform(16), seed=6, shuffle_buffer=2)
    assert [c for c, _ in other.next_batch(12)] != epoch
    assert [c for c, _ in stream.next_batch(12)] != epoch and stream.epoch == 1  # the next epoch reshuffles


def test_stream_resumes_where_it_stopped_and_ranks_read_different_shards(tmp_path):
    pattern = str(_good_shards(tmp_path / "s") / "*.tar")
    whole = ShardStream(pattern, ImageTransform(16), seed=1, shuffle_buffer=3)
    whole.next_batch(5)
    state = whole.state_dict()
    assert state == {"epoch": 0, "consumed": 5}
    expected = [c for c, _ in whole.next_batch(9)]      # crosses into epoch 1
    resumed = ShardStream(pattern, ImageTransform(16), seed=1, shuffle_buffer=3)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert [c for c, _ in resumed.next_batch(9)] == expected
    ranks = [ShardStream(pattern, ImageTransform(16), seed=1, rank=r, world_size=2) for r in (0, 1)]
    items = [{c for c, _ in r.next_batch(4)} for r in ranks]
    assert not set(ranks[0].opened) & set(ranks[1].opened) and not items[0] & items[1]
    many = [ShardStream(pattern, ImageTransform(16), seed=1, rank=r, world_size=4) for r in range(4)]
    parts = [{c for c, _ in r.next_batch(3)} for r in many]   # 3 shards, 4 ranks: items interleaved
    assert set().union(*parts) == {f"s{s}-{j}" for s in range(3) for j in range(4)}


def test_stream_batches_come_from_one_bucket(vae, tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    members = []
    for i, size in enumerate([(48, 24), (24, 48), (48, 24), (24, 48), (50, 26), (26, 50)]):
        members += [(f"{i:03d}.png", _image_bytes(size, COLORS[i])), (f"{i:03d}.txt", f"i{i}".encode())]
    _tar(folder / "x.tar", members)
    pool = batch_source(vae, Data(source=str(folder / "x.tar"), resolution=32, buckets=True, shuffle_buffer=4))
    shapes = set()
    for _ in range(4):
        drawn = pool.draw(2)
        assert drawn.time_ids[0, 4:].tolist() == drawn.time_ids[1, 4:].tolist()
        shapes.add(tuple(drawn.latents.shape))
    assert shapes == {(2, 4, 6, 12), (2, 4, 12, 6)}


def test_all_bad_data_stops_with_the_counts(vae, tmp_path):
    shards = tmp_path / "bad"
    shards.mkdir()
    _tar(shards / "0.tar", [("a.png", b"garbage"), ("a.txt", b"x"), ("b.png", _image_bytes())])
    (shards / "1.tar").write_bytes(b"not a tar file" * 50)
    with pytest.raises(UserError, match=r"no usable training items in tar shards .*2 shards; "
                                        r"1 no caption, 1 unreadable image, 1 unreadable shard\)"):
        batch_source(vae, Data(source=str(shards)))
    empty = tmp_path / "empty"
    empty.mkdir()
    _tar(empty / "0.tar", [])
    with pytest.raises(UserError, match="no items"):
        batch_source(vae, Data(source=str(empty / "0.tar")))
    with pytest.raises(UserError, match="tar shards .* not found"):
        batch_source(vae, Data(source=str(tmp_path / "s-{0..3}.tar")))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"garbage")
    (folder / "x.txt").write_text("x")
    with pytest.raises(UserError, match=r"no usable training images .*1 unreadable image"):
        batch_source(vae, Data(source=str(folder)))


# ---------------------------------------------------------------- image folders
def _folder(root, sizes):
    root.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, COLORS[i]).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"c{i}")
    return root


def test_image_folder_pool_crops_and_buckets(vae, tmp_path):
    pool = batch_source(vae, Data(source=str(_folder(tmp_path / "f", [(20, 40)])), resolution=16))
    drawn = pool.draw(2)
    assert drawn.latents.shape == (2, 4, 4, 4) and drawn.time_ids.tolist() == [[40, 20, 8, 0, 16, 16]] * 2
    buckets = batch_source(vae, Data(source=str(_folder(tmp_path / "g", [(48, 24), (24, 48), (30, 60)])),
                                   resolution=32, buckets=True))
    assert isinstance(buckets, BucketedLatentPool) and buckets.info()["buckets"] == {"24x48": 1, "48x24": 2}
    torch.manual_seed(0)
    assert {tuple(buckets.draw(2).latents.shape) for _ in range(8)} == {(2, 4, 6, 12), (2, 4, 12, 6)}


# ---------------------------------------------------------------- latent caches
def _cli(args, monkeypatch, capsys):
    from hypersd.cli import main

    monkeypatch.setattr(sys, "argv", ["hypersd", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code or 0, capsys.readouterr()


@pytest.fixture(scope="module")
def cache_dir(tiny_pipeline_dir, tmp_path_factory):
    from hypersd.data.cache import write_cache

    root = tmp_path_factory.mktemp("cache")
    images = _folder(root / "images", [(20, 40), (16, 16), (32, 24), (40, 40), (16, 32)])
    (images / "bad.png").write_bytes(b"garbage")
    (images / "bad.txt").write_text("bad")
    write_cache(tiny_pipeline_dir, str(images), root / "cache", resolution=16, batch_size=2,
                max_shard_bytes=3000)
    return root / "cache"


def test_cache_command_writes_index_and_shards(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    images = _folder(tmp_path / "images", [(20, 40), (16, 16), (32, 24)])
    (images / "x.png").write_bytes(b"garbage")
    (images / "x.txt").write_text("x")
    out = tmp_path / "cache"
    code, captured = _cli(["cache", "--model", str(tiny_pipeline_dir), "--data", str(images), "--out", str(out),
                           "--resolution", "16", "--batch-size", "2"], monkeypatch, capsys)
    assert code == 0 and "wrote 3 items" in captured.out
    index = json.loads((out / "cache-index.json").read_text())
    assert index["count"] == 3 and index["skipped"] == {"unreadable image": 1} and index["resolution"] == 16
    assert index["shapes"]["mean"] == [4, 4, 4] and index["shapes"]["time_ids"] == [6]
    assert index["shapes"]["hidden_states"][1] == 32 and index["fingerprint"]["name"] == tiny_pipeline_dir.name
    assert [s["file"] for s in index["shards"]] == ["cache-00000.safetensors"]
    assert not (tmp_path / "cache.tmp").exists()


def test_cache_source_returns_the_adapters_text_conditioning(cache_dir, tiny_pipeline_dir, vae):
    from hypersd.models.sd import load_model

    cache = LatentCache(cache_dir)
    assert len(cache) == 5 and len(cache.files) > 1     # small shards: several files
    pool = batch_source(vae, Data(source=str(cache_dir), resolution=16), model_dir=tiny_pipeline_dir)
    assert isinstance(pool, CacheBatches)
    torch.manual_seed(0)
    drawn = pool.draw(6)
    assert drawn.latents.shape == (6, 4, 4, 4) and drawn.time_ids.shape == (6, 6)
    expected = load_model(tiny_pipeline_dir).encode_prompts(drawn.captions)
    torch.testing.assert_close(drawn.cond.hidden_states, expected.hidden_states, rtol=0, atol=0)
    assert drawn.cond.extra is None
    torch.manual_seed(0)
    again = pool.draw(6)                                  # the global RNG decides, as for in-memory pools
    assert again.captions == drawn.captions and torch.equal(again.latents, drawn.latents)
    row = cache.captions.index("c0")
    assert cache.rows(cache.locate([row]), "time_ids").tolist() == [[40, 20, 8, 0, 16, 16]]
    image = torch.tensor(fit(Image.new("RGB", (20, 40), COLORS[0]), (16, 16)).array).permute(2, 0, 1)
    with torch.no_grad():
        mean = vae.encode(image[None].float() / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(cache.rows(cache.locate([row]), "mean"), mean, rtol=1e-3, atol=1e-4)  # batch of 2 vs 1
    i = drawn.captions.index("c0") if "c0" in drawn.captions else 0
    item = cache.captions.index(drawn.captions[i])
    assert (cache.rows(cache.locate([item]), "std") > 0).all()          # latents are re-sampled, not the mean
    assert not torch.allclose(drawn.latents[i], cache.rows(cache.locate([item]), "mean")[0] * pool.scaling_factor)


def test_a_cache_from_another_model_or_resolution_is_refused(cache_dir, tiny_pipeline_dir, vae, tmp_path):
    other = tmp_path / "other-sd"
    shutil.copytree(tiny_pipeline_dir, other)
    with pytest.raises(UserError, match="was made with model .*fingerprint differs in name"):
        batch_source(vae, Data(source=str(cache_dir), resolution=16), model_dir=other)
    config = json.loads((other / "unet" / "config.json").read_text())
    shutil.rmtree(other / "unet")
    (other / "unet").mkdir()
    (other / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 8}))
    with pytest.raises(UserError, match="config_sha256, name, unet_in_channels"):
        batch_source(vae, Data(source=str(cache_dir), resolution=16), model_dir=other)
    with pytest.raises(UserError, match="resolution differs"):
        batch_source(vae, Data(source=str(cache_dir), resolution=32), model_dir=tiny_pipeline_dir)
    with pytest.raises(UserError, match="one image size"):
        batch_source(vae, Data(source=str(cache_dir), resolution=16, buckets=True), model_dir=tiny_pipeline_dir)


def test_an_sdxl_cache_keeps_pooled_embeddings_and_size_ids(tiny_sdxl_dir, tmp_path):
    from diffusers import AutoencoderKL

    from hypersd.data.cache import write_cache
    from hypersd.models.sd import load_model

    images = _folder(tmp_path / "images", [(20, 40), (32, 32)])
    index = write_cache(tiny_sdxl_dir, str(images), tmp_path / "cache", resolution=16)
    assert set(index["shapes"]) >= {"extra.text_embeds", "time_ids"}
    assert "extra.time_ids" not in index["shapes"]  # the size ids are stored once
    assert len(index["fingerprint"]["text_hidden_size"]) == 2
    vae = AutoencoderKL.from_pretrained(tiny_sdxl_dir / "vae")
    pool = batch_source(vae, Data(source=str(tmp_path / "cache"), resolution=16), model_dir=tiny_sdxl_dir)
    torch.manual_seed(0)
    drawn = pool.draw(3)
    expected = load_model(tiny_sdxl_dir).encode_prompts(drawn.captions, time_ids=drawn.time_ids)
    torch.testing.assert_close(drawn.cond.hidden_states, expected.hidden_states, rtol=0, atol=0)
    # the pooled embeddings were encoded in other batches than these three: float noise (5e-7 with transformers
    # 5.25), nothing more; the size ids are integers and stay exact
    torch.testing.assert_close(drawn.cond.extra["text_embeds"], expected.extra["text_embeds"], rtol=0, atol=1e-5)
    torch.testing.assert_close(drawn.cond.extra["time_ids"], expected.extra["time_ids"], rtol=0, atol=0)
    assert "c0" in drawn.captions
    assert drawn.cond.extra["time_ids"][drawn.captions.index("c0")].tolist() == [40, 20, 8, 0, 16, 16]


@pytest.mark.parametrize("data,message", [("missing", "data source not found"),
                                          ("shapes", "must be an image folder or tar shards")])
def test_cache_command_errors_are_one_line_and_write_nothing(tiny_pipeline_dir, tmp_path, monkeypatch, capsys,
                                                             data, message):
    out = tmp_path / "out" / "cache"
    source = str(tmp_path / data) if data == "missing" else data
    code, captured = _cli(["cache", "--model", str(tiny_pipeline_dir), "--data", source, "--out", str(out)],
                          monkeypatch, capsys)
    assert code == 2 and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert message in captured.err and not (tmp_path / "out").exists()


def test_cache_of_unusable_data_writes_nothing(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    _tar(shards / "0.tar", [("a.png", b"garbage"), ("a.txt", b"x")])
    code, captured = _cli(["cache", "--model", str(tiny_pipeline_dir), "--data", str(shards),
                           "--out", str(tmp_path / "c")], monkeypatch, capsys)
    assert code == 2 and "1 unreadable image" in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.tmp").exists()


def test_recipe_validates_the_data_keys():
    from hypersd.train.recipe import Recipe

    for bad in ({"crop": "top"}, {"shuffle_buffer": 0}, {"bucket_step": 12}):
        recipe = Recipe()
        for key, value in bad.items():
            setattr(recipe.data, key, value)
        with pytest.raises(UserError, match="recipe data"):
            recipe.validate()


# ---------------------------------------------------------------- the distillation run
def _run_recipe(tmp_path, source, iterations=4):
    from hypersd.train.recipe import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text("name: tiny\n"
                    f"stages:\n  - {{segments: 2, iterations: {iterations}, learning_rate: 1.0e-3}}\n"
                    "lora: {rank: 2, alpha: 2, targets: [to_q, to_v]}\n"
                    f"data: {{source: '{source}', resolution: 16, shuffle_buffer: 2}}\n"
                    "samples: {prompts: 2}\n")
    return load_recipe(path, ["training.batch_size=2", "training.checkpoint_every=2"])


def test_a_run_on_tar_shards_logs_skips_and_resumes_the_stream_exactly(tiny_pipeline_dir, tmp_path):
    from safetensors.torch import load_file

    from hypersd.train.run import Run

    folder = _good_shards(tmp_path / "shards", shards=2, per_shard=3)
    _tar(folder / "shard-009.tar", [("bad.png", b"garbage"), ("bad.txt", b"bad")])
    recipe = _run_recipe(tmp_path, folder)
    Run(recipe, tiny_pipeline_dir, tmp_path / "whole").train()
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(stop_after=2)
    position = json.loads((latest_checkpoint(tmp_path / "killed") / "state.json").read_text())
    assert position["step"] == 2 and position["data"][0]["epoch"] == 0
    assert position["data"][0]["consumed"] in (4, 5)     # 2 batches of 2 (+ the bad item if it came first)
    Run(recipe, tiny_pipeline_dir, tmp_path / "killed").train(resume=True)
    whole = load_file(tmp_path / "whole" / "loras" / "tscd-k2.safetensors")
    resumed = load_file(tmp_path / "killed" / "loras" / "tscd-k2.safetensors")
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    data = [r for r in log if r.get("event") == "data"]
    assert data[0]["shards"] == 3 and data[-1]["skipped"] == {"unreadable image": 1}


def test_a_run_on_a_latent_cache_uses_the_cached_conditioning(cache_dir, tiny_pipeline_dir, tmp_path, monkeypatch):
    from hypersd.train.run import Run

    run = Run(_run_recipe(tmp_path, cache_dir, iterations=2), tiny_pipeline_dir, tmp_path / "run")
    encoded = []
    original = run.model.encode_prompts
    monkeypatch.setattr(run.model, "encode_prompts", lambda captions, **kw: encoded.append(captions) or
                        original(captions, **kw))
    run.train()
    assert (tmp_path / "run" / "loras" / "tscd-k2.safetensors").is_file()
    assert encoded and all(c == [""] for c in encoded)  # only the empty prompt: no training batch was encoded
