from collections import Counter

import pytest

from hypersd.assets import STANDARD_PROMPTS
from hypersd.errors import UserError
from hypersd.inference.prompts import read_prompt_file
from hypersd.shapes.captions import parse_caption
from hypersd.shapes.prompts import standard_prompts


def test_standard_set_is_balanced_and_fixed():
    prompts = standard_prompts()
    assert len(prompts) >= 600 and prompts == standard_prompts()
    counts = Counter(parse_caption(p).category for p in prompts)
    assert set(counts.values()) == {100}


def test_longer_standard_sets_start_with_the_600():
    assert standard_prompts(1200)[:600] == standard_prompts(600)


def test_shipped_prompt_file_is_the_standard_set():
    assert read_prompt_file(STANDARD_PROMPTS) == standard_prompts()


def test_txt_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\n\n two blue squares \n")
    assert read_prompt_file(tmp_path / "p.txt") == ["a red circle", "two blue squares"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a red circle"}\n')
    assert read_prompt_file(tmp_path / "p.jsonl") == ["a red circle"]


@pytest.mark.parametrize("name,text", [("p.jsonl", "{not json\n"), ("q.jsonl", '{"text": "x"}\n'),
                                       ("r.txt", "\n\n"), ("s.txt", b"\xff\xfe\xfa")])
def test_bad_prompt_files_raise_user_errors(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError):
        read_prompt_file(path)
