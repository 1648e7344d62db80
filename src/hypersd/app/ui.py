"""The gradio page of `hypersd app`: a "Text to image" tab and a "Scribble" tab over AppService.

Every handler turns a refused request into a message in the page (gr.Error) and one log line on the
server, never a traceback; images are shown enlarged with nearest-neighbour scaling."""

from __future__ import annotations

import functools
import logging

from hypersd.app.service import MAX_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS, AppService, enlarge
from hypersd.errors import UserError

log = logging.getLogger("hypersd.app")
CSS = "#t2i-gallery img, #scribble-gallery img, #control-map img { image-rendering: pixelated; }"


def _page_errors(handler):
    """Refusals become a message in the page and one line in the server's log."""
    import gradio as gr

    @functools.wraps(handler)
    def wrapped(*args):
        try:
            return handler(*args)
        except UserError as exc:
            log.warning("refused %s: %s", handler.__name__, exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # anything else: still one line, and the server keeps serving
            log.error("failed %s: %s: %s", handler.__name__, type(exc).__name__, str(exc).splitlines()[:1])
            raise gr.Error(f"generation failed ({type(exc).__name__}); see the server log",
                           print_exception=False) from None
    return wrapped


def _gallery(results) -> tuple[list, str]:
    items = [(enlarge(image), f"{seconds:.2f} s") for image, seconds in results]
    times = ", ".join(f"{seconds:.2f} s" for _, seconds in results)
    return items, f"Generation time per image: {times}"


def build_app(service: AppService):
    import gradio as gr

    labels = list(service.models)

    @_page_errors
    def text_to_image(prompt, model, steps, eta, seed, count):
        return _gallery(service.text_to_image(prompt, model, steps, eta, seed, count))

    @_page_errors
    def scribble(drawing, prompt, model, steps, scale, seed, count):
        composite = drawing.get("composite") if isinstance(drawing, dict) else drawing
        control, results = service.scribble(prompt, composite, model, steps, scale, seed, count)
        items, times = _gallery(results)
        return enlarge(control), items, times

    with gr.Blocks(title="hypersd: one-step text to image and scribble") as page:
        gr.Markdown("# hypersd demos\nHyper-SD distilled models of the shipped Shapes teacher (32x32 images).")
        with gr.Tab("Text to image"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label=f"Prompt (at most {MAX_PROMPT_CHARS} characters)",
                                        placeholder="a red circle above a blue square", elem_id="t2i-prompt")
                    model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="t2i-model")
                    steps = gr.Slider(1, MAX_STEPS, value=1, step=1, label="Steps (unified LoRA)", elem_id="t2i-steps")
                    eta = gr.Slider(0, 1, value=0.3, step=0.05, label="eta (TCD)")
                    seed = gr.Number(0, precision=0, label="Seed", elem_id="t2i-seed")
                    count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images")
                    run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
                with gr.Column():
                    gallery = gr.Gallery(label="Images", columns=4, format="png", elem_id="t2i-gallery")
                    times = gr.Markdown(elem_id="t2i-times")
            run.click(text_to_image, [prompt, model, steps, eta, seed, count], [gallery, times],
                      api_name="text_to_image")
        with gr.Tab("Scribble"):
            with gr.Row():
                with gr.Column():
                    # a 6-unit brush gives strokes of 1-2 pixels once the drawing is resized to 32 pixels: the
                    # stroke width of the ControlNet's training scribbles (1-2 pixels)
                    canvas = gr.Sketchpad(label="Sketch (brush, eraser, clear)", type="numpy", canvas_size=(256, 256),
                                          brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"),
                                          elem_id="scribble-canvas")
                    s_prompt = gr.Textbox(label="Prompt", placeholder="a green triangle", elem_id="scribble-prompt")
                    s_model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="scribble-model")
                    s_steps = gr.Slider(1, MAX_STEPS, value=2, step=1, label="Steps (unified LoRA)")
                    s_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Control scale")
                    s_seed = gr.Number(0, precision=0, label="Seed")
                    s_count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images")
                    s_run = gr.Button("Generate", variant="primary", elem_id="scribble-run")
                with gr.Column():
                    control = gr.Image(label="Control map (what the ControlNet sees)", format="png", elem_id="control-map")
                    s_gallery = gr.Gallery(label="Images", columns=4, format="png", elem_id="scribble-gallery")
                    s_times = gr.Markdown(elem_id="scribble-times")
            s_run.click(scribble, [canvas, s_prompt, s_model, s_steps, s_scale, s_seed, s_count],
                        [control, s_gallery, s_times], api_name="scribble")
    return page


def launch(service: AppService, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page; requests go through the service's own bounded gate (no share links)."""
    from hypersd.app.service import MAX_UPLOAD

    page = build_app(service)
    page.queue(default_concurrency_limit=None)  # the service's gate bounds and orders the work
    page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=True,
                show_error=False, max_file_size=MAX_UPLOAD, css=CSS, footer_links=[])
    return page
