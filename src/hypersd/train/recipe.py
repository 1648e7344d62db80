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

from hypersd.data.transforms import CROPS
from hypersd.errors import UserError


@dataclass
class Feedback:
    """Human feedback learning terms (Hyper-SD section 3.2); used by feedback stages, and added to
    score-distillation stages whose dmd.with_feedback is true."""

    rewards: list[str] = field(default_factory=lambda: ["shapes-clean"])  # specs, see hypersd.rewards
    reward_alpha: list[float] = field(default_factory=lambda: [7.0])    # hinge alpha_d per reward (eq. 13)
    reward_weight: float = 1.0        # aesthetic loss (eq. 13)
    perceptual_weight: float = 1.0    # instance loss of the segmenter (eq. 14); needs Shapes data
    segmenter: str = ""               # segmenter folder ("" = the shipped assets/shapes-segmenter)
    pretrain_weight: float = 1.0      # denoising regulariser on real data
    t_left: int = 200                 # ReFL stops at a sampler step with t in [t_left, t_right] (999 included:
                                      # one-step quality; the ReFL paper stops late); also the range of t_a
    t_right: int = 999
    sampling_steps: int = 4           # trailing DDIM steps of the student's own sampler in ReFL
    rank: int = 8                     # rank of the feedback LoRA (feedback stages)
    merge_ratio: float = 1.0          # delta W = delta W_tscd + merge_ratio * delta W_feedback
    batch_size: int = 8               # images per term and step (decoding is the costly part)

    def validate(self, where: str) -> None:
        _require(len(self.rewards) == len(self.reward_alpha), where, "rewards and reward_alpha must have equal length")
        _require(min(self.reward_weight, self.perceptual_weight, self.pretrain_weight) >= 0, where,
                 "feedback weights must be >= 0")
        _require(0 <= self.t_left <= self.t_right <= 999, where, "need 0 <= t_left <= t_right <= 999")
        _require(self.sampling_steps >= 1 and self.rank >= 1 and self.batch_size >= 1, where,
                 "sampling_steps, rank and batch_size must be >= 1")

    @property
    def active(self) -> bool:
        return self.reward_weight + self.perceptual_weight + self.pretrain_weight > 0


@dataclass
class ScoreDistillation:
    """Distribution matching distillation (DMD; Yin et al. 2024) of Hyper-SD section 3.3."""

    generator_timestep: int = 999     # timestep fed with pure noise: 999 unified LoRA, 800 one-step model
    guidance: float = 5.0             # CFG scale of the real score (the teacher)
    t_min: int = 20                   # the DMD loss noises the generator's sample to t ~ U[t_min, t_max]
    t_max: int = 980
    dmd_weight: float = 1.0
    fake_rank: int = 16               # the fake score: a LoRA on the same frozen base
    fake_learning_rate: float = 1e-4
    fake_updates: int = 1             # fake-score updates per generator update (1: DMD; DMD2's TTUR, sec. 4.2: 5)
    gan_weight: float = 0.0           # non-saturating GAN loss of a head on the fake score's encoder (DMD2 4.3: 5e-3)
    gan_classifier_weight: float = 0.0  # the head's real-vs-generated loss in the fake update (DMD2: 1e-2)
    backward_simulation: list[int] = field(default_factory=list)  # n-step schedules ([1, 2, 4]; [] = noise at t_g)
                                      # fed by the student's sampler (DMD2 4.5), each entry drawn equally often
    with_feedback: bool = False       # add the stage's feedback terms (section 3.3: "and the feedback losses")
    generator: str = "lora"           # lora, or unet: the dedicated one-step model as a full UNet (initialised
                                      # from base + LoRA, saved as a diffusers pipeline folder)
    batch_size: int = 0               # the stage's batch (0 = training.batch_size; DMD: many small steps)
    regression_weight: float = 0.0    # DMD's regression loss (DMD eq. 9; DMD: 0.25): the jump from stored noise z to
    regression_pairs: str = ""        # the teacher's sample from z, pairs from `hypersd data pairs`; 0 = none
    regression_distance: str = "pseudo-huber"  # mse | pseudo-huber, c per latent element (DMD's LPIPS needs weights)
    regression_huber_c: float = 0.03
    regression_batch_size: int = 0    # pairs per generator update (0 = the stage's batch)

    def validate(self, where: str) -> None:
        _require(0 < self.generator_timestep <= 999, where, "generator_timestep must be in (0, 999]")
        _require(0 <= self.t_min < self.t_max <= 999, where, "need 0 <= t_min < t_max <= 999")
        _require(self.guidance >= 1 and self.dmd_weight >= 0, where, "need guidance >= 1 and dmd_weight >= 0")
        _require(self.fake_rank >= 1 and self.fake_learning_rate > 0 and self.fake_updates >= 1, where,
                 "fake_rank, fake_updates >= 1 and fake_learning_rate > 0")
        _require(self.batch_size >= 0, where, "batch_size must be >= 0 (0 = training.batch_size)")
        _require(min(self.gan_weight, self.gan_classifier_weight) >= 0, where,
                 "gan_weight and gan_classifier_weight must be >= 0")
        _require((self.gan_weight > 0) == (self.gan_classifier_weight > 0), where,
                 "the GAN term needs both gan_weight (generator) and gan_classifier_weight (head) > 0, or both 0")
        _require(all(isinstance(n, int) and 1 <= n <= 100 for n in self.backward_simulation), where,
                 "backward_simulation lists step counts in [1, 100], e.g. [1, 2, 4]")
        _require(min(self.regression_weight, self.regression_batch_size) >= 0 and self.regression_huber_c > 0, where,
                 "need regression_weight, regression_batch_size >= 0 and regression_huber_c > 0")
        _require(self.regression_distance in ("mse", "pseudo-huber"), where,
                 f"regression_distance must be mse or pseudo-huber, got {self.regression_distance!r}")
        _require(self.regression_weight == 0 or bool(self.regression_pairs), where,
                 "regression_weight > 0 needs regression_pairs (a file made by `hypersd data pairs`)")
        _require(self.generator in ("lora", "unet"), where, f"generator must be lora or unet, got {self.generator!r}")
        _require(self.generator == "lora" or self.generator_timestep != 999, where,
                 "the unified model (generator_timestep 999) is a LoRA; a full-UNet generator is the dedicated "
                 "one-step model (e.g. generator_timestep 800)")


