"""The Shapes world: a fully specified text-to-image domain (see shared/shapes-world.md)."""

from hypersd.shapes.captions import Caption, parse_caption  # noqa: F401
from hypersd.shapes.world import CATEGORIES, COLORS, SHAPES, SIZES, Scene, ShapeObject, render, sample_scene  # noqa: F401
