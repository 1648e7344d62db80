"""Shared fixtures: tiny random models built from configs (no weights needed)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hypersd.models.tiny_sd import TinySDConfig, build_text_encoder, build_tokenizer_for, build_unet, build_vae  # noqa: E402

TINY = TinySDConfig(
    vae_channels=(8, 16, 16),
    vae_norm_groups=8,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    unet_channels=(16, 32, 32),
    unet_head_dim=8,
    unet_norm_groups=8,
)


@pytest.fixture(autouse=True)
def _fresh_loading_options():
    """--allow-pickle and --model-config set process-wide options per command; no test leaks them."""
    from hypersd.options import configure_loading

    yield
    configure_loading()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A random tiny SD pipeline folder in the shipped teacher's layout."""
    from hypersd.embedded.pretrain import save_tiny_sd

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-sd")
    tokenizer = build_tokenizer_for(root / "tok")
    folder = root / "pipe"
    save_tiny_sd(folder, build_vae(TINY), build_text_encoder(TINY, tokenizer), tokenizer, build_unet(TINY))
    return folder


@pytest.fixture
def student_target_model(tiny_pipeline_dir):
    """The tiny model with fresh student and target LoRA adapters (the student active)."""
    from hypersd.lora.adapters import STUDENT, TARGET, add_lora
    from hypersd.models.sd import load_model

    torch.manual_seed(0)
    m = load_model(tiny_pipeline_dir)
    m.freeze_base()
    for name in (STUDENT, TARGET):
        add_lora(m.unet, 2, 2.0, ["to_q", "to_k", "to_v", "conv1"], name=name)
    m.unet.set_adapter(STUDENT)
    return m


@pytest.fixture(scope="session")
def tiny_evaluator_dir(tmp_path_factory):
    from hypersd.embedded.evaluator.detector import DetectorConfig, ShapesDetector

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("evaluator")
    ShapesDetector(DetectorConfig(width=8)).save(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """A random tiny SDXL pipeline folder (two text encoders, size conditioning)."""
    from hypersd.models.tiny_sd import build_tiny_sdxl

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-sdxl")
    pipe = build_tiny_sdxl(TINY, build_tokenizer_for(root / "tok"))
    pipe.save_pretrained(root / "pipe", safe_serialization=True)
    return root / "pipe"


def _tiny_controlnet(pipeline_dir, folder):
    """A tiny ControlNet for the pipeline folder's UNet (diffusers folder, safetensors). Its zero
    convolutions (conditioning output, down and mid residual convs) get random weights, so that,
    unlike a freshly initialised ControlNet, it changes the images."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet")
    # one stride-2 conv per VAE downsampling: 32x32 control image -> 8x8 latents
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16))
    zero_convs = [controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_mid_block,
                  *controlnet.controlnet_down_blocks]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.normal_(0.0, 0.3)
            conv.bias.normal_(0.0, 0.3)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tiny_pipeline_dir, tmp_path_factory):
    return _tiny_controlnet(tiny_pipeline_dir, tmp_path_factory.mktemp("tiny-controlnet") / "controlnet")


@pytest.fixture(scope="session")
def tiny_sdxl_controlnet_dir(tiny_sdxl_dir, tmp_path_factory):
    return _tiny_controlnet(tiny_sdxl_dir, tmp_path_factory.mktemp("tiny-controlnet-xl") / "controlnet")


@pytest.fixture(scope="session")
def segmenter_dir(tmp_path_factory):
    """A random tiny Shapes segmenter (the perceptual model of feedback learning)."""
    from hypersd.rewards.segmenter import SegmenterConfig, ShapesSegmenter

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("segmenter")
    ShapesSegmenter(SegmenterConfig(width=8)).save(folder)
    return folder
