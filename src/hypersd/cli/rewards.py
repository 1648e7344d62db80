"""`hypersd rewards ...`: reward and perceptual models of feedback learning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.cli.common import OVERWRITE, output_folder
from hypersd.errors import pickle_allowed, require, require_writable_dir

app = typer.Typer(no_args_is_help=True, help="Reward and perceptual models of feedback learning.")


@app.command("train-segmenter")
def rewards_train_segmenter(out: Path = typer.Option(Path("assets/shapes-segmenter"), help="Folder to write."),
                            steps: int = typer.Option(2000, help="Training steps."),
                            seed: int = typer.Option(11, help="Random seed."),
                            overwrite: bool = OVERWRITE):
    """Train the Shapes instance segmenter (the perceptual model of eq. 14) on rendered images."""
    from hypersd.embedded.train_segmenter import SegmenterTrainConfig, check_segmenter, train_segmenter

    require(steps > 0, f"--steps must be positive, got {steps}")
    output_folder(out, overwrite)
    model = train_segmenter(SegmenterTrainConfig(seed=seed, steps=steps), out, log=lambda r: None)
    typer.echo(json.dumps(check_segmenter(model, n=500)))


@app.command("check-segmenter")
def rewards_check_segmenter(segmenter: Optional[Path] = typer.Option(None, help="Segmenter folder."),
                            n: int = typer.Option(1000, "--n", help="Number of real images.")):
    """Instance-set accuracy and semantic mIoU of the segmenter on freshly rendered images."""
    from hypersd.embedded.train_segmenter import check_segmenter
    from hypersd.rewards.segmenter import ShapesSegmenter

    require(n > 0, f"--n must be positive, got {n}")
    model = ShapesSegmenter.load(segmenter or assets.SEGMENTER)
    typer.echo(json.dumps(check_segmenter(model, n=n)))


@app.command("score")
def rewards_score(images: Path = typer.Argument(..., help="Image folder (PNGs + samples.jsonl)."),
                  reward: list[str] = typer.Option(["shapes-clean"], help="Reward spec; repeatable."),
                  size: int = typer.Option(32, help="Images are resized to SIZE x SIZE first."),
                  batch: int = typer.Option(64, help="Images per batch.")):
    """Mean reward of an image folder, per reward model (JSON)."""
    import torch

    from hypersd.data.imagefolder import load_images, read_image_folder
    from hypersd.rewards import load_reward
    from hypersd.shapes.batches import to_tensor

    folder = read_image_folder(images)
    require(len(folder) > 0, f"no images in {images}")
    require(size > 0 and batch > 0, "--size and --batch must be positive")
    arrays, prompts = load_images(folder, size=size)
    result = {}
    for spec in reward:
        model = load_reward(spec)
        with torch.no_grad():
            scores = torch.cat([model.score(to_tensor(arrays[i:i + batch]), prompts[i:i + batch])
                                for i in range(0, len(prompts), batch)])
        result[model.name] = round(scores.mean().item(), 4)
    typer.echo(json.dumps({"images": len(prompts), **result}))


@app.command("convert-head")
def rewards_convert_head(source: Path = typer.Argument(..., help="Released aesthetic head (.pth)."),
                         out: Path = typer.Option(..., "--out", help="safetensors file to write.")):
    """Convert the LAION aesthetic head to safetensors (the .pth is a pickle: needs --allow-pickle)."""
    from hypersd.rewards import convert_head

    require_writable_dir(out.parent)
    convert_head(source, out, allow_pickle=pickle_allowed())
    typer.echo(f"wrote {out}")


@app.command("convert-image-reward")
def rewards_convert_image_reward(source: Path = typer.Argument(..., help="Released ImageReward.pt (pickle)."),
                                 tokenizer: Path = typer.Option(..., help="BERT tokenizer folder (bert-base-uncased)."),
                                 out: Path = typer.Option(..., "--out", help="Folder to write."),
                                 overwrite: bool = OVERWRITE):
    """Convert the released ImageReward checkpoint into a folder `image-reward:FOLDER` loads."""
    from hypersd.rewards.image_reward import convert_release

    output_folder(out, overwrite)
    convert_release(source, tokenizer, out, allow_pickle=pickle_allowed(), overwrite=overwrite)
    typer.echo(f"wrote {out}")
