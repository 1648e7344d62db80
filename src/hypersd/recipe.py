"""Distillation recipes: typed dataclasses, read from YAML, every open choice a documented key.

A recipe file holds only what differs from the defaults below; `hypersd distill --dry-run` prints
the resolved recipe, and every run folder keeps it as `recipe.yaml`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hypersd.errors import UserError


@dataclass
class Stage:
    """One TSCD stage (Algorithm 1 with k segments)."""

    segments: int = 8                 # k; the stage's LoRA samples with k trailing DDIM steps
    skip: int = 25                    # grid spacing s (N = T / s); 25 puts every edge of k = 8, 4, 2, 1 on the grid
    iterations: int = 1000
    learning_rate: float = 1e-4
    mse_weight: float = 1.0           # distance d = mse * MSE + huber * pseudo-Huber + adversarial * GAN
    huber_weight: float = 0.0
    huber_c: float = 0.03             # pseudo-Huber c (per latent element)
    adversarial_weight: float = 0.0
    t_end: str = "uniform"            # uniform in [t_b, t_{n-1}] (paper) or "edge" (t_end = t_b, PCM-style)
    teacher: str = "original"         # original (LoRA disabled) or previous (the previous stage's model)
    ema_decay: float = 0.95           # target network; 0 = online target (LCM-LoRA)
    guidance_min: float = 3.0         # teacher CFG scale w ~ U[guidance_min, guidance_max]
    guidance_max: float = 8.0
    offset_noise: float = 0.0         # per-channel constant added to the noise (stability)

    def validate(self, where: str) -> None:
        _require(self.segments >= 1, where, "segments must be >= 1")
        _require(1 <= self.skip <= 1000, where, "skip must be in [1, 1000]")
        _require(self.iterations >= 1, where, "iterations must be >= 1")
        _require(self.learning_rate > 0, where, "learning_rate must be > 0")
        _require(min(self.mse_weight, self.huber_weight, self.adversarial_weight) >= 0, where,
                 "loss weights must be >= 0")
        _require(self.mse_weight + self.huber_weight + self.adversarial_weight > 0, where,
                 "at least one loss weight must be > 0")
        _require(self.t_end in ("uniform", "edge"), where, f"t_end must be uniform or edge, got {self.t_end!r}")
        _require(self.teacher in ("original", "previous"), where,
                 f"teacher must be original or previous, got {self.teacher!r}")
        _require(0 <= self.ema_decay < 1, where, "ema_decay must be in [0, 1)")
        _require(1 <= self.guidance_min <= self.guidance_max, where, "need 1 <= guidance_min <= guidance_max")
        _require(self.offset_noise >= 0, where, "offset_noise must be >= 0")


@dataclass
class Lora:
    """The student adapter, shared by all stages (each stage starts from the previous one's LoRA)."""

    rank: int = 16
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: [
        "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
        "conv1", "conv2", "conv_shortcut", "time_emb_proj"])

    def validate(self, where: str) -> None:
        _require(self.rank >= 1 and self.alpha > 0, where, "rank must be >= 1 and alpha > 0")
        _require(len(self.targets) > 0, where, "targets must name at least one module")


@dataclass
class Training:
    batch_size: int = 32
    gradient_accumulation: int = 1
    mixed_precision: str = "no"       # no, fp16 or bf16 (accelerate)
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0

    def validate(self, where: str) -> None:
        _require(self.batch_size >= 1 and self.gradient_accumulation >= 1, where,
                 "batch_size and gradient_accumulation must be >= 1")
        _require(self.mixed_precision in ("no", "fp16", "bf16"), where, "mixed_precision must be no, fp16 or bf16")
        _require(self.checkpoint_every >= 1 and self.log_every >= 1, where, "checkpoint_every, log_every >= 1")


@dataclass
class Data:
    source: str = "shapes"            # "shapes" (rendered on the fly, seeded) or an image-folder path
    pool_size: int = 20000            # Shapes scenes encoded once; latents re-drawn from the posterior
    resolution: int = 32              # image side for folders
    seed: int = 1234

    def validate(self, where: str) -> None:
        _require(self.pool_size >= 1 and self.resolution >= 8, where, "pool_size >= 1 and resolution >= 8")


@dataclass
class Discriminator:
    """Heads of the latent discriminator (used by stages with adversarial_weight > 0)."""

    learning_rate: float = 1e-4
    beta1: float = 0.0                # Adam betas (0, 0.99), as is usual for GANs
    beta2: float = 0.99

    def validate(self, where: str) -> None:
        _require(self.learning_rate > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, where,
                 "learning_rate must be > 0 and betas in [0, 1)")


@dataclass
class Samples:
    """What the run samples at the end of each stage (grids in the run folder)."""

    prompts: int = 16                 # the first N standard ShapesEval prompts
    seed: int = 0


@dataclass
class Recipe:
    name: str = "tscd"
    stages: list[Stage] = field(default_factory=lambda: [Stage(segments=k) for k in (8, 4, 2, 1)])
    lora: Lora = field(default_factory=Lora)
    training: Training = field(default_factory=Training)
    data: Data = field(default_factory=Data)
    discriminator: Discriminator = field(default_factory=Discriminator)
    samples: Samples = field(default_factory=Samples)

    def validate(self) -> "Recipe":
        _require(len(self.stages) > 0, "stages", "a recipe needs at least one stage")
        for i, stage in enumerate(self.stages):
            stage.validate(f"stages[{i}]")
        self.lora.validate("lora")
        self.training.validate("training")
        self.data.validate("data")
        self.discriminator.validate("discriminator")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise UserError(f"recipe {where}: {message}")


def _build(cls, data, where: str):
    """Instantiate dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise UserError(f"recipe {where or 'file'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"recipe {where or 'file'}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return cls(**{key: _convert(hints[key], value, f"{where}.{key}".lstrip(".")) for key, value in data.items()})


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"recipe {where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            raise UserError(f"recipe {where}: expected a number, got {value!r}") from None
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise UserError(f"recipe {where}: expected {hint.__name__}, got {value!r}")
    return value


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise UserError(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.split("."), yaml.safe_load(value)


def _apply_override(data: dict, path: list[str], value) -> None:
    node = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"--set {'.'.join(path)}: name a list item by its index, e.g. stages.0.iterations")
            part = int(part)
        elif not isinstance(node, dict):
            raise UserError(f"--set {'.'.join(path)}: {path[i - 1]!r} has no keys")
        if last:
            node[part] = value
        else:
            node = node[part] if isinstance(node, list) else node.setdefault(part, {})


def load_recipe(path: Path | None, overrides: list[str] = ()) -> Recipe:
    """Defaults, then the YAML file, then `KEY=VALUE` overrides (stages.0.iterations=10)."""
    data = asdict(Recipe())
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"recipe file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"recipe {path}: expected a mapping at the top level")
        data = _merge(data, loaded)
    for text in overrides:
        keys, value = _parse_override(text)
        _apply_override(data, keys, value)
    return _build(Recipe, data, "").validate()


def _merge(base: dict, update: dict) -> dict:
    """Recursive merge; a list in `update` replaces the default list (stages are given whole)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        elif key == "stages" and isinstance(value, list):
            merged[key] = [_merge(asdict(Stage()), s) if isinstance(s, dict) else s for s in value]
        else:
            merged[key] = value
    return merged
