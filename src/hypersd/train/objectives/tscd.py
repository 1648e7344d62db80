"""Trajectory Segmented Consistency Distillation, one stage (Hyper-SD, Ren et al. 2024, Algorithm 1).

Three networks, one UNet: the student is LoRA adapter "student"; the target network is adapter
"target", an exponential moving average of the student; the teacher is the UNet with adapters
disabled (the original model) or adapter "teacher" (the previous stage's student, frozen).
"""

from __future__ import annotations

import torch

from hypersd.core.losses import discriminator_loss, generator_loss, mse, pseudo_huber
from hypersd.core.segments import sample_grid_pair, sample_t_end, segment_boundary
from hypersd.core.solver import ddim_jump, training_grid
from hypersd.errors import UserError
from hypersd.lora.adapters import STUDENT, TARGET, TEACHER, ema_update, has_adapter
from hypersd.train.recipe import Stage


class TSCD:
    """An Objective (hypersd.train.objectives.base): one TSCD stage with k = stage.segments."""

    def __init__(self, model, stage: Stage, discriminator=None, student=STUDENT, target=TARGET):
        """`student`, `target`: the adapter(s) active in each role (lists once a feedback LoRA joins both)."""
        if stage.adversarial_weight > 0 and discriminator is None:
            raise UserError("a stage with adversarial_weight > 0 needs a discriminator")
        self.model, self.stage, self.discriminator = model, stage, discriminator
        self.student, self.target_adapters = student, target
        self.grid = training_grid(model.num_train_timesteps, stage.skip)
        self.alphas_cumprod = model.alphas_cumprod.to(model.device)
        self.teacher_adapter = TEACHER if stage.teacher == "previous" and has_adapter(model.unet, TEACHER) else None

    def _noise(self, x0: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x0)
        if self.stage.offset_noise > 0:  # a per-sample, per-channel constant
            noise = noise + self.stage.offset_noise * torch.randn(*x0.shape[:2], *([1] * (x0.ndim - 2)),
                                                                  device=x0.device, dtype=x0.dtype)
        return noise

    def sample_times(self, batch: int, device) -> dict[str, torch.Tensor]:
        """t_n, t_{n-1}, t_b, t_end and the guidance scale w for one batch (Algorithm 1, lines 3-6)."""
        st = self.stage
        t_n, t_prev = sample_grid_pair(self.grid, batch)
        t_b = segment_boundary(t_n, t_prev, st.segments, self.model.num_train_timesteps)
        t_end = sample_t_end(t_b, t_prev, st.t_end)
        w = st.guidance_min + (st.guidance_max - st.guidance_min) * torch.rand(batch)
        return {k: v.to(device) for k, v in dict(t_n=t_n, t_prev=t_prev, t_b=t_b, t_end=t_end, w=w).items()}

    def condition(self, cond, uncond):
        """The conditioning every network of the step sees: the captions, or under guidance_mode preserved
        the empty prompt for a `caption_dropout` share of the samples, so the student learns the teacher's
        unconditional trajectories beside its conditional ones and CFG can be applied to it later."""
        st = self.stage
        if st.guidance_mode != "preserved" or st.caption_dropout == 0:
            return cond
        dropped = torch.rand(len(cond.hidden_states)) < st.caption_dropout
        return cond.where(dropped.to(cond.hidden_states.device), uncond)

    @torch.no_grad()
    def target(self, x_tn, times, cond, uncond) -> torch.Tensor:
        """Psi(x_hat_{n-1}, f_target(x_hat_{n-1}, t_{n-1}), t_end) with x_hat_{n-1} the guided teacher's jump."""
        m, ac = self.model, self.alphas_cumprod
        with m.using_lora(self.teacher_adapter):
            if bool((times["w"] == 1).all()):  # e_u + 1 (e_c - e_u) = e_c: one UNet half is enough
                eps_teacher = m.eps(x_tn, times["t_n"], cond)
            else:
                eps_teacher = m.guided_eps(x_tn, times["t_n"], cond, uncond, times["w"])
        x_prev = ddim_jump(x_tn, eps_teacher, times["t_n"], times["t_prev"], ac)
        with m.using_lora(self.target_adapters):
            eps_target = m.eps(x_prev, times["t_prev"], cond)
        return ddim_jump(x_prev, eps_target, times["t_prev"], times["t_end"], ac)

    def prediction(self, x_tn, times, cond) -> torch.Tensor:
        """Psi(x_{t_n}, f_student(x_{t_n}, t_n), t_end); the student is called unguided."""
        with self.model.using_lora(self.student):
            eps = self.model.eps(x_tn, times["t_n"], cond)
        return ddim_jump(x_tn, eps, times["t_n"], times["t_end"], self.alphas_cumprod)

    def losses(self, x0: torch.Tensor, cond, uncond, captions=None) -> dict[str, torch.Tensor]:
        """Hyper-SD eq. 12 (Algorithm 1, lines 3-9), per batch:

            L = d( Psi(x_{t_n}, f_student(x_{t_n}, t_n, c), t_end),
                   Psi(x_hat_{n-1}, f_target(x_hat_{n-1}, t_{n-1}, c), t_end) )
            x_hat_{n-1} = Psi(x_{t_n}, guided teacher eps, t_{n-1}),   t_end in [t_b, t_{n-1}]

        with Psi the DDIM jump (hypersd.core.solver), t_b the lower edge of t_n's segment
        (hypersd.core.segments) and d = mse_weight MSE + huber_weight pseudo-Huber +
        adversarial_weight GAN (the paper's hybrid distance). Under guidance_mode preserved, c is the
        empty prompt for a caption_dropout share of the batch (`condition`). Returns the parts and
        "loss"; with a discriminator also "d_loss", its heads' loss."""
        st = self.stage
        cond = self.condition(cond, uncond)
        times = self.sample_times(x0.shape[0], x0.device)
        x_tn = self.model.add_noise(x0, self._noise(x0), times["t_n"])
        target = self.target(x_tn, times, cond, uncond)
        pred = self.prediction(x_tn, times, cond)
        parts = {"mse": mse(pred, target).mean()}
        total = st.mse_weight * parts["mse"]
        if st.huber_weight > 0:
            parts["huber"] = pseudo_huber(pred, target, st.huber_c).mean()
            total = total + st.huber_weight * parts["huber"]
        if st.adversarial_weight > 0:
            parts.update(self.adversarial(pred, target, times["t_end"], cond))
            total = total + st.adversarial_weight * parts["adversarial"]
        parts["loss"] = total
        return parts

    def adversarial(self, pred, target, t_end, cond) -> dict[str, torch.Tensor]:
        """Generator loss on the student's point and the heads' loss (on detached features), both at t_end.

        One encoder pass with gradient (the prediction) and one without (the target) serve both
        losses; the loop steps the heads with `d_loss` after the student's update.
        """
        disc, m = self.discriminator, self.model
        fake = disc.features(m, pred, t_end, cond)
        with torch.no_grad():
            real = disc.features(m, target, t_end, cond)
        g_loss = generator_loss(disc(m, None, None, cond, fake)).mean()
        d_loss = discriminator_loss(disc(m, None, None, cond, real),
                                    disc(m, None, None, cond, [f.detach() for f in fake])).mean()
        return {"adversarial": g_loss, "d_loss": d_loss}

    def after_step(self) -> None:
        """Update the target network (Algorithm 1, last line)."""
        ema_update(self.model.unet, STUDENT, TARGET, self.stage.ema_decay)
