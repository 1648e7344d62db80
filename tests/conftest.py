"""Shared fixtures: tiny random models built from configs (no weights needed)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hypersd.models.tiny_sd import (  # noqa: E402
    TinySDConfig,
    build_text_encoder,
    build_tokenizer_for,
    build_unet,
    build_vae,
)

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


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A random tiny SD pipeline folder in the shipped teacher's layout."""
    from hypersd.pretrain import save_pipeline

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-sd")
    tokenizer = build_tokenizer_for(root / "tok")
    folder = root / "pipe"
    save_pipeline(folder, build_vae(TINY), build_text_encoder(TINY, tokenizer), tokenizer, build_unet(TINY))
    return folder


@pytest.fixture(scope="session")
def tiny_evaluator_dir(tmp_path_factory):
    from hypersd.evaluator.detector import DetectorConfig, ShapesDetector

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("evaluator")
    ShapesDetector(DetectorConfig(width=8)).save(folder)
    return folder
