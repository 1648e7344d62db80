"""Check the ComfyUI workflows `hypersd lora export --workflow` writes against the node definitions in a
ComfyUI source tree (read statically: no ComfyUI installation needed): every node class exists in
nodes.py, its required inputs are exactly the ones given, each link points at an existing output of
its node (RETURN_TYPES), and the sampler and scheduler names are in ComfyUI's own lists
(comfy/samplers.py). Records the ComfyUI version checked.

    python bench/comfy_check.py /path/to/ComfyUI      # bench/results/comfy_check.{json,md}
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

from common import RESULTS  # bench/common.py

from hypersd.lora.comfy_workflow import workflow_for

CASES = {  # the settings of each kind of LoRA the project writes
    "N-step LoRA (8 steps)": ({"scheduler": "ddim-trailing", "steps": 8, "guidance": 0.0}, "sd1"),
    "CFG-preserved LoRA (8 steps, CFG 5)": ({"scheduler": "ddim-trailing", "steps": 8, "guidance": 5.0}, "sdxl"),
    "unified LoRA (TCD)": ({"scheduler": "tcd", "steps": 4, "guidance": 0.0, "eta": 0.3}, "sd1"),
}


def node_definitions(comfy: Path) -> dict[str, dict]:
    """class name -> required input names and number of outputs, read from nodes.py."""
    source = (comfy / "nodes.py").read_text()
    out = {}
    for match in re.finditer(r"^class (\w+)\b.*?:\n", source, re.M):
        body = source[match.end():]
        end = re.search(r"^class \w+", body, re.M)
        body = body[: end.start()] if end else body
        required = re.search(r'"required"\s*:\s*\{(.*?)\n\s*\}', body, re.S)
        returns = re.search(r"RETURN_TYPES\s*=\s*(\([^)]*\))", body)
        if required is None or returns is None:
            continue
        names = re.findall(r'"(\w+)"\s*:\s*\(', required.group(1))
        count = len([item for item in returns.group(1).strip("()").split(",") if item.strip()])
        out[match.group(1)] = {"required": names, "outputs": count}
    return out


def name_lists(comfy: Path) -> tuple[list[str], list[str]]:
    """ComfyUI's sampler names (KSAMPLER_NAMES + the extra ones) and scheduler names."""
    source = (comfy / "comfy" / "samplers.py").read_text()
    ksampler = ast.literal_eval(re.search(r"^KSAMPLER_NAMES = (\[.*?\])", source, re.M | re.S).group(1))
    extra = ast.literal_eval(re.search(r"^SAMPLER_NAMES = KSAMPLER_NAMES \+ (\[.*?\])", source, re.M).group(1))
    handlers = re.search(r"^SCHEDULER_HANDLERS = \{(.*?)^\}", source, re.M | re.S).group(1)
    return ksampler + extra, re.findall(r'^\s*"(\w+)":', handlers, re.M)


def check(graph: dict, nodes: dict, samplers: list[str], schedulers: list[str]) -> list[str]:
    problems = []
    for node_id, node in graph.items():
        cls = node["class_type"]
        if cls not in nodes:
            problems.append(f"node {node_id}: ComfyUI has no node {cls}")
            continue
        missing = set(nodes[cls]["required"]) - set(node["inputs"])
        unknown = set(node["inputs"]) - set(nodes[cls]["required"])
        problems += [f"node {node_id} ({cls}): missing input {m}" for m in sorted(missing)]
        problems += [f"node {node_id} ({cls}): unknown input {u}" for u in sorted(unknown)]
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                source = graph.get(value[0])
                if source is None or value[1] >= nodes.get(source["class_type"], {}).get("outputs", 0):
                    problems.append(f"node {node_id}: input {name} links to a missing output {value}")
        if cls == "KSampler":
            if node["inputs"]["sampler_name"] not in samplers:
                problems.append(f"sampler {node['inputs']['sampler_name']!r} is not one of ComfyUI's")
            if node["inputs"]["scheduler"] not in schedulers:
                problems.append(f"scheduler {node['inputs']['scheduler']!r} is not one of ComfyUI's")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comfyui", type=Path, help="a ComfyUI source tree")
    args = parser.parse_args()
    version = re.search(r'__version__ = "([^"]+)"', (args.comfyui / "comfyui_version.py").read_text()).group(1)
    nodes = node_definitions(args.comfyui)
    samplers, schedulers = name_lists(args.comfyui)
    results = {label: check(workflow_for(settings, base, "lora.safetensors"), nodes, samplers, schedulers)
               for label, (settings, base) in CASES.items()}
    lines = [f"# ComfyUI workflows checked against ComfyUI {version}'s node definitions", "",
             "| workflow | result |", "|---|---|"]
    lines += [f"| {label} | {'OK' if not p else '; '.join(p)} |" for label, p in results.items()]
    lines += ["", f"Samplers known to ComfyUI {version}: {len(samplers)} (no TCD sampler; `lcm` is TCD at eta 1); "
                  f"schedulers: {', '.join(schedulers)}.", "", "Command: `python bench/comfy_check.py COMFYUI_SOURCE`"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "comfy_check.json").write_text(json.dumps({"comfyui": version, "results": results}, indent=2))
    (RESULTS / "comfy_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
