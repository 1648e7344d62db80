"""Caption grammar of the Shapes world: parse any caption back into its structured meaning."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypersd.shapes.world import COLORS, COUNT_WORDS, PLURALS, REGIONS, RELATIONS, SHAPES, SIZES

_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES)
_PLURAL = "|".join(PLURALS.values())
_SIZE = "|".join(SIZES)
_REGION = "|".join(REGIONS)
_RELATION = "|".join(RELATIONS)
_COUNT = "|".join(COUNT_WORDS.values())
_SINGULAR_OF = {plural: shape for shape, plural in PLURALS.items()}
_NUMBER_OF = {word: n for n, word in COUNT_WORDS.items()}

_PATTERNS = {
    "single": re.compile(rf"a (?:(?P<size>{_SIZE}) )?(?P<c1>{_COLOR}) (?P<s1>{_SHAPE})"),
    "position": re.compile(rf"a (?P<c1>{_COLOR}) (?P<s1>{_SHAPE}) in the (?P<region>{_REGION})"),
    "two_objects": re.compile(rf"a (?P<c1>{_COLOR}) (?P<s1>{_SHAPE}) and a (?P<c2>{_COLOR}) (?P<s2>{_SHAPE})"),
    "counting": re.compile(rf"(?P<count>{_COUNT}) (?P<c1>{_COLOR}) (?P<plural>{_PLURAL})"),
    "relation": re.compile(
        rf"a (?P<c1>{_COLOR}) (?P<s1>{_SHAPE}) (?P<relation>{_RELATION}) a (?P<c2>{_COLOR}) (?P<s2>{_SHAPE})"
    ),
}


@dataclass(frozen=True)
class Wanted:
    """One object the caption asks for; size None means any size."""

    color: str
    shape: str
    size: str | None = None


@dataclass(frozen=True)
class Caption:
    category: str
    objects: tuple[Wanted, ...]
    region: str | None = None
    relation: str | None = None


def parse_caption(text: str) -> Caption:
    """Parse a Shapes caption; raises ValueError naming the caption if it is not in the grammar."""
    for category, pattern in _PATTERNS.items():
        m = pattern.fullmatch(text.strip())
        if m is None:
            continue
        g = m.groupdict()
        if category == "single":
            return Caption("single", (Wanted(g["c1"], g["s1"], g["size"]),))
        if category == "position":
            return Caption("position", (Wanted(g["c1"], g["s1"]),), region=g["region"])
        if category == "counting":
            wanted = Wanted(g["c1"], _SINGULAR_OF[g["plural"]])
            return Caption("counting", (wanted,) * _NUMBER_OF[g["count"]])
        pair = (Wanted(g["c1"], g["s1"]), Wanted(g["c2"], g["s2"]))
        if category == "relation":
            if pair[0] == pair[1]:
                break
            return Caption("relation", pair, relation=g["relation"])
        if g["s1"] != g["s2"]:
            return Caption("two_objects", pair)
        if g["c1"] != g["c2"]:
            return Caption("color_attr", pair)
        break
    raise ValueError(f"not a Shapes-world caption: {text!r}")
