import json
import sys

import numpy as np
import pytest

from hypersd.cli import main
from hypersd.data.imagefolder import load_images, read_image_folder
from hypersd.shapes.captions import parse_caption


def run_ok(args, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hypersd", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)


def test_data_shapes_writes_a_readable_dataset(tmp_path, monkeypatch):
    out = tmp_path / "shapes"
    run_ok(["data", "shapes", "--n", "24", "--out", str(out), "--seed", "3"], monkeypatch)
    folder = read_image_folder(out)
    assert len(folder) == 24 and folder.skipped == {}
    images, captions = load_images(folder, 32)
    assert images.shape == (24, 32, 32, 3) and np.std(images) > 10
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for record in records:
        caption = parse_caption(record["prompt"])
        assert caption.category == record["category"]
        assert len(record["objects"]) == len(caption.objects)
    again = tmp_path / "again"
    run_ok(["data", "shapes", "--n", "24", "--out", str(again), "--seed", "3"], monkeypatch)
    assert (again / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()


def test_data_prompts(tmp_path, monkeypatch):
    out = tmp_path / "p.txt"
    run_ok(["data", "prompts", "--n", "12", "--out", str(out)], monkeypatch)
    lines = out.read_text().splitlines()
    assert len(lines) == 12 and len({parse_caption(x).category for x in lines}) == 6
