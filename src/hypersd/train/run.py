"""A distillation run: set-up, resume, the stages in order, checkpoints.

Run folder layout (file names: hypersd.train.outputs):
  recipe.yaml            the resolved recipe
  log.jsonl              one line per logged step, stage end and checkpoint
  checkpoints/           the newest checkpoints (adapters, optimizers, RNG, position; crash-safe,
                         see hypersd.train.checkpoint) and `latest`, naming the newest
  loras/, samples/       each stage's model and a grid of its samples
  metrics.json           per-stage loss and speed

One UNet is held: every network but the frozen base is a LoRA adapter on it, named by its role
(hypersd.lora.adapters); a full-UNet generator stage adds one trainable copy. The inner loop of a
stage is hypersd.train.stages.

Several processes (`accelerate launch --multi_gpu --num_processes N ... -m hypersd.cli distill ...`,
configs/accelerate/): data parallelism by explicit gradient averaging (hypersd.train.parallel),
not DDP, since one step calls the UNet many times with different adapters and has several
optimizers. Every process holds the whole model; the LoRA initialisation uses the run's seed on
every process, so all start equal; then process r > 0 reseeds its stream with seed + r (process 0
keeps exactly a single-process run's stream), so each draws its own batches, noise and timesteps.
The gradients of what each optimizer updates (student or feedback LoRA or full UNet, fake score,
discriminator heads) are averaged over the processes right before it steps (before clipping for
the student), so weights stay identical; the effective batch is N x training.batch_size. Logged
losses are means over processes. Only process 0 writes the run folder; checkpoints keep every
process's random state, so an interrupted run resumed with the same number of processes continues
every stream exactly (a process without a saved state reseeds from seed, rank and position).
FSDP, DeepSpeed, Megatron-LM and XLA are refused (they need the model through accelerator.prepare).
With one process nothing changes numerically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from hypersd.data.batches import batch_source
from hypersd.errors import UserError
from hypersd.io import LOCK_FILE, atomic_file, folder_lock
from hypersd.lora.adapters import (
    FAKE,
    FEEDBACK,
    STUDENT,
    TARGET,
    TEACHER,
    adapter_parameters,
    add_lora,
    copy_adapter,
    fused_unet,
    has_adapter,
    set_adapter_scale,
)
from hypersd.lora.files import load_into_adapter
from hypersd.models.discriminator import LatentDiscriminator
from hypersd.models.pipelines import load_unet_weights
from hypersd.models.sd import load_model
from hypersd.train.checkpoint import (
    has_checkpoint,
    latest_checkpoint,
    read_position,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
)
from hypersd.train.optim import make_optimizer
from hypersd.train.outputs import stage_name
from hypersd.train.parallel import average_before_step, require_supported
from hypersd.train.preflight import check_inputs, init_unet_file
from hypersd.train.recipe import Recipe, Stage
from hypersd.train.stages import StageLoop, finish_stage


def _read_metrics(path: Path) -> dict:
    """A resumed run's metrics.json so far ({"stages": {}} when there is none)."""
    if not path.is_file():
        return {"stages": {}}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path} ({type(exc).__name__}); move it away to resume") from None
    return metrics if isinstance(metrics, dict) and isinstance(metrics.get("stages"), dict) else {"stages": {}}


def frozen_dtype(recipe: Recipe) -> torch.dtype:
    """The dtype the frozen model is stored in: the mixed-precision dtype unless told to keep fp32."""
    mixed = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.training.mixed_precision)
    return mixed if mixed is not None and recipe.training.frozen_precision == "auto" else torch.float32


