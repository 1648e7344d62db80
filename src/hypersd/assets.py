"""Where the shipped assets live, and the settings they were made for."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"
TEACHER = ASSETS / "tiny-sd"
EVALUATOR = ASSETS / "shapes-evaluator"
SEGMENTER = ASSETS / "shapes-segmenter"  # perceptual model of feedback learning; not the evaluator
STANDARD_PROMPTS = ASSETS / "prompts" / "shapes-eval-600.txt"
DEMO_RECIPE = ROOT / "configs" / "demo-hyper.yaml"
# The shipped distilled models of the teacher (assets/README.md: command, seed, run time of each)
ONE_STEP_MODEL = ASSETS / "hypersd-one-step" / "hypersd-shapes-1step-unet.safetensors"  # full UNet, LCM [800]
UNIFIED_LORA = ASSETS / "hypersd-unified" / "dmd-unified.safetensors"           # TCD, eta 0.3, 1-8 steps
SCRIBBLE_CONTROLNET = ASSETS / "controlnet-scribble"                              # diffusers ControlNet folder
TINY_VAE = ASSETS / "tiny-vae"  # where a tiny VAE would be shipped; none is (it costs quality: bench/results/tiny_vae.md)

# Classifier-free guidance scale at which the shipped teacher is evaluated (its 50-step DDIM
# reference, the teacher rows of every table, and the teacher target of distillation).
TEACHER_GUIDANCE = 5.0
REFERENCE_STEPS = 50
REFERENCE_SCHEDULER = "ddim"
