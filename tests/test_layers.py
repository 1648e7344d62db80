"""The package's layering: every import (function-local ones included) points down the layers, no
module imports one that imports it back, no module is over 400 lines, and the core method does not
know the embedded Shapes world."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hypersd"
# lowest first; a group may import itself and any group of a lower rank, nothing else
RANKS = {"base": 0, "core": 1, "shapes": 1, "models": 2, "lora": 3, "data": 3, "inference": 4, "rewards": 4,
         "train": 5, "embedded": 6, "app": 6, "cli": 7}
BASE = {"hypersd", "hypersd.errors", "hypersd.io", "hypersd.options", "hypersd.progress", "hypersd.assets"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def imports_of(name: str) -> set[str]:
    """The project modules `name` imports, anywhere in its body."""
    path = MODULES[name]
    anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            candidates = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                found.add(candidate)
    return found


def group(name: str) -> str:
    return "base" if name in BASE else name.split(".")[1]


def test_every_module_has_a_layer():
    assert {group(name) for name in MODULES} <= set(RANKS)


def test_imports_only_point_down_the_layers():
    upward = [f"{name} -> {other}" for name in sorted(MODULES) for other in sorted(imports_of(name))
              if group(other) != group(name) and RANKS[group(other)] >= RANKS[group(name)]]
    assert upward == []


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    cycles = [c for name in sorted(MODULES) if name not in state and (c := visit(name, []))]
    assert cycles == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("hypersd.train.objectives")))
def test_the_objectives_do_not_know_the_shapes_world(name):
    """Rewards and the perceptual model are plug-ins the run hands in; only their interface is seen."""
    known = {other for other in imports_of(name)
             if group(other) in ("shapes", "embedded") or other == "hypersd.assets"
             or (group(other) == "rewards" and other != "hypersd.rewards.base")}
    assert known == set()


def test_no_module_is_over_400_lines():
    assert {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400} == {}


def test_the_checker_sees_function_local_imports():
    assert "hypersd.rewards.segmenter" in imports_of("hypersd.rewards")  # imported inside load_perceptual
