"""Screenshots of both tabs of `hypersd app` on the shipped models, as a person sees them in a browser
(Debian's headless Chromium driven by Playwright): docs/app-text-to-image.png (a prompt, the one-step
model, four images with their times) and docs/app-scribble.png (a circle and a square drawn on the
canvas, the unified LoRA at 2 steps, the control map and four images).

    python bench/app_screenshots.py            # writes docs/app-*.png
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from hypersd import assets
from hypersd.app.browser import choose, free_port

DOCS = Path(__file__).resolve().parents[1] / "docs"


def draw_polyline(page, left: float, top: float, points: list[tuple[float, float]]) -> None:
    page.mouse.move(left + points[0][0], top + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(left + x, top + y, steps=2)
    page.mouse.up()


def main() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from hypersd.app.service import AppService, offered_models
    from hypersd.app.ui import launch
    from hypersd.progress import quiet_libraries

    quiet_libraries()
    models = offered_models(assets.ONE_STEP_MODEL, assets.UNIFIED_LORA, assets.TEACHER_GUIDANCE)
    service = AppService(assets.TEACHER, models, assets.SCRIBBLE_CONTROLNET)
    port = free_port()
    app = launch(service, "127.0.0.1", port, block=False)
    DOCS.mkdir(exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#t2i-prompt textarea").fill("a red circle above a blue square")
        page.locator("#t2i-run").click()
        page.locator("#t2i-gallery img").nth(3).wait_for(timeout=120_000)
        page.screenshot(path=str(DOCS / "app-text-to-image.png"), full_page=True)
        page.get_by_role("tab", name="Scribble").click()
        canvas = page.locator("#scribble-canvas canvas").last
        canvas.wait_for(timeout=30_000)
        page.locator("#scribble-canvas button[aria-label='Brush']").click()
        box = canvas.bounding_box()
        left, top = box["x"] + box["width"] / 2 - 128, box["y"] + box["height"] / 2 - 128
        draw_polyline(page, left, top, [(70 + 40 * math.cos(2 * math.pi * i / 40), 80 + 40 * math.sin(2 * math.pi * i / 40))
                                        for i in range(41)])
        draw_polyline(page, left, top, [(140, 140), (215, 140), (215, 215), (140, 215), (140, 140)])
        page.locator("#scribble-prompt textarea").fill("a red circle and a blue square")
        choose(page, "scribble-model", "unified LoRA (1-8 steps)")
        page.locator("#scribble-run").click()
        page.locator("#scribble-gallery img").nth(3).wait_for(timeout=120_000)
        page.screenshot(path=str(DOCS / "app-scribble.png"), full_page=True)
        browser.close()
    app.close()
    print(f"wrote {DOCS / 'app-text-to-image.png'} and {DOCS / 'app-scribble.png'}")


if __name__ == "__main__":
    main()
