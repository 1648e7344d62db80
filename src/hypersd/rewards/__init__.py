"""Reward models of human feedback learning, loaded from a short spec string.

    shapes-clean                             the Shapes clean-image reward (no weights)
    shapes-presence[:SEGMENTER_DIR]          named objects present, nothing else (the Shapes segmenter)
    laion-aesthetic:CLIP_FOLDER,HEAD.safetensors
                                             the LAION aesthetic predictor from local files
    image-reward:FOLDER                      ImageReward (folder from `hypersd rewards convert-image-reward`)

The perceptual model of eq. 14 is not a score of (image, prompt) but a loss against annotated real
images (`PerceptualModel`): `load_perceptual(folder)` gives the Shapes instance segmenter's
(`hypersd.rewards.segmenter`; folder None: the shipped one).
"""

from __future__ import annotations

from pathlib import Path

from hypersd.errors import UserError
from hypersd.io import save_tensors
from hypersd.rewards.base import PerceptualModel, RewardModel

REWARD_KINDS = ("shapes-clean", "shapes-presence", "laion-aesthetic", "image-reward")


def parse_reward_spec(spec: str) -> tuple[str, list[Path]]:
    """(kind, local paths) of a reward spec, with one clear line for a malformed one."""
    kind, _, args = spec.partition(":")
    if kind not in REWARD_KINDS:
        raise UserError(f"unknown reward {kind!r}; choose one of {', '.join(REWARD_KINDS)}")
    paths = [Path(p) for p in args.split(",") if p]
    if kind == "shapes-clean" and paths or kind == "shapes-presence" and len(paths) > 1:
        raise UserError(f"{kind} takes {'no argument' if kind == 'shapes-clean' else 'one segmenter folder'}, "
                        f"got {spec!r}")
    if kind == "laion-aesthetic" and len(paths) != 2:
        raise UserError(f"laion-aesthetic needs CLIP_FOLDER,HEAD.safetensors, got {spec!r}")
    if kind == "image-reward" and len(paths) != 1:
        raise UserError("image-reward needs its folder: image-reward:FOLDER")
    return kind, paths


def load_reward(spec: str) -> RewardModel:
    """A frozen reward model from its spec (see the module docstring)."""
    kind, paths = parse_reward_spec(spec)
    if kind == "shapes-clean":
        from hypersd.rewards.shapes_clean import ShapesCleanReward

        return ShapesCleanReward().freeze()
    if kind == "shapes-presence":
        from hypersd.rewards.shapes_presence import ShapesPresenceReward

        return ShapesPresenceReward(paths[0] if paths else None)
    if kind == "laion-aesthetic":
        from hypersd.rewards.laion_aesthetic import LaionAestheticReward

        return LaionAestheticReward(*paths)
    from hypersd.rewards.image_reward import ImageReward

    return ImageReward(paths[0])


def load_perceptual(folder: str | Path | None = None) -> PerceptualModel:
    """The perceptual model of feedback learning: the Shapes instance segmenter in `folder`
    (None or "": the shipped assets/shapes-segmenter)."""
    from hypersd.assets import SEGMENTER
    from hypersd.rewards.segmenter import ShapesPerceptual, ShapesSegmenter

    return ShapesPerceptual(ShapesSegmenter.load(Path(folder) if folder else SEGMENTER))


def check_reward_files(spec: str) -> None:
    """Fail now, in one line, if a reward's local weights are missing (not hours later, when the
    feedback stage starts and loads them)."""
    kind, paths = parse_reward_spec(spec)
    for path in paths:
        if not path.exists():
            raise UserError(f"reward {kind}: {path} not found (edit the recipe's feedback.rewards or pass --set)")


def convert_head(source: Path, out: Path, allow_pickle: bool) -> Path:
    """Released aesthetic-head `.pth` (a pickled state dict) -> safetensors; refuses pickles unless allowed."""
    import torch

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
    save_tensors(state, out, what="aesthetic head")
    return Path(out)