def _forget_previous_accelerator() -> None:
    """Let several runs with different precision settings share one process (benchmarks, tests).

    accelerate keeps one process-wide AcceleratorState and refuses a second Accelerator with other
    settings; the distributed part (PartialState) is kept, so launched multi-process runs are unaffected.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


class Run:
    """Everything a run holds: accelerator, model with its adapters, optimizers of the helpers
    (fake score with its GAN head, discriminator heads), the data, the log; `train()` runs the stages."""

    def __init__(self, recipe: Recipe, model_dir: Path, out: Path, device: str = "auto",
                 init_lora: Path | None = None, warn=None, monitor=None, init_unet: Path | None = None):
        self.recipe, self.out = recipe, Path(out)
        self.init_unet = init_unet_file(recipe, init_unet)  # the full-UNet generator's start (else base + LoRA)
        self.monitor = monitor  # monitor(pipe, SampleSettings) -> float: the quick evaluation (training.eval_every)
        self.elapsed = 0.0      # training seconds so far, across resumes (kept in every checkpoint)
        self.warn = warn or (lambda message: print(message, file=sys.stderr))
        self.model_dir = Path(model_dir)  # a latent cache must have been made with it
        use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        require_supported()  # before accelerate builds (or fails to build) a sharding plugin
        _forget_previous_accelerator()
        self.accelerator = Accelerator(cpu=use_cpu, mixed_precision=recipe.training.mixed_precision,
                                       gradient_accumulation_steps=recipe.training.gradient_accumulation)
        require_supported(self.accelerator)
        check_inputs(recipe)
        self.model = load_model(model_dir, device=self.accelerator.device, dtype=frozen_dtype(recipe))
        self.model.freeze_base()
        if recipe.training.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
        if recipe.training.vae_slicing:
            self.model.vae.enable_slicing()
        torch.manual_seed(recipe.training.seed)  # LoRA initialisation is part of the run's seed
        for name in (STUDENT, TARGET):
            add_lora(self.model.unet, recipe.lora.rank, recipe.lora.alpha, recipe.lora.targets, name=name)
        self.score_classifier = None  # the GAN head of score distillation (dmd.gan_weight > 0)
        self.fake_optimizer = self._add_phase_adapters()
        self.init_lora = None if init_lora is None else str(init_lora)  # what the student started from (logged)
        if init_lora is not None:
            load_into_adapter(self.model.unet, init_lora, STUDENT)
        self.model.unet.set_adapter(STUDENT)
        self.discriminator = self.d_optimizer = None
        if any(stage.adversarial_weight > 0 for stage in recipe.stages):
            d = recipe.discriminator
            self.discriminator = LatentDiscriminator(self.model.unet).to(self.accelerator.device)
            self.d_optimizer = make_optimizer(self.discriminator.parameters(), recipe.training.optimizer,
                                              d.learning_rate, betas=(d.beta1, d.beta2))
        for opt in (self.fake_optimizer, self.d_optimizer):  # several processes: average their gradients
            if opt is not None:
                opt.register_step_pre_hook(average_before_step)
        self.log_file = None
        self.resume_from = None  # the checkpoint folder a resumed run continues
        self.batches = None    # the data (hypersd.data.batches), opened when training starts
        self.generator = None  # the full UNet of a dmd stage with generator: unet (built at its start)

    # ---------------------------------------------------------------- adapters and their roles
    def _add_phase_adapters(self):
        """The feedback LoRA and the fake score exist from the start (zero until trained), so that
        every checkpoint has the same layout and resume can restore them; returns the fake score's
        optimizer (None without a dmd stage)."""
        unet, targets = self.model.unet, self.recipe.lora.targets
        feedback = [st for st in self.recipe.stages if st.method == "feedback"]
        if feedback:
            add_lora(unet, feedback[0].feedback.rank, feedback[0].feedback.rank, targets, name=FEEDBACK)
        dmd = [st for st in self.recipe.stages if st.method == "dmd"]
        if not dmd:
            return None
        add_lora(unet, dmd[0].dmd.fake_rank, dmd[0].dmd.fake_rank, targets, name=FAKE)
        params = self.adapter_parameters(FAKE)
        if any(st.dmd.gan_weight > 0 for st in dmd):  # DMD2's GAN head on the fake score's encoder
            self.score_classifier = LatentDiscriminator(unet, adapter=FAKE).to(self.accelerator.device)
            params += list(self.score_classifier.parameters())
        return make_optimizer(params, self.recipe.training.optimizer, dmd[0].dmd.fake_learning_rate)

    def adapter_parameters(self, name: str) -> list[torch.nn.Parameter]:
        return list(adapter_parameters(self.model.unet, name).values())

    def trained_parameters(self, index: int) -> list[torch.nn.Parameter]:
        """What stage `index` trains: the feedback LoRA in a feedback stage, the full UNet of a
        full-UNet generator stage, else the student LoRA."""
        if self.trains_unet(index):
            return list(self.generator_unet(index).parameters())
        return self.adapter_parameters(FEEDBACK if self.recipe.stages[index].method == "feedback" else STUDENT)

    def trains_unet(self, index: int) -> bool:
        stage = self.recipe.stages[index]
        return stage.method == "dmd" and stage.dmd.generator == "unet"

    def generator_unet(self, index: int):
        """The full-UNet student: base + the student's LoRAs (feedback at its merge ratio) fused into a
        copy; on resume its trained weights then come from the checkpoint."""
        if self.generator is None:
            self.set_feedback_scale(index)
            self.generator = fused_unet(self.model.unet, self.roles(index)[0]).requires_grad_(True)
            if self.init_unet is not None:
                load_unet_weights(self.generator, self.init_unet)
        return self.generator

    def roles(self, index: int) -> tuple[list[str], list[str]]:
        """Adapters active as (student, target) in stage `index`: a trained feedback LoRA joins both."""
        with_feedback = any(st.method == "feedback" for st in self.recipe.stages[: index + 1])
        extra = [FEEDBACK] if with_feedback else []
        return [STUDENT, *extra], [TARGET, *extra]

    def merge_ratio(self, index: int) -> float | None:
        """The merge ratio of the last feedback stage up to stage `index` (None without one)."""
        done = [st for st in self.recipe.stages[: index + 1] if st.method == "feedback"]
        return done[-1].feedback.merge_ratio if done else None

    def set_feedback_scale(self, index: int) -> None:
        """During its own stage the feedback LoRA counts fully; afterwards at the merge ratio."""
        stages = self.recipe.stages
        done = [st for st in stages[:index] if st.method == "feedback"]
        if has_adapter(self.model.unet, FEEDBACK):
            scale = done[-1].feedback.merge_ratio if done and stages[index].method != "feedback" else 1.0
            set_adapter_scale(self.model.unet, FEEDBACK, scale)

    def _needs_teacher_adapter(self, index: int) -> bool:
        return index > 0 and self.recipe.stages[index].teacher == "previous"

    def _add_teacher_adapter(self) -> None:
        unet = self.model.unet
        if not has_adapter(unet, TEACHER):
            lora = self.recipe.lora
            add_lora(unet, lora.rank, lora.alpha, lora.targets, name=TEACHER)
            unet.set_adapter(STUDENT)

    def _start_stage(self, index: int) -> None:
        """Fresh stage: the target restarts from the student; teacher "previous" freezes a copy of it."""
        if self._needs_teacher_adapter(index):
            self._add_teacher_adapter()
            copy_adapter(self.model.unet, STUDENT, TEACHER)
        copy_adapter(self.model.unet, STUDENT, TARGET)

    # ---------------------------------------------------------------- the run
    def train(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Run every stage; `stop_after` optimizer steps in all ends the run early (as a kill would)."""
        acc = self.accelerator
        self.resume_from = latest_checkpoint(self.out, self.warn if acc.is_main_process else None) if resume else None
        if resume and self.resume_from is None:
            raise UserError(f"nothing to resume in {self.out} (no checkpoint)")
        position = read_position(self.resume_from) if resume else None
        self.elapsed = float(position.get("elapsed", 0.0)) if position else 0.0
        fresh = not self.out.exists()
        lock = folder_lock(self.out) if acc.is_main_process else contextlib.nullcontext()
        cleaned = False
        try:
            with lock:  # a second run on this folder is refused while this one lives
                try:
                    return self._train(position, resume, stop_after)
                except BaseException:
                    if fresh and acc.is_main_process and not has_checkpoint(self.out):  # a new run, nothing to keep
                        self._close_log()
                        for path in self.out.iterdir():
                            if path.name != LOCK_FILE:
                                shutil.rmtree(path) if path.is_dir() else path.unlink()
                        cleaned = True
                    raise
                finally:
                    self._close_log()
        finally:
            if cleaned and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()

    def _close_log(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def _train(self, position: dict | None, resume: bool, stop_after: int | None) -> dict:
        acc = self.accelerator
        if acc.is_main_process:  # only process 0 writes the run folder
            with atomic_file(self.out / "recipe.yaml") as tmp:
                tmp.write_text(self.recipe.to_yaml())
            self.log_file = (self.out / "log.jsonl").open("a")
        acc.wait_for_everyone()
        self._open_data(position)
        metrics_file = self.out / "metrics.json"
        metrics = _read_metrics(metrics_file) if resume else {"stages": {}}
        done_steps = 0
        for index, stage in enumerate(self.recipe.stages):
            if position is not None and index < position["stage"]:
                continue
            start = position["step"] if position is not None else 0
            optimizer = self._stage_optimizer(index, stage, position)
            position = None
            if start == 0:
                self._start_stage(index)
            self.set_feedback_scale(index)
            budget = None if stop_after is None else stop_after - done_steps
            result = StageLoop(self, index, stage, optimizer, start).train(budget)
            done_steps += result.steps
            if hasattr(self.batches, "state_dict"):  # a stream's skip counts grow as it reads
                self.log({"event": "data", "after": stage_name(stage), **self.batches.info()})
            if not result.finished:
                return metrics
            metrics["stages"][stage_name(stage)] = finish_stage(self, index, stage, result)
            if acc.is_main_process:
                with atomic_file(metrics_file) as tmp:
                    tmp.write_text(json.dumps(metrics, indent=2))
        acc.wait_for_everyone()  # every process returns once the run folder is complete
        return metrics

    def _open_data(self, position: dict | None) -> None:
        """The recipe's data, at the checkpoint's position in a stream; then each process's own seed."""
        acc = self.accelerator
        torch.manual_seed(self.recipe.training.seed)
        self.batches = batch_source(self.model.vae, self.recipe.data, model_dir=self.model_dir,
                                    rank=acc.process_index, world_size=acc.num_processes)
        if position is not None and hasattr(self.batches, "load_state_dict"):  # a stream continues where it was
            states = position.get("data") or [None]
            self.batches.load_state_dict(states[acc.process_index] if acc.process_index < len(states) else states[0])
        if acc.process_index > 0:  # its own batches and noise; process 0 keeps the single-process stream
            torch.manual_seed(self.recipe.training.seed + acc.process_index)
        self.log({"event": "data", **self.batches.info(), "resume": position, "init_lora": self.init_lora,
                  "init_unet": None if self.init_unet is None else str(self.init_unet)})

    def _stage_optimizer(self, index: int, stage: Stage, position: dict | None):
        """The optimizer of what stage `index` trains; on resume, everything restored from the checkpoint."""
        acc, checkpoint = self.accelerator, self.resume_from
        resuming = position is not None
        if resuming and self._needs_teacher_adapter(index) and position["step"] > 0:
            self._add_teacher_adapter()  # its weights come from the checkpoint
        if resuming and self.trains_unet(index):  # fuse the full UNet from the restored LoRAs (its own
            # trained weights, if the checkpoint has them, come with the restore below)
            restore_checkpoint(checkpoint, self.model.unet, rank=acc.process_index)
        optimizer = acc.prepare(make_optimizer(self.trained_parameters(index), self.recipe.training.optimizer,
                                               stage.learning_rate))
        if resuming and not restore_checkpoint(checkpoint, self.model.unet, *self._state(optimizer),
                                               rank=acc.process_index):
            torch.manual_seed(self._reseed(position))  # written by fewer processes
        return optimizer

    def _reseed(self, position: dict) -> int:
        """A stream for a process that the checkpoint has no random state for: from seed, rank and position."""
        key = f"{self.recipe.training.seed}/{self.accelerator.process_index}/{position['stage']}/{position['step']}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")

    # ---------------------------------------------------------------- bookkeeping
    def log(self, record: dict) -> None:
        if self.accelerator.is_main_process and self.log_file is not None:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def _state(self, optimizer) -> tuple[dict, dict]:
        """(optimizers, modules) that a checkpoint holds besides the adapters."""
        optimizers, modules = {"student": optimizer}, {}
        if self.fake_optimizer is not None:
            optimizers["fake"] = self.fake_optimizer
        if self.generator is not None:
            modules["generator"] = self.generator
        if self.score_classifier is not None:
            modules["score_classifier"] = self.score_classifier
        if self.discriminator is not None:
            optimizers["discriminator"] = self.d_optimizer
            modules["discriminator"] = self.discriminator
        return optimizers, modules

    def checkpoint(self, optimizer, index: int, step: int) -> None:
        """Save the run's whole state at (stage index, step); every process calls this."""
        states = gather_object([rng_state()])  # every process's stream
        data = {"data": gather_object([self.batches.state_dict()])} if hasattr(self.batches, "state_dict") else {}
        if self.accelerator.is_main_process:
            save_checkpoint(self.out, self.model.unet,
                            {"stage": index, "step": step, "elapsed": round(self.elapsed, 3), **data},
                            *self._state(optimizer), rng_states=states)
            self.log({"event": "checkpoint", "stage": index, "step": step})


def estimate_teacher_evaluations(recipe: Recipe) -> int:
    """UNet sample-evaluations per run (guided teacher 2, target 1, student 1 per sample and step)."""
    per_step = 4 * recipe.training.batch_size * recipe.training.gradient_accumulation
    return int(math.fsum(stage.iterations * per_step for stage in recipe.stages))
