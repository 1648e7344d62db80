import pytest

from hypersd.shapes.captions import Wanted, parse_caption


def test_parse_each_category():
    assert parse_caption("a large red circle").objects == (Wanted("red", "circle", "large"),)
    assert parse_caption("a red circle").objects == (Wanted("red", "circle", None),)
    p = parse_caption("a cyan cross in the top left")
    assert (p.category, p.region) == ("position", "top left")
    assert parse_caption("a red circle and a red square").category == "two_objects"
    assert parse_caption("a red circle and a blue circle").category == "color_attr"
    c = parse_caption("three green crosses")
    assert c.category == "counting" and c.objects == (Wanted("green", "cross"),) * 3
    r = parse_caption("a red circle to the right of a red square")
    assert (r.category, r.relation) == ("relation", "to the right of")


@pytest.mark.parametrize("bad", [
    "", "a red circle.", "a pink circle", "four red circles", "a red circle and a red circle",
    "a red circle above a red circle", "a red circle in the middle", "A red circle",
])
def test_rejects_text_outside_the_grammar(bad):
    with pytest.raises(ValueError):
        parse_caption(bad)
