"""One stage of a run: its objective, its inner loop (Algorithm 1's loop: draw a batch, take the
objective's losses, step the trained parameters, update the target), and what it leaves behind."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from hypersd.data.pairs import load_pairs
from hypersd.errors import UserError
from hypersd.inference.sample import generate, write_samples
from hypersd.inference.settings import SampleSettings
from hypersd.io import save_tensors, temporary_name
from hypersd.lora.adapters import FEEDBACK, STUDENT, set_adapter_scale
from hypersd.lora.files import save_lora
from hypersd.lora.merge import merge_lora_files
from hypersd.models.pipelines import derived_pipeline, save_pipeline
from hypersd.progress import progress
from hypersd.rewards import load_perceptual, load_reward
from hypersd.shapes.prompts import standard_prompts
from hypersd.train.checkpoint import fault_point, latest_checkpoint, preserved_rng
from hypersd.train.curves import plot_progress
from hypersd.train.objectives.base import Objective
from hypersd.train.objectives.dmd import ScoreDistillation
from hypersd.train.objectives.feedback import FeedbackLearning
from hypersd.train.objectives.tscd import TSCD
from hypersd.train.outputs import FEEDBACK_LORA, snapshot_unet, stage_inference, stage_name, stage_output
from hypersd.train.parallel import average_gradients
from hypersd.train.recipe import Stage


@dataclass
class StageResult:
    finished: bool      # False: the run's step budget ended it early (as a kill would)
    steps: int          # optimizer steps taken in this call
    final_loss: float   # mean logged loss of the last 50 steps
    seconds: float      # of this call
    start: int = 0      # the step this call started at (> 0: resumed)


class StageLoop:
    """Stage `index` of `run` (a hypersd.train.run.Run), from step `start`."""

    def __init__(self, run, index: int, stage: Stage, optimizer, start: int):
        self.run, self.index, self.stage, self.optimizer, self.start = run, index, stage, optimizer, start

    # ---------------------------------------------------------------- the objective
    def objective(self) -> Objective:
        """TSCD, feedback learning or score distillation (see hypersd.train.objectives)."""
        run, stage = self.run, self.stage
        student, target = run.roles(self.index)
        if stage.method == "feedback":
            return self._feedback(run.model)
        if stage.method == "dmd":
            generator = run.model.with_unet(run.generator_unet(self.index)) if run.trains_unet(self.index) else None
            feedback = None
            if stage.dmd.with_feedback:  # ReFL images start where the generator does: noise at t_g
                feedback = self._feedback(generator or run.model, first_timestep=stage.dmd.generator_timestep)
            pairs = load_pairs(stage.dmd.regression_pairs) if stage.dmd.regression_weight > 0 else None
            return ScoreDistillation(run.model, stage, student, target, run.fake_optimizer, feedback,
                                     generator_model=generator,
                                     classifier=run.score_classifier if stage.dmd.gan_weight > 0 else None,
                                     pairs=pairs)
        return TSCD(run.model, stage, run.discriminator if stage.adversarial_weight > 0 else None,
                    student=student, target=target)

    def _feedback(self, model, first_timestep: int | None = None) -> FeedbackLearning:
        """Feedback learning with the stage's reward and perceptual plug-ins (hypersd.rewards); its
        annotated images are seeded per stage and per process."""
        run, cfg = self.run, self.stage.feedback
        rewards = [load_reward(spec).to(model.device) for spec in cfg.rewards] if cfg.reward_weight > 0 else []
        perceptual = None
        if cfg.perceptual_weight > 0:
            if run.recipe.data.source != "shapes":
                raise UserError("the perceptual loss needs Shapes images with instance masks; set "
                                "feedback.perceptual_weight: 0 for other data")
            perceptual = load_perceptual(cfg.segmenter).to(model.device)
        seed = run.recipe.data.seed + self.index + 1000 * run.accelerator.process_index
        method = FeedbackLearning(model, self.stage, run.roles(self.index)[0], rewards, perceptual, seed=seed,
                                  first_timestep=first_timestep)
        method.step = self.start
        return method

    # ---------------------------------------------------------------- the loop
    def train(self, budget: int | None) -> StageResult:
        """Optimizer steps from `start` to the stage's end, or `budget` of them."""
        run, stage, index = self.run, self.stage, self.index
        rec, acc, unet = run.recipe.training, run.accelerator, run.model.unet
        with preserved_rng():  # building models (rewards, segmenter) must not move the training stream
            objective = self.objective()
        params = run.trained_parameters(index)
        # The student role stays the active adapter set between calls: peft only accumulates gradients
        # into adapters that are active when backward runs. Active but not trained here (the TSCD LoRA
        # in a feedback stage, the feedback LoRA afterwards): their gradients are dropped every step.
        unet.set_adapter(run.roles(index)[0])
        trained = {id(p) for p in params}
        frozen = [p for name in run.roles(index)[0] for p in run.adapter_parameters(name) if id(p) not in trained]
        label = f"stage {index + 1}/{len(run.recipe.stages)} {stage_name(stage)}"
        batch = stage.dmd.batch_size if stage.method == "dmd" and stage.dmd.batch_size else rec.batch_size
        bar = progress(range(self.start, stage.iterations), desc=label, initial=self.start, total=stage.iterations,
                       disable=None if acc.is_main_process else True)
        ran, recent, tick, base = 0, [], time.time(), run.elapsed
        for step in bar:
            if budget is not None and ran >= budget:
                run.elapsed = base + time.time() - tick
                return StageResult(False, ran, float("nan"), time.time() - tick, self.start)
            for _ in range(rec.gradient_accumulation):
                means = self._micro_step(objective, params, frozen, batch, step)
            objective.after_step()
            fault_point("step")
            ran += 1
            recent = (recent + [means["loss"].item()])[-50:]
            run.elapsed = base + time.time() - tick  # training seconds of the whole run, across resumes
            if step % rec.log_every == 0 or step == stage.iterations - 1:
                rate = ran / max(time.time() - tick, 1e-9)
                run.log({"stage": stage_name(stage), "step": step, **{k: v.item() for k, v in means.items()},
                         "it_per_s": rate, "eta_s": round((stage.iterations - step - 1) / rate, 1),
                         "elapsed_s": round(run.elapsed, 1)})
                bar.set_postfix(loss=f"{means['loss'].item():.4f}", refresh=False)
            if rec.eval_every and (step + 1) % rec.eval_every == 0 and run.monitor is not None:
                spent = time.time()
                self.quick_eval(step + 1)
                tick += time.time() - spent  # evaluation time is not training time
            if rec.save_lora_every and (step + 1) % rec.save_lora_every == 0:
                self.snapshot(step + 1)
            if (step + 1) % rec.checkpoint_every == 0 or step == stage.iterations - 1:
                run.checkpoint(self.optimizer, index, step + 1)
        return StageResult(True, ran, sum(recent) / max(len(recent), 1), time.time() - tick, self.start)

    def snapshot(self, step: int) -> None:
        """RUN/snapshots/<stage>-<step>.safetensors: the student LoRA as the stage's file would hold it now;
        for a full-UNet generator, its weights as a checkpoint holds them (<stage>-unet-<step>.safetensors,
        readable by --init-unet, `hypersd unet export` and `generate --unet`)."""
        run = self.run
        if not run.accelerator.is_main_process:
            return
        if run.trains_unet(self.index):
            save_tensors({k: v.detach().cpu() for k, v in run.generator_unet(self.index).state_dict().items()},
                         snapshot_unet(run.out, stage_name(self.stage), step), what="generator snapshot")
            return
        path = run.out / "snapshots" / f"{stage_name(self.stage)}-{step:07d}.safetensors"
        _save_student(run, self.index, self.stage, path)

    def quick_eval(self, step: int) -> None:
        """The run's monitor (e.g. ShapesEval on 120 prompts) on the student as it is now, at each
        step count it is meant for; logged as a "quick_eval" record and drawn in progress.png."""
        run = self.run
        if not run.accelerator.is_main_process:
            return
        with preserved_rng(), stage_pipeline(run, self.index, self.stage) as pipe:
            scores = {f"@{s.steps}": run.monitor(pipe, s) for s in monitor_settings(self.stage)}
        run.log({"event": "quick_eval", "stage": stage_name(self.stage), "step": step,
                 "elapsed_s": round(run.elapsed, 1), "scores": scores})
        plot_progress(run.out)

    def _micro_step(self, objective: Objective, params, frozen, batch: int, step: int) -> dict[str, torch.Tensor]:
        """One batch: losses, backward, the optimizer step (at the accumulation boundary), then the
        discriminator heads; returns the loss parts averaged over the processes."""
        run, acc = self.run, self.run.accelerator
        with acc.accumulate(run.model.unet), acc.autocast():
            drawn = run.batches.draw(batch)
            x0, captions = drawn.latents.to(acc.device), drawn.captions
            cond = drawn.cond if drawn.cond is not None else run.model.encode_prompts(captions, time_ids=drawn.time_ids)
            parts = objective.losses(x0, cond, run.model.unconditional(cond), captions)
            loss = parts["loss"]
            # the same on every process: all stop together
            means = acc.reduce({k: v.detach() for k, v in parts.items()}, reduction="mean")
            if not torch.isfinite(means["loss"]):
                kept = latest_checkpoint(run.out)
                where = f"the last good checkpoint is kept in {kept}" if kept else "no checkpoint was written yet"
                raise UserError(f"loss became {means['loss'].item()} at {stage_name(self.stage)} step {step}; {where}")
            acc.backward(loss)
            if acc.sync_gradients:
                average_gradients(params)  # several processes: before clipping, as one big batch
                acc.clip_grad_norm_(params, run.recipe.training.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            for p in frozen:
                p.grad = None
            if "d_loss" in parts:  # the heads learn after the student's update
                run.d_optimizer.zero_grad(set_to_none=True)
                parts["d_loss"].backward()
                run.d_optimizer.step()
        return means


# -------------------------------------------------------------------- what a finished stage leaves
def finish_stage(run, index: int, stage: Stage, result: StageResult) -> dict:
    """Write the stage's model and sample grid (process 0), checkpoint the start of the next stage,
    log the stage's end; returns its entry of metrics.json."""
    path = stage_output(run.out, stage)
    if run.accelerator.is_main_process:
        if run.trains_unet(index):
            save_pipeline(_generator_pipeline(run), path, stage_inference(stage))
        else:
            _save_student(run, index, stage, path)
        _sample_grid(run, index, stage)
    if index + 1 < len(run.recipe.stages):  # the next stage starts at step 0 of stage index + 1
        run.checkpoint(None, index + 1, 0)
    stats = {"final_loss": result.final_loss, "seconds": result.seconds, "steps": stage.iterations,
             **({"resumed_at_step": result.start} if result.start else {})}
    run.log({"event": "stage_end", "stage": stage_name(stage), "lora": str(path), **stats})
    if run.accelerator.is_main_process:
        plot_progress(run.out)
    return {"lora": str(path), **stats}


def _save_student(run, index: int, stage: Stage, path) -> None:
    """The stage's LoRA file: the student, merged with the feedback LoRA once there is one
    (delta W_student + merge_ratio * delta W_feedback; a feedback stage also keeps its own LoRA)."""
    unet = run.model.unet
    info = {"inference": stage_inference(stage), "extra": {"stage": stage_name(stage), "recipe": run.recipe.name}}
    if FEEDBACK not in run.roles(index)[0]:
        save_lora(path, unet, STUDENT, **info)
        return
    feedback_file = run.out / "loras" / FEEDBACK_LORA
    if stage.method == "feedback":
        save_lora(feedback_file, unet, FEEDBACK, extra=info["extra"])
    student_file = save_lora(temporary_name(path, "student"), unet, STUDENT, **info)
    try:
        merge_lora_files(student_file, feedback_file, path, run.merge_ratio(index))
    finally:
        student_file.unlink(missing_ok=True)


def _generator_pipeline(run):
    """The teacher's pipeline with the full-UNet student in place of its UNet (shared modules)."""
    return derived_pipeline(run.model.pipe, unet=run.generator)


def stage_settings(stage: Stage, steps: int | None = None, seed: int = 0) -> SampleSettings:
    """How the stage's model samples (its metadata's settings), at `steps` steps if given."""
    inference = stage_inference(stage)
    return SampleSettings(steps=steps or inference["steps"], scheduler=inference["scheduler"], guidance=0.0,
                          eta=inference.get("eta"), timesteps=inference.get("timesteps"), seed=seed, batch_size=64)


def monitor_settings(stage: Stage) -> list[SampleSettings]:
    """What a quick evaluation samples: every step count a backward-simulated generator learns
    (the unified LoRA: 1, 2, 4), else the stage's own."""
    counts = stage.dmd.backward_simulation if stage.method == "dmd" and stage.dmd.generator_timestep == 999 else []
    return [stage_settings(stage, n) for n in dict.fromkeys(counts)] or [stage_settings(stage)]  # once each


@contextlib.contextmanager
def stage_pipeline(run, index: int, stage: Stage):
    """The run's pipeline sampling the stage's model as its file will hold it (the student's
    adapters; a feedback stage's LoRA at its merge ratio; a full-UNet generator)."""
    run.model.unet.set_adapter(run.roles(index)[0])
    if stage.method == "feedback":
        set_adapter_scale(run.model.unet, FEEDBACK, stage.feedback.merge_ratio)
    try:
        yield _generator_pipeline(run) if run.trains_unet(index) else run.model.pipe
    finally:
        if stage.method == "feedback":
            set_adapter_scale(run.model.unet, FEEDBACK, 1.0)


@torch.no_grad()
def _sample_grid(run, index: int, stage: Stage) -> None:
    """The first `samples.prompts` standard prompts with the stage's model at its own settings."""
    prompts = standard_prompts()[: run.recipe.samples.prompts]
    if not prompts:
        return
    settings = stage_settings(stage, seed=run.recipe.samples.seed)
    with preserved_rng(), stage_pipeline(run, index, stage) as pipe:  # sampling must not move the training stream
        images = generate(pipe, prompts, settings)
    seeds = [settings.seed + i for i in range(len(prompts))]
    write_samples(run.out / "samples" / stage_name(stage), images, prompts, seeds, settings)
