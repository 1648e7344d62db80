"""Judge a set of detected objects against a caption, exactly as shapes-world.md defines."""

from __future__ import annotations

from collections import Counter

from hypersd.shapes.captions import Caption, Wanted
from hypersd.shapes.world import region_of, relation_holds


def _matches(obj, wanted: Wanted) -> bool:
    return obj.color == wanted.color and obj.shape == wanted.shape and (
        wanted.size is None or obj.size == wanted.size)


def judge(objects: list, caption: Caption) -> bool:
    """True when the objects (anything with shape, color, size, cx, cy) satisfy the caption.

    The canvas must hold exactly the objects named: same number, each with the stated shape and
    colour (and size where stated), the region or relation holding where stated.
    """
    if len(objects) != len(caption.objects):
        return False
    if caption.category in ("single", "position"):
        obj = objects[0]
        if not _matches(obj, caption.objects[0]):
            return False
        return caption.region is None or region_of(obj.cx, obj.cy) == caption.region
    if caption.category == "relation":
        first, second = caption.objects
        for a, b in (objects, objects[::-1]):
            if _matches(a, first) and _matches(b, second):
                return relation_holds(caption.relation, (a.cx, a.cy), (b.cx, b.cy))
        return False
    have = Counter((o.color, o.shape) for o in objects)
    want = Counter((w.color, w.shape) for w in caption.objects)
    return have == want
