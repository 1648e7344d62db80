"""Human feedback learning for a distilled student (Hyper-SD section 3.2, eq. 13-15).

The student being tuned is whatever adapters are active as the student (the TSCD LoRA, frozen,
plus a trainable feedback LoRA). Three terms, each per batch:

- aesthetic (eq. 13, ReFL; Xu et al. 2023, ImageReward, Algorithm 1): from pure noise, run the
  student's own few-step trailing DDIM sampler without gradient, stop at a random step whose
  timestep lies in [t_left, t_right], predict x0 from there *with* gradient, decode, and take
  mean_d ReLU(alpha_d - r_d(x0, c)) over the reward models d;
- perceptual (eq. 14): noise a real image that has instance annotations to t_a in [t_left, t_right],
  predict x0 in one jump, decode, and take the instance segmenter's loss against the ground truth;
- pre-training regulariser: the ordinary denoising loss on real latents (without it ReFL drifts;
  ImageReward issue 95).
total = reward_weight * aesthetic + perceptual_weight * perceptual + pretrain_weight * pretrain (eq. 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hypersd.core.losses import refl_hinge
from hypersd.core.segments import trailing_timesteps
from hypersd.core.solver import ddim_jump, predict_x0
from hypersd.rewards.base import PerceptualModel, RewardModel


def refl_stop_index(timesteps: list[int], t_left: int, t_right: int, generator=None) -> int:
    """A random step index whose timestep lies in [t_left, t_right] (the nearest one if none does)."""
    inside = [i for i, t in enumerate(timesteps) if t_left <= t <= t_right]
    if not inside:
        middle = (t_left + t_right) / 2
        return min(range(len(timesteps)), key=lambda i: abs(timesteps[i] - middle))
    return inside[int(torch.randint(len(inside), (1,), generator=generator))]


def refl_x0(model, student, cond, shape, steps: int, t_left: int, t_right: int,
            first_timestep: int | None = None) -> torch.Tensor:
    """ReFL's image: sample without gradient down to a random step, then predict x0 with gradient.
    first_timestep: one-step generators read pure noise as x_{t_g} (t_g = 800 for the dedicated model)."""
    ac = model.alphas_cumprod.to(model.device)
    timesteps = trailing_timesteps(steps, model.num_train_timesteps)
    if first_timestep is not None and steps == 1:
        timesteps = [first_timestep]
    stop = refl_stop_index(timesteps, t_left, t_right)
    x = torch.randn(shape, device=model.device)
    n = shape[0]
    with model.using_lora(student):
        with torch.no_grad():
            for i in range(stop):
                t = torch.full((n,), timesteps[i], device=model.device, dtype=torch.long)
                t_next = torch.full_like(t, timesteps[i + 1])
                x = ddim_jump(x, model.eps(x, t, cond), t, t_next, ac)
        t = torch.full((n,), timesteps[stop], device=model.device, dtype=torch.long)
        return predict_x0(x, model.eps(x, t, cond), t, ac)


def aesthetic_loss(images: torch.Tensor, prompts: list[str], rewards, alphas: list[float]):
    """Eq. 13: mean over rewards of mean_batch ReLU(alpha_d - r_d); also returns the mean scores."""
    losses, scores = [], {}
    for reward, alpha in zip(rewards, alphas):
        r = reward.score(images, prompts)
        losses.append(refl_hinge(r, alpha))
        scores[reward.name] = r.detach().mean()
    return torch.stack(losses).mean(), scores


def perceptual_loss(model, student, latents, captions: list[str], targets, perceptual: PerceptualModel,
                    t_left: int, t_right: int) -> torch.Tensor:
    """Eq. 14: the perceptual model's loss (the segmenter's instance loss) on the student's one-jump
    x0 of a noised real image."""
    n = latents.shape[0]
    t = torch.randint(t_left, t_right + 1, (n,), device=latents.device)
    noise = torch.randn_like(latents)
    x_t = model.add_noise(latents, noise, t)
    with model.using_lora(student):
        x0 = predict_x0(x_t, model.eps(x_t, t, model.encode_prompts(captions)), t,
                        model.alphas_cumprod.to(latents.device))
    return perceptual.loss(model.decode_latents(x0), targets)


def pretrain_loss(model, student, latents, cond) -> torch.Tensor:
    """The denoising loss E || eps - eps_student(x_t, t) ||^2 on real latents (the regulariser)."""
    n = latents.shape[0]
    t = torch.randint(0, model.num_train_timesteps, (n,), device=latents.device)
    noise = torch.randn_like(latents)
    with model.using_lora(student):
        eps = model.eps(model.add_noise(latents, noise, t), t, cond)
    return F.mse_loss(eps, noise)


class FeedbackLearning:
    """An Objective (hypersd.train.objectives.base): a feedback stage's losses, tuning the student
    adapters (TSCD LoRA + trainable feedback LoRA). `rewards` (with one hinge alpha each) and the
    `perceptual` model are plug-ins (hypersd.rewards), built by the run and handed in."""

    def __init__(self, model, stage, student, rewards: list[RewardModel], perceptual: PerceptualModel | None,
                 seed: int = 0, first_timestep: int | None = None):
        self.model, self.cfg, self.student, self.seed = model, stage.feedback, student, seed
        self.first_timestep = first_timestep
        self.rewards, self.perceptual = rewards, perceptual
        self.step, self.micro = 0, 0

    def annotated_batch(self, n: int):
        """Real annotated images as latents, their captions and targets, seeded by the step (resumable)."""
        self.micro += 1  # gradient accumulation: each micro-step its own images
        images, targets, captions = self.perceptual.annotated_batch(n, (self.seed * 1_000_003 + self.step) * 64
                                                                     + self.micro)
        return self.model.encode_images(images), captions, targets

    def losses(self, x0, cond, uncond=None, captions=None) -> dict[str, torch.Tensor]:
        """Eq. 15: reward_weight * aesthetic (eq. 13) + perceptual_weight * perceptual (eq. 14)
        + pretrain_weight * the denoising regulariser, on min(feedback.batch_size, batch) images."""
        cfg, m, n = self.cfg, self.model, min(self.cfg.batch_size, x0.shape[0])
        parts, total = {}, torch.zeros((), device=x0.device)
        if self.rewards:
            sub = cond.index(slice(0, n))
            latents = refl_x0(m, self.student, sub, (n, *x0.shape[1:]), cfg.sampling_steps, cfg.t_left, cfg.t_right,
                              self.first_timestep)
            aesthetic, scores = aesthetic_loss(m.decode_latents(latents), list(captions[:n]), self.rewards,
                                               cfg.reward_alpha)
            parts["aesthetic"] = aesthetic
            parts.update({f"reward/{k}": v for k, v in scores.items()})
            total = total + cfg.reward_weight * aesthetic
        if self.perceptual is not None:
            latents, texts, targets = self.annotated_batch(n)
            parts["perceptual"] = perceptual_loss(m, self.student, latents, texts, targets, self.perceptual,
                                                  cfg.t_left, cfg.t_right)
            total = total + cfg.perceptual_weight * parts["perceptual"]
        if cfg.pretrain_weight > 0:
            parts["pretrain"] = pretrain_loss(m, self.student, x0[:n], cond.index(slice(0, n)))
            total = total + cfg.pretrain_weight * parts["pretrain"]
        parts["loss"] = total
        return parts

    def after_step(self) -> None:
        self.step, self.micro = self.step + 1, 0
