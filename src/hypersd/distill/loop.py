"""The distillation run: stages of TSCD on accelerate, with checkpoints, resume and per-stage LoRAs.

Run folder layout:
  recipe.yaml            the resolved recipe
  log.jsonl              one line per logged step, stage end and checkpoint
  checkpoint/            the latest checkpoint (adapters, optimizer, RNG, position)
  loras/tscd-k{k}.safetensors   each stage's LoRA, diffusers format, inference settings in metadata
  samples/k{k}/          grids of each stage's LoRA at its own step count
  metrics.json           per-stage loss and speed

Several processes (`accelerate launch --multi_gpu --num_processes N ... -m hypersd.cli distill ...`,
configs/accelerate/): data parallelism by explicit gradient averaging (hypersd.distill.parallel),
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

import json
import math
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object

from hypersd.distill.checkpoint import (read_position, restore_checkpoint, rng_state, save_checkpoint,
                                       set_rng_state)
from hypersd.distill.data import build_pool
from hypersd.distill.ema import copy_adapter
from hypersd.distill.dmd import FAKE, ScoreDistillationStep
from hypersd.distill.feedback import FeedbackLearning
from hypersd.distill.optim import make_optimizer
from hypersd.distill.parallel import (average_before_step, average_gradients, mean_over_processes,
                                      require_supported)
from hypersd.distill.tscd import STUDENT, TARGET, TEACHER, TSCD
from hypersd.errors import UserError
from hypersd.lora import add_lora, load_into_adapter, save_lora
from hypersd.progress import progress
from hypersd.recipe import Recipe, Stage

FEEDBACK = "feedback"


def stage_name(stage: Stage) -> str:
    if stage.method == "feedback":
        return "feedback"
    if stage.method == "dmd":
        return "unified" if stage.dmd.generator_timestep == 999 else f"one-step-t{stage.dmd.generator_timestep}"
    return f"k{stage.segments}"


def stage_inference(stage: Stage) -> dict:
    """How a stage's LoRA samples (the model card's conventions): TSCD k trailing DDIM steps; the
    unified LoRA TCD (eta 0.3, any of 1-8 steps); a one-step model LCM at its generator timestep;
    a feedback merge like the student it was trained on (its sampling steps). No guidance."""
    if stage.method == "dmd" and stage.dmd.generator_timestep == 999:
        return {"scheduler": "tcd", "timestep_spacing": "trailing", "steps": 4, "guidance": 0.0, "eta": 0.3}
    if stage.method == "dmd":
        return {"scheduler": "lcm", "steps": 1, "timesteps": [stage.dmd.generator_timestep], "guidance": 0.0}
    steps = stage.feedback.sampling_steps if stage.method == "feedback" else stage.segments
    return {"scheduler": "ddim-trailing", "timestep_spacing": "trailing", "steps": steps, "guidance": 0.0, "eta": 0.0}


def frozen_dtype(recipe: Recipe) -> torch.dtype:
    """The dtype the frozen model is stored in: the mixed-precision dtype unless told to keep fp32."""
    mixed = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.training.mixed_precision)
    return mixed if mixed is not None and recipe.training.frozen_precision == "auto" else torch.float32


def _check_reward_files(recipe: Recipe) -> None:
    """Missing reward weights stop the run before it starts, not when the feedback stage begins."""
    from hypersd.rewards import check_reward_files

    for stage in recipe.stages:
        if stage.uses_feedback():
            for spec in stage.feedback.rewards:
                check_reward_files(spec)


def _forget_previous_accelerator() -> None:
    """Let several runs with different precision settings share one process (benchmarks, tests).

    accelerate keeps one process-wide AcceleratorState and refuses a second Accelerator with other
    settings; the distributed part (PartialState) is kept, so launched multi-process runs are unaffected.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


