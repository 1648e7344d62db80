"""Score distillation for the one-step generator (Hyper-SD section 3.3; DMD, Yin et al. 2024).

The generator is the student (its adapters on the shared base), fed pure noise as if it were
x_{t_g} (t_g = 999 for the unified LoRA, 800 for the dedicated one-step model) and jumping to x0.
The real score is the teacher (adapters disabled) with classifier-free guidance; the fake score is
LoRA adapter "fake" on the same frozen base, trained continuously by the ordinary denoising loss on
the generator's samples (`fake_updates` of its updates per generator update).

Generator loss (DMD eq. 7-8, with its normaliser): noise the sample x to x_t, t ~ U[t_min, t_max],
grad = (x0_fake(x_t) - x0_real(x_t)) / mean|x - x0_real(x_t)|, loss = 0.5 ||x - sg(x - grad)||^2,
whose gradient w.r.t. x is grad. Added: the stage's TSCD MSE term towards the consistency target
(k = stage.segments, usually 1) and, with dmd.with_feedback, the feedback terms (section 3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hypersd.core.losses import dmd_gradient, dmd_loss
from hypersd.core.solver import predict_x0
from hypersd.lora.adapters import FAKE
from hypersd.train.objectives.tscd import TSCD


def generate_x0(model, student, noise: torch.Tensor, t_g: int, cond) -> torch.Tensor:
    """One generator call: pure noise read as x_{t_g}, jump to x0 (no guidance)."""
    t = torch.full((noise.shape[0],), t_g, device=noise.device, dtype=torch.long)
    with model.using_lora(student):
        return predict_x0(noise, model.eps(noise, t, cond), t, model.alphas_cumprod.to(noise.device))


class ScoreDistillation:
    """An Objective (hypersd.train.objectives.base): DMD for a one-step generator, plus the
    consistency and feedback terms. generator_model: the model the generator runs on when it is not
    the student LoRA on `model` (dmd.generator: unet, a full trainable UNet beside the frozen base;
    see SDModel.with_unet)."""

    def __init__(self, model, stage, student, target, fake_optimizer, feedback=None, generator_model=None):
        self.model, self.stage, self.cfg, self.student = model, stage, stage.dmd, student
        self.generator = generator_model or model
        self.fake_optimizer, self.feedback = fake_optimizer, feedback
        self.consistency = TSCD(model, stage, student=student, target=target) if stage.mse_weight > 0 else None
        self.ac = model.alphas_cumprod.to(model.device)

    def _times(self, n: int, device) -> torch.Tensor:
        return torch.randint(self.cfg.t_min, self.cfg.t_max + 1, (n,), device=device)

    def update_fake(self, x: torch.Tensor, cond) -> torch.Tensor:
        """One denoising step of the fake score on the generator's (detached) samples."""
        t, noise = self._times(x.shape[0], x.device), torch.randn_like(x)
        with self.model.using_lora(FAKE):
            loss = F.mse_loss(self.model.eps(self.model.add_noise(x.detach(), noise, t), t, cond), noise)
            self.fake_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.fake_optimizer.step()
        return loss.detach()

    def losses(self, x0, cond, uncond, captions=None) -> dict[str, torch.Tensor]:
        """`fake_updates` fake-score steps on fresh generator samples, then the generator's loss:
        dmd_weight * DMD (Yin et al. 2024, eq. 7-8: the sample noised to x_t, real score = guided
        teacher, fake score = the fake LoRA) + mse_weight * the TSCD consistency MSE + the feedback
        terms (Hyper-SD section 3.3)."""
        m, cfg, st = self.model, self.cfg, self.stage
        noise = torch.randn_like(x0)
        parts = {}
        for _ in range(cfg.fake_updates):
            with torch.no_grad():
                sample = generate_x0(self.generator, self.student, torch.randn_like(x0), cfg.generator_timestep, cond)
            parts["fake"] = self.update_fake(sample, cond)
        x = generate_x0(self.generator, self.student, noise, cfg.generator_timestep, cond)
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
        if self.consistency is not None:
            parts["mse"] = self.consistency.losses(x0, cond, uncond)["mse"]
            total = total + st.mse_weight * parts["mse"]
        if self.feedback is not None:
            fb = self.feedback.losses(x0, cond, uncond, captions)
            parts.update({k if k != "loss" else "feedback": v for k, v in fb.items()})
            total = total + fb["loss"]
        parts["loss"] = total
        return parts

    def after_step(self) -> None:
        if self.consistency is not None:
            self.consistency.after_step()
        if self.feedback is not None:
            self.feedback.after_step()
