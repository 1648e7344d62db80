from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, TCDScheduler

from hypersd.inference.sample import apply_loras, generate, make_scheduler
from hypersd.inference.settings import SampleSettings
from hypersd.lora.files import LoraSpec
from hypersd.models.pipelines import load_pipeline

PROMPTS = ["a red circle", "two blue squares", "a green cross in the center"]


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir)


def test_scheduler_names_map_to_diffusers(pipe):
    ddim = make_scheduler("ddim-trailing", pipe.scheduler.config)
    assert isinstance(ddim, DDIMScheduler) and ddim.config.timestep_spacing == "trailing"
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == [999, 749, 499, 249]
    leading = make_scheduler("ddim", pipe.scheduler.config)
    leading.set_timesteps(4)
    assert leading.timesteps.tolist() == [751, 501, 251, 1]
    assert isinstance(make_scheduler("tcd", pipe.scheduler.config), TCDScheduler)


def test_per_image_seeds_do_not_depend_on_batching(pipe):
    a = generate(pipe, PROMPTS, SampleSettings(steps=2, scheduler="ddim", guidance=3.0, batch_size=3))
    b = generate(pipe, PROMPTS, SampleSettings(steps=2, scheduler="ddim", guidance=3.0, batch_size=1))
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    # the same noise per image: only float rounding of different batch shapes may differ
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    c = generate(pipe, PROMPTS, SampleSettings(steps=2, scheduler="ddim", guidance=3.0, seed=5))
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_custom_timesteps_with_lcm(pipe):
    images = generate(pipe, PROMPTS[:1], SampleSettings(steps=1, scheduler="lcm", timesteps=[800]))
    assert images.shape == (1, 32, 32, 3)


def _write_lora(pipe, folder):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                        init_lora_weights=False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(config, adapter_name="made")
    state = get_peft_model_state_dict(pipe.unet, adapter_name="made")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state,
                                              unet_lora_adapter_metadata=config.to_dict())
    pipe.unet.delete_adapters("made")
    return folder / "pytorch_lora_weights.safetensors"


def test_lora_changes_output_and_scale_zero_is_the_base(pipe, tmp_path):
    settings = SampleSettings(steps=2, scheduler="ddim-trailing")
    base = generate(pipe, PROMPTS, settings)
    path = _write_lora(pipe, tmp_path)
    apply_loras(pipe, [LoraSpec(path, 1.0)])
    with_lora = generate(pipe, PROMPTS, settings)
    pipe.unload_lora_weights()
    apply_loras(pipe, [LoraSpec.parse(f"{path}:0")])
    zero = generate(pipe, PROMPTS, settings)
    pipe.unload_lora_weights()
    assert np.abs(with_lora.astype(int) - base.astype(int)).mean() > 1.0
    assert np.array_equal(zero, base)


def test_lora_spec_parsing():
    assert LoraSpec.parse("a/b.safetensors:0.5") == LoraSpec(Path("a/b.safetensors"), 0.5)
    assert LoraSpec.parse("c.safetensors").scale == 1.0
