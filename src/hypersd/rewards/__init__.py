"""Reward models of human feedback learning, loaded from a short spec string.

    shapes-clean                             the Shapes clean-image reward (no weights)
    shapes-presence[:SEGMENTER_DIR]          named objects present, nothing else (the Shapes segmenter)
    laion-aesthetic:CLIP_FOLDER,HEAD.safetensors
                                             the LAION aesthetic predictor from local files
    image-reward:FOLDER                      ImageReward (folder from `hypersd rewards convert-image-reward`)

The Shapes instance segmenter (the perceptual model of eq. 14) is not a score of (image, prompt)
but a loss against ground-truth instances: see `hypersd.rewards.segmenter`.
"""

from __future__ import annotations

from pathlib import Path

from hypersd.errors import UserError
from hypersd.rewards.base import RewardModel

REWARD_KINDS = ("shapes-clean", "shapes-presence", "laion-aesthetic", "image-reward")


def load_reward(spec: str) -> RewardModel:
    """A frozen reward model from its spec (see the module docstring)."""
    kind, _, args = spec.partition(":")
    if kind == "shapes-clean":
        from hypersd.rewards.shapes_clean import ShapesCleanReward

        return ShapesCleanReward().freeze()
    if kind == "shapes-presence":
        from hypersd.rewards.shapes_presence import ShapesPresenceReward

        return ShapesPresenceReward(Path(args) if args else None)
    if kind == "laion-aesthetic":
        from hypersd.rewards.laion_aesthetic import LaionAestheticReward

        parts = [p for p in args.split(",") if p]
        if len(parts) != 2:
            raise UserError(f"laion-aesthetic needs CLIP_FOLDER,HEAD.safetensors, got {spec!r}")
        return LaionAestheticReward(Path(parts[0]), Path(parts[1]))
    if kind == "image-reward":
        from hypersd.rewards.image_reward import ImageReward

        if not args:
            raise UserError("image-reward needs its folder: image-reward:FOLDER")
        return ImageReward(Path(args))
    raise UserError(f"unknown reward {kind!r}; choose one of {', '.join(REWARD_KINDS)}")


def check_reward_files(spec: str) -> None:
    """Fail now, in one line, if a reward's local weights are missing (not hours later, when the
    feedback stage starts and loads them)."""
    kind, _, args = spec.partition(":")
    if kind not in REWARD_KINDS:
        raise UserError(f"unknown reward {kind!r}; choose one of {', '.join(REWARD_KINDS)}")
    paths = [Path(p) for p in args.split(",") if p] if kind in ("laion-aesthetic", "image-reward") else []
    if kind == "shapes-presence" and args:
        paths = [Path(args)]
    for path in paths:
        if not path.exists():
            raise UserError(f"reward {kind}: {path} not found (edit the recipe's feedback.rewards or pass --set)")


def convert_head(source: Path, out: Path, allow_pickle: bool) -> Path:
    """Released aesthetic-head `.pth` (a pickled state dict) -> safetensors; refuses pickles unless allowed."""
    import torch
    from safetensors.torch import save_file

    from hypersd.rewards.laion_aesthetic import HEAD_KEYS

    source = Path(source)
    if not source.is_file():
        raise UserError(f"head file not found: {source}")
    if not allow_pickle:
        raise UserError(f"{source} is a pickle file; pass --allow-pickle if you trust it")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
        raise UserError(f"cannot read {source}: {str(exc).splitlines()[0]}") from None
    wanted = {f"{k}.{p}" for k in HEAD_KEYS for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != wanted:
        raise UserError(f"{source} is not an aesthetic head (expected keys {sorted(wanted)})")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return Path(out)
