"""The web app's service layer without the web (hypersd.app.service): request checks, the bounded
gate, the models' settings from their metadata."""

import threading

import numpy as np
import pytest

from hypersd.app.service import (
    MAX_PROMPT_CHARS,
    Busy,
    ModelChoice,
    RequestGate,
    check_count,
    check_drawing,
    check_prompt,
    enlarge,
    offered_models,
)
from hypersd.errors import UserError
from hypersd.lora.files import LoraSpec


def test_prompt_checks():
    assert check_prompt("  a red circle ") == "a red circle"
    with pytest.raises(UserError, match="type a prompt first"):
        check_prompt("   ")
    with pytest.raises(UserError, match=f"at most {MAX_PROMPT_CHARS}"):
        check_prompt("a" * (MAX_PROMPT_CHARS + 1))


@pytest.mark.parametrize("value", [0, 9, 2.5, None])
def test_steps_out_of_range_are_refused(value):
    with pytest.raises(UserError, match="steps must be a whole number from 1 to 8"):
        check_count(value, "steps", 1, 8)


def test_drawing_checks():
    with pytest.raises(UserError, match="draw a sketch"):
        check_drawing(None)
    blank = np.zeros((256, 256, 4), dtype=np.uint8)  # transparent: white paper
    with pytest.raises(UserError, match="canvas is empty"):
        check_drawing(blank)
    with pytest.raises(UserError, match="at most 2048"):
        check_drawing(np.zeros((3000, 10, 3), dtype=np.uint8))
    drawn = blank.copy()
    drawn[100:110, 50:200] = (0, 0, 0, 255)  # a black stroke
    image = np.asarray(check_drawing(drawn))
    assert image.shape == (256, 256, 3) and image[105, 60].max() == 0 and image[0, 0].min() == 255


def test_gate_answers_busy_when_full():
    gate = RequestGate(capacity=2)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with gate.enter():
            inside.set()
            release.wait(5)

    first = threading.Thread(target=hold)
    first.start()
    inside.wait(5)
    waiting = threading.Thread(target=lambda: gate.enter().__enter__())  # takes the second slot, waits its turn
    waiting.start()
    for _ in range(100):
        if gate.slots._value == 0:
            break
        threading.Event().wait(0.01)
    with pytest.raises(Busy, match="busy, try again"):
        with gate.enter():
            pass
    release.set()
    first.join(5)


def test_enlarge_is_nearest_neighbour():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = 255
    big = np.asarray(enlarge(image, side=8))
    assert big.shape == (8, 8, 3) and (big[:4, :4] == 255).all() and (big[4:, :] == 0).all()


def test_offered_models_and_their_settings(tmp_path):
    models = offered_models(tmp_path / "missing.safetensors", None, 5.0)
    assert [m.label for m in models] == ["teacher (50 DDIM steps, guidance 5; for comparison)"]
    teacher = models[0].settings(steps=2, eta=0.3)
    assert (teacher.steps, teacher.scheduler, teacher.guidance, teacher.eta) == (50, "ddim", 5.0, None)
    unified = ModelChoice("u", [LoraSpec(tmp_path / "Hyper-SD15-1step-lora.safetensors")])
    (tmp_path / "Hyper-SD15-1step-lora.safetensors").write_bytes(b"")  # named like a release: its settings
    with pytest.raises(UserError):  # not a safetensors file: one clear error
        unified.settings(steps=1, eta=None)
