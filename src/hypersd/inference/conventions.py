"""Sampling settings of the released Hyper-SD files, read off their file names (the model card's
conventions), for files that carry no settings in their metadata:

- `...-Nsteps-lora` (N = 2, 4, 8): DDIM, trailing spacing, N steps, no guidance;
- `...-Nsteps-CFG-lora` (8, 12): the same with guidance 5 (the card: 5 to 8; negative prompts work);
- `...-1step-lora` (the unified LoRA): TCD, 1 step (it also runs 2-8), eta 1.0, no guidance;
- `...-1step-Unet...` (the one-step UNet): LCM at timesteps [800], no guidance.
"""

from __future__ import annotations

import re

_STEPS = re.compile(r"(\d+)[-_]?steps?", re.IGNORECASE)


def released_settings(file_name: str) -> dict:
    """Settings for a file named like the official releases; {} for any other name."""
    name = file_name.lower()
    match = _STEPS.search(name)
    if "hyper" not in name or match is None:
        return {}
    steps = int(match.group(1))
    if steps == 1 and "unet" in name:
        return {"scheduler": "lcm", "steps": 1, "timesteps": [800], "guidance": 0.0}
    if steps == 1:
        return {"scheduler": "tcd", "steps": 1, "eta": 1.0, "guidance": 0.0}
    return {"scheduler": "ddim-trailing", "steps": steps, "guidance": 5.0 if "cfg" in name else 0.0}