class Run:
    def __init__(self, recipe: Recipe, model_dir: Path, out: Path, device: str = "auto",
                 init_lora: Path | None = None):
        from accelerate import Accelerator

        from hypersd.models.adapter import load_adapter

        self.recipe, self.out = recipe, Path(out)
        self.model_dir = Path(model_dir)  # a latent cache must have been made with it
        use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        require_supported()  # before accelerate builds (or fails to build) a sharding plugin
        _forget_previous_accelerator()
        self.accelerator = Accelerator(cpu=use_cpu, mixed_precision=recipe.training.mixed_precision,
                                       gradient_accumulation_steps=recipe.training.gradient_accumulation)
        require_supported(self.accelerator)
        _check_reward_files(recipe)
        self.model = load_adapter(model_dir, device=self.accelerator.device, dtype=frozen_dtype(recipe))
        self.model.freeze_base()
        if recipe.training.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
        if recipe.training.vae_slicing:
            self.model.vae.enable_slicing()
        lora = recipe.lora
        torch.manual_seed(recipe.training.seed)  # LoRA initialisation is part of the run's seed
        for name in (STUDENT, TARGET):
            add_lora(self.model.unet, lora.rank, lora.alpha, lora.targets, name=name)
        self._add_phase_adapters()
        if init_lora is not None:
            load_into_adapter(self.model.unet, init_lora, STUDENT)
        self.model.unet.set_adapter(STUDENT)
        self.discriminator = self.d_optimizer = None
        if any(stage.adversarial_weight > 0 for stage in recipe.stages):
            from hypersd.distill.discriminator import LatentDiscriminator

            d = recipe.discriminator
            self.discriminator = LatentDiscriminator(self.model.unet).to(self.accelerator.device)
            self.d_optimizer = make_optimizer(self.discriminator.parameters(), recipe.training.optimizer,
                                              d.learning_rate, betas=(d.beta1, d.beta2))
        for opt in (self.fake_optimizer, self.d_optimizer):  # several processes: average their gradients
            if opt is not None:
                opt.register_step_pre_hook(average_before_step)
        self.log_file = None
        self.generator = None  # the full UNet of a dmd stage with generator: unet (built at its start)

    # ---------------------------------------------------------------- bookkeeping
    def log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def _add_phase_adapters(self) -> None:
        """The feedback LoRA and the fake score exist from the start (zero until trained), so that
        every checkpoint has the same layout and resume can restore them."""
        feedback = [st for st in self.recipe.stages if st.method == "feedback"]
        if feedback:
            add_lora(self.model.unet, feedback[0].feedback.rank, feedback[0].feedback.rank,
                     self.recipe.lora.targets, name=FEEDBACK)
        dmd = [st for st in self.recipe.stages if st.method == "dmd"]
        self.fake_optimizer = None
        if dmd:
            add_lora(self.model.unet, dmd[0].dmd.fake_rank, dmd[0].dmd.fake_rank, self.recipe.lora.targets, name=FAKE)
            self.fake_optimizer = make_optimizer(self._adapter_parameters(FAKE), self.recipe.training.optimizer,
                                                 dmd[0].dmd.fake_learning_rate)

    def _adapter_parameters(self, name: str) -> list[torch.nn.Parameter]:
        return [p for k, p in self.model.unet.named_parameters() if f".{name}." in k and "lora_" in k]

    def _student_parameters(self, index: int | None = None) -> list[torch.nn.Parameter]:
        """What a stage trains: the feedback LoRA in a feedback stage, the full UNet of a full-UNet
        generator stage, else the student LoRA."""
        if index is not None and self._trains_unet(index):
            return list(self._generator_unet(index).parameters())
        method = self.recipe.stages[index].method if index is not None else "tscd"
        return self._adapter_parameters(FEEDBACK if method == "feedback" else STUDENT)

    def _trains_unet(self, index: int) -> bool:
        stage = self.recipe.stages[index]
        return stage.method == "dmd" and stage.dmd.generator == "unet"

    def _generator_unet(self, index: int):
        """The full-UNet student: base + the student's LoRAs (feedback at its merge ratio) fused into a
        copy; on resume its trained weights then come from the checkpoint."""
        from hypersd.lora import fused_unet

        if self.generator is None:
            self._set_feedback_scale(index)
            self.generator = fused_unet(self.model.unet, self._roles(index)[0]).requires_grad_(True)
        return self.generator

    def _roles(self, index: int) -> tuple[list[str], list[str]]:
        """Adapters active as (student, target) in stage `index`: a trained feedback LoRA joins both."""
        with_feedback = any(st.method == "feedback" for st in self.recipe.stages[: index + 1])
        extra = [FEEDBACK] if with_feedback else []
        return [STUDENT, *extra], [TARGET, *extra]

    def _set_feedback_scale(self, index: int) -> None:
        """During its own stage the feedback LoRA counts fully; afterwards at the merge ratio."""
        stages = self.recipe.stages
        done = [st for st in stages[:index] if st.method == "feedback"]
        if FEEDBACK in getattr(self.model.unet, "peft_config", {}):
            self._scale_feedback(done[-1].feedback.merge_ratio if done and stages[index].method != "feedback" else 1.0)

    def _scale_feedback(self, scale: float) -> None:
        from peft.tuners.lora import LoraLayer

        for module in self.model.unet.modules():
            if isinstance(module, LoraLayer) and FEEDBACK in module.scaling:
                module.set_scale(FEEDBACK, scale)

    def _needs_teacher_adapter(self, index: int) -> bool:
        return index > 0 and self.recipe.stages[index].teacher == "previous"

    def _add_teacher_adapter(self) -> None:
        unet = self.model.unet
        if TEACHER not in unet.peft_config:
            lora = self.recipe.lora
            add_lora(unet, lora.rank, lora.alpha, lora.targets, name=TEACHER)
            unet.set_adapter(STUDENT)

    def _start_stage(self, index: int) -> None:
        """Fresh stage: the target restarts from the student; teacher "previous" freezes a copy of it."""
        if self._needs_teacher_adapter(index):
            self._add_teacher_adapter()
            copy_adapter(self.model.unet, STUDENT, TEACHER)
        copy_adapter(self.model.unet, STUDENT, TARGET)

    # ---------------------------------------------------------------- the stages
    def train(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Run every stage; `stop_after` optimizer steps in all ends the run early (as a kill would)."""
        acc = self.accelerator
        if acc.is_main_process:  # only process 0 writes the run folder
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.yaml").write_text(self.recipe.to_yaml())
            self.log_file = (self.out / "log.jsonl").open("a")
        acc.wait_for_everyone()
        position = read_position(self.out / "checkpoint") if resume else None
        if resume and position is None:
            raise UserError(f"nothing to resume in {self.out} (no checkpoint)")
        torch.manual_seed(self.recipe.training.seed)
        pool = self.pool = build_pool(self.model.vae, self.recipe.data, model_dir=self.model_dir,
                                      rank=acc.process_index, world_size=acc.num_processes)
        if position is not None and hasattr(pool, "load_state_dict"):  # a stream continues where it was
            states = position.get("data") or [None]
            pool.load_state_dict(states[acc.process_index] if acc.process_index < len(states) else states[0])
        if acc.process_index > 0:  # its own batches and noise; process 0 keeps the single-process stream
            torch.manual_seed(self.recipe.training.seed + acc.process_index)
        self.log({"event": "data", **pool.info(), "resume": position})
        metrics_file = self.out / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if resume and metrics_file.is_file() else {"stages": {}}
        done_steps = 0
        for index, stage in enumerate(self.recipe.stages):
            if position is not None and index < position["stage"]:
                continue
            resuming = position is not None
            start = position["step"] if resuming else 0
            if resuming and self._needs_teacher_adapter(index) and start > 0:
                self._add_teacher_adapter()  # its weights come from the checkpoint
            if resuming and self._trains_unet(index):  # fuse the full UNet from the restored LoRAs (its own
                # trained weights, if the checkpoint has them, come with the restore below)
                restore_checkpoint(self.out / "checkpoint", self.model.unet, rank=acc.process_index)
            optimizer = self.accelerator.prepare(
                make_optimizer(self._student_parameters(index), self.recipe.training.optimizer, stage.learning_rate))
            if resuming:
                if not restore_checkpoint(self.out / "checkpoint", self.model.unet, *self._state(optimizer),
                                          rank=acc.process_index):
                    torch.manual_seed(self._reseed(position))  # written by fewer processes
                position = None
            if start == 0:
                self._start_stage(index)
            self._set_feedback_scale(index)
            budget = None if stop_after is None else stop_after - done_steps
            finished, ran = self._train_stage(index, stage, pool, optimizer, start, budget)
            done_steps += ran
            if hasattr(pool, "state_dict"):  # a stream's skip counts grow as it reads
                self.log({"event": "data", "after": stage_name(stage), **pool.info()})
            if not finished:
                return metrics
            metrics["stages"][stage_name(stage)] = self._finish_stage(index, stage)
            if self.accelerator.is_main_process:
                metrics_file.write_text(json.dumps(metrics, indent=2))
        acc.wait_for_everyone()  # every process returns once the run folder is complete
        return metrics

    def _reseed(self, position: dict) -> int:
        """A stream for a process that the checkpoint has no random state for: from seed, rank and position."""
        import hashlib

        key = f"{self.recipe.training.seed}/{self.accelerator.process_index}/{position['stage']}/{position['step']}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")

    def _train_stage(self, index: int, stage: Stage, pool, optimizer, start: int, budget: int | None):
        rec, acc, unet = self.recipe.training, self.accelerator, self.model.unet
        rng = rng_state()  # building models (rewards, segmenter) must not move the training stream
        method = self._method(index, stage, start)
        set_rng_state(rng)
        params = self._student_parameters(index)
        # The student role stays the active adapter set between calls: peft only accumulates gradients
        # into adapters that are active when backward runs. Active but not trained here (the TSCD LoRA
        # in a feedback stage, the feedback LoRA afterwards): their gradients are dropped every step.
        unet.set_adapter(self._roles(index)[0])
        trained = {id(p) for p in params}
        frozen = [p for name in self._roles(index)[0] for p in self._adapter_parameters(name) if id(p) not in trained]
        label = f"stage {index + 1}/{len(self.recipe.stages)} {stage_name(stage)}"
        batch = stage.dmd.batch_size if stage.method == "dmd" and stage.dmd.batch_size else rec.batch_size
        bar = progress(range(start, stage.iterations), desc=label, initial=start, total=stage.iterations,
                       disable=None if acc.is_main_process else True)
        ran, recent, tick = 0, [], time.time()
        for step in bar:
            if budget is not None and ran >= budget:
                return False, ran
            for _ in range(rec.gradient_accumulation):
                with acc.accumulate(unet), acc.autocast():
                    drawn = pool.draw(batch)
                    x0, captions = drawn.latents.to(acc.device), drawn.captions
                    cond = drawn.cond if drawn.cond is not None else self.model.encode_prompts(
                        captions, time_ids=drawn.time_ids)
                    parts = method.losses(x0, cond, self.model.unconditional(cond), captions)
                    loss = parts["loss"]
                    means = mean_over_processes(parts)  # the same on every process: all stop together
                    if not torch.isfinite(means["loss"]):
                        raise UserError(f"loss became {means['loss'].item()} at {stage_name(stage)} step {step}; "
                                        f"the last good checkpoint is kept in {self.out / 'checkpoint'}")
                    acc.backward(loss)
                    if acc.sync_gradients:
                        average_gradients(params)  # several processes: before clipping, as one big batch
                        acc.clip_grad_norm_(params, rec.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    for p in frozen:
                        p.grad = None
                    if "d_loss" in parts:  # the heads learn after the student's update
                        self.d_optimizer.zero_grad(set_to_none=True)
                        parts["d_loss"].backward()
                        self.d_optimizer.step()
            method.after_step()
            ran += 1
            recent = (recent + [means["loss"].item()])[-50:]
            if step % rec.log_every == 0 or step == stage.iterations - 1:
                rate = ran / max(time.time() - tick, 1e-9)
                self.log({"stage": stage_name(stage), "step": step, **{k: v.item() for k, v in means.items()},
                          "it_per_s": rate})
                bar.set_postfix(loss=f"{means['loss'].item():.4f}", refresh=False)
            if (step + 1) % rec.checkpoint_every == 0 or step == stage.iterations - 1:
                self._checkpoint(optimizer, index, step + 1)
        self._stage_stats = {"final_loss": sum(recent) / max(len(recent), 1),
                             "seconds": time.time() - tick, "steps": ran}
        return True, ran

    def _method(self, index: int, stage: Stage, start: int):
        """The stage's losses: TSCD, feedback learning or score distillation (see their modules)."""
        student, target = self._roles(index)
        shapes = self.recipe.data.source == "shapes"
        if stage.method == "feedback":
            method = FeedbackLearning(self.model, stage, student, seed=self._feedback_seed(index), shapes_data=shapes)
            method.step = start
            return method
        if stage.method == "dmd":
            feedback = None
            generator = self.model.with_unet(self._generator_unet(index)) if self._trains_unet(index) else None
            if stage.dmd.with_feedback:  # ReFL images start where the generator does: noise at t_g
                feedback = FeedbackLearning(generator or self.model, stage, student, seed=self._feedback_seed(index),
                                            shapes_data=shapes, first_timestep=stage.dmd.generator_timestep)
                feedback.step = start
            return ScoreDistillationStep(self.model, stage, student, target, self.fake_optimizer, feedback,
                                         generator_model=generator)
        return TSCD(self.model, stage, self.discriminator if stage.adversarial_weight > 0 else None,
                    student=student, target=target)

    def _feedback_seed(self, index: int) -> int:
        """The seed of a feedback stage's own annotated images: per stage, and per process."""
        return self.recipe.data.seed + index + 1000 * self.accelerator.process_index

    def _state(self, optimizer) -> tuple[dict, dict]:
        """(optimizers, modules) that a checkpoint holds besides the adapters."""
        optimizers, modules = {"student": optimizer}, {}
        if self.fake_optimizer is not None:
            optimizers["fake"] = self.fake_optimizer
        if self.generator is not None:
            modules["generator"] = self.generator
        if self.discriminator is not None:
            optimizers["discriminator"] = self.d_optimizer
            modules["discriminator"] = self.discriminator
        return optimizers, modules

    def _checkpoint(self, optimizer, index: int, step: int) -> None:
        states = gather_object([rng_state()])  # every process's stream (all processes call this)
        data = {"data": gather_object([self.pool.state_dict()])} if hasattr(self.pool, "state_dict") else {}
        if self.accelerator.is_main_process:
            save_checkpoint(self.out / "checkpoint", self.model.unet, {"stage": index, "step": step, **data},
                            *self._state(optimizer), rng_states=states)
            self.log({"event": "checkpoint", "stage": index, "step": step})

    def _finish_stage(self, index: int, stage: Stage) -> dict:
        name = stage_name(stage)
        path = self.out / "loras" / f"tscd-{name}.safetensors"
        if self._trains_unet(index):
            path = self.out / f"{name}-unet"
        if self.accelerator.is_main_process:
            if self._trains_unet(index):
                self._save_pipeline(stage, path)
            else:
                self._save_student(index, stage, path)
            self._sample_grid(index, stage)
        # the next stage starts at step 0 of stage index + 1
        if index + 1 < len(self.recipe.stages):
            self._checkpoint(None, index + 1, 0)
        stats = getattr(self, "_stage_stats", {})
        self.log({"event": "stage_end", "stage": name, "lora": str(path), **stats})
        return {"lora": str(path), **stats}

    def _save_student(self, index: int, stage: Stage, path: Path) -> None:
        """The stage's LoRA file: the student, merged with the feedback LoRA once there is one
        (delta W_student + merge_ratio * delta W_feedback; a feedback stage also keeps its own LoRA)."""
        from hypersd.lora_merge import merge_lora_files

        info = {"inference": stage_inference(stage), "extra": {"stage": stage_name(stage), "recipe": self.recipe.name}}
        student, _ = self._roles(index)
        if FEEDBACK not in student:
            save_lora(path, self.model.unet, STUDENT, **info)
            return
        ratio = [st for st in self.recipe.stages[: index + 1] if st.method == "feedback"][-1].feedback.merge_ratio
        feedback_file = path.with_name("feedback-lora.safetensors")
        if stage.method == "feedback":
            save_lora(feedback_file, self.model.unet, FEEDBACK, extra=info["extra"])
        else:
            feedback_file = self.out / "loras" / "feedback-lora.safetensors"
        student_file = save_lora(path.with_name(path.stem + ".student.tmp.safetensors"), self.model.unet,
                                 STUDENT, **info)
        merge_lora_files(student_file, feedback_file, path, ratio)
        student_file.unlink()

    def _generator_pipeline(self):
        """The teacher's pipeline with the full-UNet student in place of its UNet (shared modules)."""
        from hypersd.sampling import derived_pipeline

        return derived_pipeline(self.model.pipe, unet=self.generator)

    def _save_pipeline(self, stage: Stage, folder: Path) -> None:
        """A full-UNet student as a complete diffusers pipeline folder (safetensors), its sampling
        settings in hypersd_inference.json (read by `hypersd sample --model FOLDER`)."""
        from hypersd.sampling import save_pipeline

        save_pipeline(self._generator_pipeline(), folder, stage_inference(stage))

    @torch.no_grad()
    def _sample_grid(self, index: int, stage: Stage) -> None:
        from hypersd.prompts import standard_prompts
        from hypersd.sampling import SampleSettings, generate, write_samples

        prompts = standard_prompts()[: self.recipe.samples.prompts]
        if not prompts:
            return
        inference = stage_inference(stage)
        settings = SampleSettings(steps=inference["steps"], scheduler=inference["scheduler"], guidance=0.0,
                                  eta=inference.get("eta"), timesteps=inference.get("timesteps"),
                                  seed=self.recipe.samples.seed, batch_size=64)
        state = rng_state()  # sampling must not change the training stream
        self.model.unet.set_adapter(self._roles(index)[0])
        if stage.method == "feedback":  # sample what the file holds: the feedback LoRA at the merge ratio
            self._scale_feedback(stage.feedback.merge_ratio)
        pipe = self._generator_pipeline() if self._trains_unet(index) else self.model.pipe
        images = generate(pipe, prompts, settings)
        if stage.method == "feedback":
            self._scale_feedback(1.0)
        set_rng_state(state)
        seeds = [settings.seed + i for i in range(len(prompts))]
        write_samples(self.out / "samples" / stage_name(stage), images, prompts, seeds, settings)


def estimate_teacher_evaluations(recipe: Recipe) -> int:
    """UNet sample-evaluations per run (guided teacher 2, target 1, student 1 per sample and step)."""
    per_step = 4 * recipe.training.batch_size * recipe.training.gradient_accumulation
    return int(math.fsum(stage.iterations * per_step for stage in recipe.stages))
