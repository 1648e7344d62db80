"""`hypersd app`: the release's two web demos (one-step text to image; scribble with a ControlNet) on
the shipped models. `service.py` is what the app does, without the web; `ui.py` is the gradio page."""
