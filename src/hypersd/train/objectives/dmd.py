"""Score distillation for the one-step and few-step generator (Hyper-SD section 3.3), as DMD2 does it
(Yin et al. 2024b, "Improved Distribution Matching Distillation for Fast Image Synthesis",
arXiv 2405.14867; DMD: Yin et al. 2024a).

The generator is the student (its adapters on the shared base, or a full UNet), reading x_t at
timestep t and jumping to x0. Without backward simulation x_t is pure noise read as x_{t_g}
(t_g = 999 for the unified LoRA, 800 for the dedicated one-step model). With backward simulation
(DMD2 sec. 4.5) an n-step schedule is drawn from `dmd.backward_simulation` and a step i of it; the
generator's input at t_i is what the student's own sampler makes from noise in i steps (no
gradient), so a multi-step generator learns from the trajectories it will meet at inference.

The real score is the teacher (adapters disabled) with classifier-free guidance; the fake score is
LoRA adapter "fake" on the same frozen base, trained by the denoising loss on the generator's samples,
`fake_updates` times per generator update with its own learning rate (DMD2's two time-scale update
rule, sec. 4.2). With `gan_weight` > 0 a small classifier head reads the fake score's UNet encoder
features (DMD2 sec. 4.3): it learns real latents noised vs generated ones noised (in the fake score's
update, which also shapes the fake LoRA), and the generator gets the non-saturating GAN loss.

Generator loss: dmd_weight * DMD (eq. 7-8 of DMD: grad = (x0_fake(x_t) - x0_real(x_t)) / mean|x -
x0_real(x_t)|, loss = 0.5 ||x - sg(x - grad)||^2) + gan_weight * softplus(-D(x_t)) + mse_weight * the
TSCD consistency MSE + regression_weight * DMD's regression loss on teacher pairs (DMD eq. 9: d(G(z),
y), y the teacher's deterministic sample from z; hypersd.data.pairs) + the feedback terms with
dmd.with_feedback. mse_weight = regression_weight = 0 is DMD2's regression-free training. With
dmd_weight = gan_weight = 0 (a pure regression stage) the fake score is not updated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hypersd.core.losses import discriminator_loss, dmd_gradient, dmd_loss, generator_loss, mse, pseudo_huber
from hypersd.core.segments import trailing_timesteps
from hypersd.core.solver import predict_x0
from hypersd.lora.adapters import FAKE
from hypersd.train.objectives.tscd import TSCD


def generate_x0(model, student, x_t: torch.Tensor, t, cond) -> torch.Tensor:
    """One generator call: x_t read at timestep t (an int or one per sample), jump to x0 (no guidance)."""
    t = torch.as_tensor(t, device=x_t.device, dtype=torch.long).expand(x_t.shape[0])
    with model.using_lora(student):
        return predict_x0(x_t, model.eps(x_t, t, cond), t, model.alphas_cumprod.to(x_t.device))


def simulation_timesteps(steps: int, top: int) -> list[int]:
    """The generator's timesteps for `steps`-step sampling: trailing DDIM spacing (999, 499 for 2
    steps), the first one replaced by the generator's own timestep `top`."""
    return [top, *trailing_timesteps(steps)[1:]]


def backward_simulate(jump, renoise, noise: torch.Tensor, timesteps: list[int], stop: int) -> torch.Tensor:
    """x at timesteps[stop]: from pure noise at timesteps[0], `stop` steps of the consistency sampler
    (DMD2 sec. 4.5): x0 = jump(x, t_i), then x = renoise(x0, t_{i+1}) with fresh noise."""
    x = noise
    for i in range(stop):
        x = renoise(jump(x, timesteps[i]), timesteps[i + 1])
    return x


