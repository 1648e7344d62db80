import json

import numpy as np
from PIL import Image

from hypersd.data.imagefolder import load_images, read_image_folder, write_image_folder


def test_samples_jsonl_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8)
    write_image_folder(tmp_path, images, [{"prompt": f"p{i}", "seed": i} for i in range(3)])
    folder = read_image_folder(tmp_path)
    assert folder.captions == ["p0", "p1", "p2"] and folder.skipped == {}
    loaded, captions = load_images(folder, 32)
    assert (loaded == images).all()


def test_sidecar_captions_skip_and_count_bad_files(tmp_path):
    Image.new("RGB", (40, 40), "red").save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red square\n")
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "b.png")  # no caption
    (tmp_path / "c.png").write_bytes(b"not a png at all")
    (tmp_path / "c.txt").write_text("broken")
    folder = read_image_folder(tmp_path)
    assert folder.captions == ["a red square"]
    assert folder.skipped == {"no caption": 1, "unreadable image": 1}
    images, _ = load_images(folder, 32)
    assert images.shape == (1, 32, 32, 3)


def test_bad_jsonl_lines_and_missing_files_are_counted(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    lines = [json.dumps({"file": "x.png", "prompt": "ok"}), "{broken", json.dumps({"file": "gone.png", "prompt": "p"})]
    (tmp_path / "samples.jsonl").write_text("\n".join(lines))
    folder = read_image_folder(tmp_path)
    assert len(folder) == 1
    assert folder.skipped == {"bad samples.jsonl line": 1, "missing image": 1}
