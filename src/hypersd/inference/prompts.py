"""Prompt files: plain text (one prompt per line) or .jsonl (a `prompt` field per line, and an
optional `negative_prompt`)."""

from __future__ import annotations

import json
from pathlib import Path

from hypersd.errors import UserError
from hypersd.io import atomic_file


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line (.txt), or a `prompt` field per line (.jsonl). Blank lines skipped."""
    return [prompt for prompt, _ in read_prompt_records(path)]


def read_prompt_records(path: Path) -> list[tuple[str, str | None]]:
    """(prompt, negative prompt or None) per line: .txt lines have no negative prompt; a .jsonl line
    may carry a `negative_prompt` string. Blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompt file {path}: {exc}") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                prompt = record["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{number}: expected a JSON object with a 'prompt' field") from None
            if not isinstance(prompt, str):
                raise UserError(f"{path}:{number}: 'prompt' must be a string")
            negative = record.get("negative_prompt")
            if negative is not None and not isinstance(negative, str):
                raise UserError(f"{path}:{number}: 'negative_prompt' must be a string")
            prompts.append((prompt, negative or None))
        else:
            prompts.append((line.strip(), None))
    if not prompts:
        raise UserError(f"prompt file has no prompts: {path}")
    return prompts


def write_prompt_file(path: Path, prompts: list[str]) -> None:
    """One prompt per line, written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(prompts) + "\n")