@dataclass
class Stage:
    """One training stage: TSCD (Algorithm 1 with k segments), feedback learning, or score distillation."""

    method: str = "tscd"              # tscd | feedback | dmd
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
    guidance_mode: str = "folded"     # folded: the student is called unguided and learns the guided teacher
                                      # (its LoRA samples at guidance 0); preserved: it learns the teacher's
                                      # conditional and unconditional trajectories (captions dropped, the teacher
                                      # at guidance_min..guidance_max, a low range), so classifier-free guidance
                                      # and negative prompts work on it at inference (the release's CFG LoRAs)
    caption_dropout: float = 0.1      # preserved: chance per sample that the caption is the empty prompt, for the
                                      # student, the EMA target and the teacher alike
    recommended_guidance: float = 5.0  # preserved: the CFG scale written into the LoRA's metadata
    recommended_steps: int = 0        # sampling steps written into the LoRA's metadata (0: segments)
    feedback: Feedback = field(default_factory=Feedback)        # feedback stages, and dmd with_feedback
    dmd: ScoreDistillation = field(default_factory=ScoreDistillation)

    def validate(self, where: str) -> None:
        _require(self.segments >= 1, where, "segments must be >= 1")
        _require(1 <= self.skip <= 1000, where, "skip must be in [1, 1000]")
        _require(self.iterations >= 1, where, "iterations must be >= 1")
        _require(self.learning_rate > 0, where, "learning_rate must be > 0")
        _require(min(self.mse_weight, self.huber_weight, self.adversarial_weight) >= 0, where,
                 "loss weights must be >= 0")
        _require(self.method == "dmd" or self.mse_weight + self.huber_weight + self.adversarial_weight > 0, where,
                 "at least one loss weight must be > 0")  # score distillation has dmd_weight besides
        _require(self.method != "dmd" or self.dmd.dmd_weight + self.mse_weight + self.dmd.regression_weight > 0,
                 where, "a dmd stage needs dmd.dmd_weight, dmd.regression_weight or mse_weight > 0")
        _require(self.method != "dmd" or self.huber_weight + self.adversarial_weight == 0, where,
                 "a dmd stage uses mse_weight (the consistency term) only; set huber_weight and adversarial_weight to 0")
        _require(self.method != "dmd" or self.dmd.generator != "unet" or self.mse_weight == 0, where,
                 "a full-UNet generator (dmd.generator: unet) has no LoRA consistency target; set mse_weight: 0")
        _require(self.t_end in ("uniform", "edge"), where, f"t_end must be uniform or edge, got {self.t_end!r}")
        _require(self.teacher in ("original", "previous"), where,
                 f"teacher must be original or previous, got {self.teacher!r}")
        _require(0 <= self.ema_decay < 1, where, "ema_decay must be in [0, 1)")
        _require(1 <= self.guidance_min <= self.guidance_max, where, "need 1 <= guidance_min <= guidance_max")
        _require(self.offset_noise >= 0, where, "offset_noise must be >= 0")
        _require(self.guidance_mode in ("folded", "preserved"), where,
                 f"guidance_mode must be folded or preserved, got {self.guidance_mode!r}")
        _require(self.guidance_mode == "folded" or self.method == "tscd", where,
                 "guidance_mode preserved is a TSCD option (method: tscd)")
        _require(0 <= self.caption_dropout < 1, where, "caption_dropout must be in [0, 1)")
        _require(self.recommended_guidance >= 0 and self.recommended_steps >= 0, where,
                 "recommended_guidance and recommended_steps must be >= 0")
        _require(self.method in ("tscd", "feedback", "dmd"), where,
                 f"method must be tscd, feedback or dmd, got {self.method!r}")
        self.feedback.validate(f"{where}.feedback")
        self.dmd.validate(f"{where}.dmd")
        _require(self.method != "feedback" or self.feedback.active, where,
                 "a feedback stage needs a feedback weight > 0")

    def uses_feedback(self) -> bool:
        return self.method == "feedback" or (self.method == "dmd" and self.dmd.with_feedback)


