"""Driving the app's page the way a person does (Playwright): shared by the browser tests and
bench/app_screenshots.py."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose(page, elem_id: str, label: str) -> None:
    """Pick `label` in a gradio dropdown: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} ul li, ul[role='listbox'] li").filter(has_text=label).first.click()
