"""`hypersd data ...` (Shapes datasets, the standard prompt set) and `hypersd cache`."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import typer

from hypersd.cli.common import OVERWRITE, output_folder
from hypersd.errors import require, require_model, require_model_folder, require_writable_dir
from hypersd.io import atomic_dir
from hypersd.progress import progress

app = typer.Typer(no_args_is_help=True, help="Datasets and prompt sets.")


@app.command("shapes")
def data_shapes(n: int = typer.Option(1000, "--n", help="Number of images."),
                out: Path = typer.Option(..., "--out", help="Output folder (PNGs + samples.jsonl)."),
                seed: int = typer.Option(0, help="Random seed."),
                size: int = typer.Option(32, help="Image size in pixels."),
                overwrite: bool = OVERWRITE):
    """Render a Shapes-world image-folder dataset."""
    import numpy as np

    from hypersd.data.imagefolder import write_image_folder
    from hypersd.shapes.world import render, sample_scene

    require(n > 0, f"--n must be positive, got {n}")
    require(size >= 32, f"--size must be at least 32, got {size}")
    output_folder(out, overwrite)
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = [np.asarray(render(s, size)) for s in progress(scenes, desc="render")]
    records = [{"prompt": s.caption, "seed": seed, "category": s.category,
                "objects": [{"shape": o.shape, "color": o.color, "size": o.size,
                             "cx": o.center[0], "cy": o.center[1]} for o in s.objects]}
               for s in scenes]
    with atomic_dir(out, overwrite) as tmp:
        write_image_folder(tmp, images, records)
    typer.echo(f"wrote {n} images to {out}")


@app.command("prompts")
def data_prompts(out: Path = typer.Option(..., "--out", help="Prompt file to write (.txt)."),
                 n: int = typer.Option(600, "--n", help="Number of prompts (balanced over the 6 categories)."),
                 seed: int = typer.Option(20240421, help="Random seed of the standard set.")):
    """Write the standard ShapesEval prompt set (fixed seed, balanced categories)."""
    from hypersd.inference.prompts import write_prompt_file
    from hypersd.shapes.prompts import standard_prompts

    require(n > 0, f"--n must be positive, got {n}")
    require(not out.is_dir(), f"--out {out} is a folder; give a file name, e.g. {out / 'prompts.txt'}")
    require_writable_dir(out.parent)
    write_prompt_file(out, standard_prompts(n, seed))
    typer.echo(f"wrote {n} prompts to {out}")


def cache_cmd(model: Path = typer.Option(..., help="Model whose VAE and text encoder(s) encode: diffusers folder or "
                                                    "single-file checkpoint (with --model-config)."),
              data: str = typer.Option(..., "--data", help="Image folder or tar shards (a .tar, shards-{000..009}.tar, "
                                                           "a glob or a folder of .tar files)."),
              out: Path = typer.Option(..., "--out", help="Cache folder to write (safetensors shards + cache-index.json)."),
              overwrite: bool = OVERWRITE,
              resolution: Optional[int] = typer.Option(None, help="Image side in pixels (default: the model's own)."),
              crop: str = typer.Option("center", help="center or random (seeded per image)."),
              batch_size: int = typer.Option(16, help="Images encoded at once."),
              seed: int = typer.Option(0, help="Seed of random crops."),
              device: str = typer.Option("auto", help="auto (cuda if available), cpu or cuda.")):
    """Encode a dataset once for one model: VAE posterior (mean, std), the text conditioning, captions
    and size ids of every usable item. Train on it with data.source: OUT (same model and resolution)."""
    from hypersd.data.cache import write_cache
    from hypersd.data.sources import source_kind
    from hypersd.data.transforms import CROPS, describe_skipped
    from hypersd.models.pipelines import resolve_device

    require(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    require(resolution is None or resolution >= 8, f"--resolution must be at least 8, got {resolution}")
    require(crop in CROPS, f"--crop must be one of {', '.join(CROPS)}, got {crop!r}")
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    kind = source_kind(data)
    require(kind in ("folder", "shards"), f"--data must be an image folder or tar shards, got {kind} data: {data}")
    require_model(model)
    output_folder(out, overwrite)
    index = write_cache(model, data, out, resolution, crop, batch_size, seed=seed, device=str(resolve_device(device)),
                        overwrite=overwrite)
    typer.echo(f"wrote {index['count']} items to {out} ({len(index['shards'])} shards, resolution "
               f"{index['resolution']}; skipped: {describe_skipped(index['skipped'])})")


@app.command("pairs")
def data_pairs(model: Path = typer.Option(..., "--model", help="Teacher: a diffusers pipeline folder."),
               out: Path = typer.Option(..., "--out", help="Pair file to write (.safetensors)."),
               n: int = typer.Option(6000, "--n", help="Number of pairs."),
               steps: int = typer.Option(16, help="Teacher DDIM steps (trailing spacing, eta 0)."),
               guidance: float = typer.Option(5.0, help="Teacher classifier-free guidance scale."),
               prompts: Optional[Path] = typer.Option(None, "--prompts",
                                                      help="Caption file (.txt/.jsonl), cycled to --n; "
                                                           "default: fresh Shapes-world captions."),
               seed: int = typer.Option(1, help="Seed of the noise (pair i: seed + i) and of the Shapes captions."),
               batch_size: int = typer.Option(64, help="Images per teacher call."),
               overwrite: bool = OVERWRITE):
    """Teacher noise -> image pairs for the regression loss of score distillation (dmd.regression_pairs)."""
    from hypersd.data.pairs import is_pair_file, write_teacher_pairs
    from hypersd.inference.prompts import read_prompt_file
    from hypersd.shapes.batches import ShapesStream

    require(n > 0 and steps > 0 and batch_size > 0, "--n, --steps and --batch-size must be positive")
    require(guidance >= 1, f"--guidance must be >= 1, got {guidance}")
    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    require(overwrite or not out.exists(), f"{out} exists; pass --overwrite to replace it")
    require(not out.exists() or is_pair_file(out), f"{out} exists and is not a teacher pair file; not replacing it")
    require_writable_dir(out.parent)
    require_model_folder(model)
    if prompts is not None:
        given = read_prompt_file(prompts)
        require(len(given) > 0, f"{prompts} holds no prompts")
        captions = [given[i % len(given)] for i in range(n)]
    else:
        captions = [s.caption for s in ShapesStream(seed).scenes(n)]
    write_teacher_pairs(model, out, captions, steps, guidance, seed, batch_size)
    typer.echo(f"wrote {n} teacher pairs to {out}")


@app.command("merge-pairs")
def data_merge_pairs(files: list[Path] = typer.Argument(..., help="Pair files made with the same teacher settings."),
                     out: Path = typer.Option(..., "--out", help="Pair file to write (.safetensors)."),
                     overwrite: bool = OVERWRITE):
    """Several teacher pair files as one (e.g. more pairs for a longer regression run)."""
    from hypersd.data.pairs import is_pair_file, merge_pairs, save_pairs

    require(len(files) >= 2, "give at least two pair files to merge")
    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    require(out.resolve() not in [f.resolve() for f in files], f"--out {out} is one of the inputs")
    require(overwrite or not out.exists(), f"{out} exists; pass --overwrite to replace it")
    require(not out.exists() or is_pair_file(out), f"{out} exists and is not a teacher pair file; not replacing it")
    require_writable_dir(out.parent)
    merged = merge_pairs(files)
    save_pairs(out, merged)
    typer.echo(f"wrote {len(merged)} teacher pairs to {out}")