class ScoreDistillation:
    """An Objective (hypersd.train.objectives.base): DMD2 for a one- or few-step generator, plus the
    consistency and feedback terms. generator_model: the model the generator runs on when it is not
    the student LoRA on `model` (dmd.generator: unet; see SDModel.with_unet). classifier: the GAN
    head on the fake score's encoder (hypersd.models.discriminator.LatentDiscriminator with adapter
    "fake"), whose parameters the fake optimizer also steps; needed when dmd.gan_weight > 0."""

    def __init__(self, model, stage, student, target, fake_optimizer, feedback=None, generator_model=None,
                 classifier=None, pairs=None):
        self.model, self.stage, self.cfg, self.student = model, stage, stage.dmd, student
        self.pairs = pairs  # hypersd.data.pairs.TeacherPairs, for regression_weight > 0
        if self.cfg.regression_weight > 0 and pairs is None:
            raise ValueError("dmd.regression_weight > 0 needs the teacher pairs")
        self.generator = generator_model or model
        self.fake_optimizer, self.feedback, self.classifier = fake_optimizer, feedback, classifier
        if self.cfg.gan_weight > 0 and classifier is None:
            raise ValueError("dmd.gan_weight > 0 needs the classifier head on the fake score")
        self.consistency = TSCD(model, stage, student=student, target=target) if stage.mse_weight > 0 else None
        self.ac = model.alphas_cumprod.to(model.device)

    def _times(self, n: int, device) -> torch.Tensor:
        return torch.randint(self.cfg.t_min, self.cfg.t_max + 1, (n,), device=device)

    # ---------------------------------------------------------------- the generator's inputs and samples
    def simulation_point(self) -> tuple[list[int], int]:
        """(timesteps of the drawn n-step schedule, the step whose input the generator gets)."""
        if not self.cfg.backward_simulation:
            return [self.cfg.generator_timestep], 0
        # drawn from torch's stream, which checkpoints keep: a resumed run draws the same
        choices = self.cfg.backward_simulation
        steps = choices[int(torch.randint(len(choices), ()))]
        return simulation_timesteps(steps, self.cfg.generator_timestep), int(torch.randint(steps, ()))

    @torch.no_grad()
    def generator_input(self, noise: torch.Tensor, cond) -> tuple[torch.Tensor, int]:
        """(x_t, t) the generator reads: pure noise at t_g, or a backward-simulated point."""
        timesteps, stop = self.simulation_point()
        m = self.model

        def jump(x, t):
            return generate_x0(self.generator, self.student, x, t, cond)

        def renoise(x0, t):
            return m.add_noise(x0, torch.randn_like(x0), torch.full((x0.shape[0],), t, device=x0.device))

        return backward_simulate(jump, renoise, noise, timesteps, stop).to(noise.dtype), timesteps[stop]

    def sample(self, noise: torch.Tensor, cond) -> torch.Tensor:
        x_t, t = self.generator_input(noise, cond)
        return generate_x0(self.generator, self.student, x_t, t, cond)

    # ---------------------------------------------------------------- the fake score (and the head)
    def update_fake(self, x: torch.Tensor, cond, real: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step of the fake score on the generator's (detached) samples x: its denoising loss,
        plus, with the GAN head, gan_classifier_weight * the head's loss on real latents `real`
        (noised) vs x (noised) through the fake score's encoder."""
        m, cfg = self.model, self.cfg
        t, noise = self._times(x.shape[0], x.device), torch.randn_like(x)
        x_t = m.add_noise(x.detach(), noise, t)
        parts = {}
        with m.using_lora(FAKE):
            parts["fake"] = F.mse_loss(m.eps(x_t, t, cond), noise)
            loss = parts["fake"]
            if self.classifier is not None and real is not None:
                t_real = self._times(real.shape[0], real.device)
                real_t = m.add_noise(real, torch.randn_like(real), t_real)
                parts["classifier"] = discriminator_loss(self.classifier(m, real_t, t_real, cond),
                                                     self.classifier(m, x_t, t, cond)).mean()
                loss = loss + cfg.gan_classifier_weight * parts["classifier"]
            self.fake_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.fake_optimizer.step()
        return {k: v.detach() for k, v in parts.items()}

    # ---------------------------------------------------------------- the generator's loss
    @property
    def distribution_matching(self) -> bool:
        """Whether the fake score is needed: the DMD or the GAN term is on."""
        return self.cfg.dmd_weight > 0 or self.cfg.gan_weight > 0

    def regression(self, n: int, device) -> torch.Tensor:
        """DMD's regression loss (DMD sec. 3.3, eq. 9) on n stored teacher pairs: the generator reads the
        pair's noise at its own timestep t_g and jumps to x0, compared with the teacher's sample y."""
        cfg = self.cfg
        z, y, captions = self.pairs.draw(n, device)
        x0 = generate_x0(self.generator, self.student, z, cfg.generator_timestep, self.model.encode_prompts(captions))
        if cfg.regression_distance == "mse":
            return mse(x0, y).mean()
        return pseudo_huber(x0, y, cfg.regression_huber_c).mean()

    def losses(self, x0, cond, uncond, captions=None) -> dict[str, torch.Tensor]:
        """`fake_updates` fake-score steps on fresh generator samples, then the generator's loss:
        dmd_weight * DMD (DMD eq. 7-8: the sample noised to x_t, real score = guided teacher, fake
        score = the fake LoRA) + gan_weight * the non-saturating GAN loss of the head (DMD2 sec. 4.3)
        + regression_weight * DMD's regression loss on teacher pairs + mse_weight * the TSCD consistency
        MSE + the feedback terms (Hyper-SD section 3.3)."""
        cfg, st = self.cfg, self.stage
        parts, total = {}, x0.new_zeros(())
        if self.distribution_matching:
            parts, total = self._distribution_matching(x0, cond, uncond)
        if cfg.regression_weight > 0:
            parts["regression"] = self.regression(cfg.regression_batch_size or x0.shape[0], x0.device)
            total = total + cfg.regression_weight * parts["regression"]
        if self.consistency is not None:
            parts["mse"] = self.consistency.losses(x0, cond, uncond)["mse"]
            total = total + st.mse_weight * parts["mse"]
        if self.feedback is not None:
            fb = self.feedback.losses(x0, cond, uncond, captions)
            parts.update({k if k != "loss" else "feedback": v for k, v in fb.items()})
            total = total + fb["loss"]
        parts["loss"] = total
        return parts

    def _distribution_matching(self, x0, cond, uncond) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The fake-score updates, then dmd_weight * DMD + gan_weight * GAN on a fresh generator sample."""
        m, cfg = self.model, self.cfg
        parts = {}
        for _ in range(cfg.fake_updates):
            with torch.no_grad():
                sample = self.sample(torch.randn_like(x0), cond)
            parts.update(self.update_fake(sample, cond, x0))
        x = self.sample(torch.randn_like(x0), cond)
        t, eps = self._times(x.shape[0], x.device), torch.randn_like(x)
        x_t = m.add_noise(x.detach(), eps, t)
        with torch.no_grad():
            with m.using_lora(None):
                w = torch.full((x.shape[0],), cfg.guidance, device=x.device)
                x0_real = predict_x0(x_t, m.guided_eps(x_t, t, cond, uncond, w), t, self.ac)
            with m.using_lora(FAKE):
                x0_fake = predict_x0(x_t, m.eps(x_t, t, cond), t, self.ac)
            grad = dmd_gradient(x.detach(), x0_real, x0_fake)
        parts["dmd"] = dmd_loss(x, grad)
        total = cfg.dmd_weight * parts["dmd"]
        if cfg.gan_weight > 0:  # the same noised point, with gradient into x
            parts["gan"] = generator_loss(self.classifier(m, m.add_noise(x, eps, t), t, cond)).mean()
            total = total + cfg.gan_weight * parts["gan"]
        return parts, total

    def after_step(self) -> None:
        if self.consistency is not None:
            self.consistency.after_step()
        if self.feedback is not None:
            self.feedback.after_step()
