"""The latent discriminator reads the frozen UNet encoder exactly and trains only its heads."""

import torch

from hypersd.core.losses import discriminator_loss, generator_loss
from hypersd.lora.adapters import STUDENT, add_lora
from hypersd.models.discriminator import LatentDiscriminator, unet_encoder_features
from hypersd.models.sd import load_model


def test_encoder_features_equal_the_unet_forward_internals(tiny_pipeline_dir):
    model = load_model(tiny_pipeline_dir)
    unet = model.unet
    captured = {}
    unet.mid_block.register_forward_hook(lambda mod, inp, out: captured.setdefault("mid", out))
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    cond = model.encode_prompts(["a red circle", "two blue squares"])
    with torch.no_grad():
        unet(x, t, cond.hidden_states)
        feats = unet_encoder_features(unet, x, t, cond)
    torch.testing.assert_close(feats[-1], captured["mid"])
    assert len(feats) == len(unet.config.block_out_channels) + 1


def test_gradients_reach_the_input_and_the_heads_only(tiny_pipeline_dir):
    model = load_model(tiny_pipeline_dir)
    model.freeze_base()
    add_lora(model.unet, 2, 2.0, ["to_q"], name=STUDENT)
    disc = LatentDiscriminator(model.unet)
    x = torch.randn(3, 4, 8, 8, requires_grad=True)
    cond = model.encode_prompts(["a red circle"] * 3)
    generator_loss(disc(model, x, torch.tensor([0, 500, 999]), cond)).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())
    assert all(p.grad is None for p in model.unet.parameters())


def test_gan_losses():
    big = torch.tensor([20.0])
    assert discriminator_loss(big, -big).item() < 1e-6 and generator_loss(big).item() < 1e-6
    assert generator_loss(-big).item() > 19
