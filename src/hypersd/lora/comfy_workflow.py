"""ComfyUI workflows for exported LoRAs, as the Hyper-SD release ships them beside its files: the graph
that samples the LoRA at its recommended settings (its metadata), in ComfyUI's API format (node id ->
class_type and inputs; a link is [node id, output index]), which ComfyUI loads by drag and drop and its
/prompt endpoint runs.

- N-step and CFG-preserved LoRAs (trailing DDIM): checkpoint, LoRA (UNet only), prompts, empty latent,
  KSampler with the `ddim` sampler and the `sgm_uniform` scheduler (trailing spacing: the first step
  starts at the last training timestep), steps and CFG from the metadata (CFG 1: no guidance);
- the unified LoRA (TCD): the same graph with ComfyUI's `lcm` sampler, which is TCD with gamma (eta) 1:
  LCM's multistep sampling re-noises the whole way, and core ComfyUI has no TCD sampler with another
  gamma. The release's workflow for its unified LoRA used a custom TCD node for that; the Shapes
  benchmarks find eta 1 and 0.3 tied at 2-8 steps (bench/results/hyper_tables.md). The node's title
  says so.

The node and input names are ComfyUI's own (COMFYUI_CHECKED records the version they were validated
against with ComfyUI's prompt validation). The checkpoint name is the base model the user has in
ComfyUI's models/checkpoints folder; the LoRA name is the exported file's.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypersd.errors import UserError
from hypersd.io import atomic_file

COMFYUI_CHECKED = "0.3.64"  # the node definitions the files were checked against (bench/comfy_check.py)
DEFAULT_CHECKPOINTS = {"sd1": "v1-5-pruned-emaonly.safetensors", "sdxl": "sd_xl_base_1.0.safetensors"}
RESOLUTIONS = {"sd1": 512, "sdxl": 1024}


def _graph(checkpoint: str, lora: str, size: int, positive: str, negative: str, sampler_nodes: dict) -> dict:
    """The shared part: checkpoint -> LoRA on the UNet -> two prompts -> empty latent -> (sampler) -> decode -> save."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                              "strength_model": 1.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        **sampler_nodes,
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "hyper-sd"}},
    }


def ksampler(sampler: str, steps: int, cfg: float, seed: int = 0, title: str | None = None) -> dict:
    """KSampler with the `sgm_uniform` scheduler: its timesteps start at the last training timestep and
    are evenly spaced, as diffusers' trailing spacing."""
    node = {"class_type": "KSampler", "inputs": {
        "model": ["2", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
        "scheduler": "sgm_uniform", "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
        "denoise": 1.0}}
    if title:
        node["_meta"] = {"title": title}
    return {"6": node}


def workflow_for(settings: dict, base: str, lora_name: str, checkpoint: str | None = None,
                 positive: str = "a photo of a cat", negative: str = "") -> dict:
    """The API-format workflow that samples a LoRA with `settings` (its hypersd_inference metadata)."""
    if base not in RESOLUTIONS:
        raise UserError(f"no ComfyUI workflow for base model {base!r}; choose sd1 or sdxl")
    scheduler = settings.get("scheduler")
    steps = int(settings.get("steps", 4))
    cfg = max(1.0, float(settings.get("guidance", 0.0)))  # ComfyUI's CFG 1 is no guidance
    if settings.get("timesteps"):
        raise UserError("--workflow: this model samples at custom timesteps "
                        f"{settings['timesteps']}, which ComfyUI's core nodes cannot express (the release "
                        "uses a custom scheduler node for its one-step UNet)")
    if scheduler in ("ddim-trailing", "ddim"):
        sampler = ksampler("ddim", steps, cfg, title=f"Hyper-SD: DDIM trailing, {steps} steps, CFG {cfg:g}")
    elif scheduler == "tcd":
        eta, table = settings.get("eta"), settings.get("step_timesteps") or {}
        spacing = (f"; its timesteps at {', '.join(f'{n} steps {ts}' for n, ts in table.items())} need a custom "
                   "scheduler node, sgm_uniform is trailing spacing") if table else ""
        sampler = ksampler("lcm", steps, cfg, title=f"Hyper-SD unified: TCD with eta 1 (ComfyUI's lcm sampler), "
                                                    f"{steps} steps (1-8 work; the LoRA recommends eta {eta}{spacing})")
    else:
        raise UserError(f"--workflow: no ComfyUI workflow for scheduler {scheduler!r} (ddim-trailing or tcd)")
    return _graph(checkpoint or DEFAULT_CHECKPOINTS[base], lora_name, RESOLUTIONS[base], positive, negative,
                  sampler)


def workflow_path(lora_file: Path) -> Path:
    """OUT.safetensors -> OUT.workflow.json, beside it."""
    return Path(lora_file).with_suffix(".workflow.json")


def write_workflow(path: Path, workflow: dict) -> Path:
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(workflow, indent=2) + "\n")
    return Path(path)