TSCD_ONLY_KEYS = ("segments", "skip", "mse_weight", "huber_weight", "huber_c", "adversarial_weight", "t_end",
                  "teacher", "ema_decay", "guidance_min", "guidance_max", "offset_noise", "guidance_mode",
                  "caption_dropout", "recommended_guidance", "recommended_steps")


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
    mixed_precision: str = "no"       # no, fp16 or bf16 (accelerate autocast)
    frozen_precision: str = "auto"    # auto: the frozen model (UNet, text encoders, VAE) stored in the mixed-
                                      # precision dtype (LoRAs stay fp32, peft upcasts them); fp32: keep it full
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"          # adamw, or adamw8bit (bitsandbytes' 8-bit AdamW, where installed)
    vae_slicing: bool = True          # feedback learning decodes one image at a time (same result, lower peak)
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 0               # a quick evaluation every N steps of a stage (0 = none): ShapesEval of
                                      # the student on eval_prompts standard prompts, logged and plotted in
                                      # RUN/progress.png (`hypersd distill`; the Shapes evaluator)
    eval_prompts: int = 120
    save_lora_every: int = 0          # also keep the student LoRA (a full-UNet generator: its weights) every N
                                      # steps in RUN/snapshots/ (quality against training time); 0 = no
    seed: int = 0

    def validate(self, where: str) -> None:
        _require(self.batch_size >= 1 and self.gradient_accumulation >= 1, where,
                 "batch_size and gradient_accumulation must be >= 1")
        _require(self.mixed_precision in ("no", "fp16", "bf16"), where, "mixed_precision must be no, fp16 or bf16")
        _require(self.frozen_precision in ("auto", "fp32"), where, "frozen_precision must be auto or fp32")
        _require(self.optimizer in ("adamw", "adamw8bit"), where, "optimizer must be adamw or adamw8bit")
        _require(self.checkpoint_every >= 1 and self.log_every >= 1, where, "checkpoint_every, log_every >= 1")
        _require(self.eval_every >= 0 and self.eval_prompts >= 1 and self.save_lora_every >= 0, where,
                 "eval_every and save_lora_every must be >= 0, eval_prompts >= 1")


@dataclass
class Data:
    """Training data (hypersd.data.batches). `source`: "shapes" (rendered on the fly, seeded), an image
    folder, webdataset tar shards (a .tar file, a brace pattern like /d/shards-{000000..000009}.tar,
    a glob like /d/*.tar, or a folder of .tar files; streamed) or a latent cache folder written by
    `hypersd cache` (made with the run's model at `resolution`). Images are resized to cover the
    target size and cropped; crop, buckets and shuffle_buffer do not apply to Shapes."""

    source: str = "shapes"
    pool_size: int = 20000            # Shapes scenes encoded once; latents re-drawn from the posterior
    resolution: int = 32              # target side in pixels (folders, shards, caches); buckets: sqrt of their area
    crop: str = "center"              # center | random (random: seeded, per image)
    buckets: bool = False             # aspect-ratio buckets (folders and shards); a batch holds one bucket
    bucket_step: int = 0              # bucket sides are multiples of it; 0: 64 from resolution 256 up, else 8
    shuffle_buffer: int = 1000        # tar shards: items shuffled in a buffer of this many
    seed: int = 1234

    def validate(self, where: str) -> None:
        _require(self.pool_size >= 1 and self.resolution >= 8, where, "pool_size >= 1 and resolution >= 8")
        _require(bool(self.source.strip()), where, "source must name shapes, an image folder, tar shards or a cache")
        _require(self.crop in CROPS, where, f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        _require(self.bucket_step >= 0 and self.bucket_step % 8 == 0, where,
                 f"bucket_step must be 0 (automatic) or a multiple of 8, got {self.bucket_step}")
        _require(self.shuffle_buffer >= 1, where, f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")


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
        _require(not (self.training.mixed_precision == "fp16" and any(s.method == "dmd" for s in self.stages)),
                 "training", "dmd stages need mixed_precision no or bf16 (the fake score's update has no fp16 "
                 "loss scaling)")
        unet_stages = [i for i, s in enumerate(self.stages) if s.method == "dmd" and s.dmd.generator == "unet"]
        _require(not unet_stages or unet_stages == [len(self.stages) - 1], "stages",
                 "a full-UNet generator stage (dmd.generator: unet) must be the last stage")
        return self

    def to_yaml(self) -> str:
        """The resolved recipe; a stage shows the feedback and dmd blocks only where it uses them."""
        data = asdict(self)
        for stage, entry in zip(self.stages, data["stages"]):
            if not stage.uses_feedback():
                entry.pop("feedback")
            if stage.method != "dmd":
                entry.pop("dmd")
            if stage.method == "feedback":  # the TSCD keys play no part in a feedback stage
                for key in TSCD_ONLY_KEYS:
                    entry.pop(key)
        return yaml.safe_dump(data, sort_keys=False)


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
