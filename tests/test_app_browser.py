"""`hypersd app` in a real headless Chromium (Debian's package, driven by Playwright): type a prompt
and generate; draw on the scribble canvas; every bad input shows its message in the page; the server
listens on loopback only. Screenshots of both tabs go to the test's folder."""

import io
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from hypersd.app.browser import choose, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tiny_controlnet_dir, tmp_path_factory):
    import os

    from diffusers import UNet2DConditionModel

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hypersd.app.service import AppService, offered_models
    from hypersd.app.ui import launch
    from hypersd.lora.adapters import STUDENT, add_lora
    from hypersd.lora.files import save_lora

    folder = tmp_path_factory.mktemp("app")
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    add_lora(unet, 2, 2, ["to_q", "to_v"], name=STUDENT)
    one = save_lora(folder / "one.safetensors", unet, STUDENT,
                    inference={"scheduler": "lcm", "steps": 1, "timesteps": [800], "guidance": 0.0})
    uni = save_lora(folder / "uni.safetensors", unet, STUDENT,
                    inference={"scheduler": "tcd", "steps": 4, "guidance": 0.0, "eta": 0.3})
    service = AppService(tiny_pipeline_dir, offered_models(one, uni, 5.0), tiny_controlnet_dir, capacity=4)
    port = free_port()
    page = launch(service, "127.0.0.1", port, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "folder": folder}
    page.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(server["url"])
    page.get_by_text("Text to image").first.wait_for(timeout=30_000)
    yield page
    page.close()


def _images(page, gallery: str, count: int) -> list[np.ndarray]:
    images = page.locator(f"#{gallery} img")
    images.nth(count - 1).wait_for(timeout=60_000)
    out = []
    for i in range(count):
        src = images.nth(i).get_attribute("src")
        body = page.request.get(src).body()
        out.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
    return out


def test_text_to_image_shows_four_enlarged_images_with_times(page, server):
    page.locator("#t2i-prompt textarea").fill("a red circle")
    page.locator("#t2i-run").click()
    images = _images(page, "t2i-gallery", 4)
    assert all(im.shape == (256, 256, 3) for im in images)
    assert all(im.std() > 1 for im in images)  # not blank
    assert all((im[::8, ::8] == im[7::8, 7::8]).all() for im in images)  # nearest-neighbour blocks of 8
    assert "Generation time per image" in page.locator("#t2i-times").inner_text()
    page.screenshot(path=str(server["folder"] / "text-to-image.png"), full_page=True)


@pytest.mark.parametrize("prompt, message", [("", "type a prompt first"), ("a" * 201, "at most 200")])
def test_bad_prompts_show_their_message(page, prompt, message):
    page.locator("#t2i-prompt textarea").fill(prompt)
    page.locator("#t2i-run").click()
    page.get_by_text(message).first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()


def _open_scribble(page):
    page.get_by_role("tab", name="Scribble").click()
    canvas = page.locator("#scribble-canvas canvas").last  # the top layer takes the pointer
    canvas.wait_for(timeout=30_000)
    return canvas


def test_scribble_follows_the_strokes(page, server):
    canvas = _open_scribble(page)
    page.locator("#scribble-canvas button[aria-label='Brush']").click()  # the draw tool (brush, eraser, clear)
    box = canvas.bounding_box()  # the drawing area is the 256-pixel square at the centre of the widget
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    y = cy - 70  # a horizontal stroke across the upper quarter of the square
    page.mouse.move(cx - 100, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(cx - 100 + 20 * i, y, steps=3)
    page.mouse.up()
    page.locator("#scribble-prompt textarea").fill("a red circle")
    page.locator("#scribble-run").click()
    images = _images(page, "scribble-gallery", 4)
    assert all(im.shape == (256, 256, 3) for im in images)
    control = _images(page, "control-map", 1)[0].mean(2)
    upper, lower = control[32:96].mean(), control[160:].mean()
    assert upper > lower + 20  # the map's ink is where the stroke was
    page.screenshot(path=str(server["folder"] / "scribble.png"), full_page=True)


def test_empty_canvas_shows_its_message(page):
    _open_scribble(page)
    page.locator("#scribble-prompt textarea").fill("a red circle")
    page.locator("#scribble-run").click()
    page.get_by_text("draw a sketch").first.wait_for(timeout=30_000)


def _outside_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_server_is_not_reachable_on_a_non_loopback_address(server):
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    with pytest.raises(OSError):
        socket.create_connection((address, server["port"]), timeout=3).close()


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """The app on the shipped teacher, one-step model, unified LoRA and scribble ControlNet."""
    import os

    from hypersd import assets

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hypersd.app.service import AppService, offered_models
    from hypersd.app.ui import launch

    models = offered_models(assets.ONE_STEP_MODEL, assets.UNIFIED_LORA, assets.TEACHER_GUIDANCE)
    service = AppService(assets.TEACHER, models, assets.SCRIBBLE_CONTROLNET, capacity=4)
    port = free_port()
    app = launch(service, "127.0.0.1", port, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "folder": tmp_path_factory.mktemp("shipped-app")}
    app.close()


def test_a_drawn_circle_comes_out_where_it_was_drawn(browser, shipped_server):
    """A circle drawn in the upper-left quarter of the canvas, prompt 'a red circle', the unified LoRA at
    2 steps: the ShapesEval detector finds a red circle at the drawing's place in most images."""
    import math

    import torch

    from hypersd import assets
    from hypersd.embedded.evaluator.detector import ShapesDetector
    from hypersd.shapes.batches import to_tensor

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(shipped_server["url"])
    canvas = _open_scribble(page)
    page.locator("#scribble-canvas button[aria-label='Brush']").click()
    box = canvas.bounding_box()  # the 256-pixel drawing square at the centre of the widget
    left, top = box["x"] + box["width"] / 2 - 128, box["y"] + box["height"] / 2 - 128
    centre, radius = (80, 72), 44  # canvas pixels: at 32 px, a circle of radius 5.5 centred at (10, 9)
    page.mouse.move(left + centre[0] + radius, top + centre[1])
    page.mouse.down()
    for i in range(1, 41):
        angle = 2 * math.pi * i / 40
        page.mouse.move(left + centre[0] + radius * math.cos(angle), top + centre[1] + radius * math.sin(angle))
    page.mouse.up()
    page.locator("#scribble-prompt textarea").fill("a red circle")
    choose(page, "scribble-model", "unified LoRA (1-8 steps)")
    page.locator("#scribble-run").click()
    images = _images(page, "scribble-gallery", 4)
    small = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.NEAREST)) for im in images])
    with torch.no_grad():
        found = ShapesDetector.load(assets.EVALUATOR).detect(to_tensor(small))
    want = (centre[0] / 8, centre[1] / 8)
    hits = [any(d.shape == "circle" and d.color == "red" and math.hypot(d.cx - want[0], d.cy - want[1]) <= 3
                for d in f) for f in found]
    page.screenshot(path=str(shipped_server["folder"] / "scribble-shipped.png"), full_page=True)
    page.close()
    assert sum(hits) >= 3, [[(d.color, d.shape, d.cx, d.cy) for d in f] for f in found]
