from dataclasses import dataclass

from hypersd.embedded.evaluator.judge import judge
from hypersd.shapes.captions import parse_caption


@dataclass
class Obj:
    color: str
    shape: str
    size: str
    cx: float
    cy: float


def test_single_and_size():
    c = parse_caption("a large red circle")
    assert judge([Obj("red", "circle", "large", 16, 16)], c)
    assert not judge([Obj("red", "circle", "small", 16, 16)], c)
    assert not judge([Obj("red", "circle", "large", 16, 16), Obj("blue", "square", "small", 4, 4)], c)
    assert not judge([], c)


def test_position_region():
    c = parse_caption("a blue square in the bottom right")
    assert judge([Obj("blue", "square", "small", 24, 24)], c)
    assert not judge([Obj("blue", "square", "small", 16, 16)], c)


def test_counting_needs_exact_number_and_attributes():
    c = parse_caption("two red crosses")
    two = [Obj("red", "cross", "small", 5, 5), Obj("red", "cross", "large", 20, 20)]
    assert judge(two, c)
    assert not judge(two + [Obj("red", "cross", "small", 27, 5)], c)
    assert not judge([two[0], Obj("blue", "cross", "small", 20, 20)], c)


def test_relation_either_order_of_detections():
    c = parse_caption("a red circle above a blue square")
    a, b = Obj("red", "circle", "small", 10, 5), Obj("blue", "square", "small", 10, 20)
    assert judge([a, b], c) and judge([b, a], c)
    assert not judge([Obj("red", "circle", "small", 10, 25), b], c)


def test_two_objects_and_color_attr():
    c = parse_caption("a red circle and a blue circle")
    assert judge([Obj("blue", "circle", "small", 5, 5), Obj("red", "circle", "small", 20, 20)], c)
    assert not judge([Obj("red", "circle", "small", 5, 5), Obj("red", "circle", "small", 20, 20)], c)
