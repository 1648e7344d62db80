"""Latency of `hypersd app` under load (issue 15, item 4): p50 and p95 time from request to image
through the app's HTTP API (gradio_client, the page's own `text_to_image` endpoint), with 1 and 8
concurrent clients for --seconds each, for the one-step model and the teacher at 50 steps; requests
completed and errors ("busy, try again" counts as an error: the target is none at these loads).

    python bench/app_latency.py                       # shipped models, 60 s per cell; bench/results/app_latency.{json,md}
    python bench/app_latency.py --seconds 5 --clients 1 --out app_latency-quick
Quote it only from a run that had the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

from common import RESULTS  # bench/common.py

from hypersd.assets import ONE_STEP_MODEL, TEACHER, TEACHER_GUIDANCE, UNIFIED_LORA
from hypersd.progress import quiet_libraries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, model: str, clients: int, seconds: float) -> dict:
    """`clients` threads, each its own client, requesting one image after another for `seconds`."""
    from gradio_client import Client

    times, errors, stop = [], [], time.time() + seconds
    lock = threading.Lock()

    def worker(i: int):
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        n = 0
        while time.time() < stop:
            start = time.perf_counter()
            try:
                client.predict("a red circle above a blue square", model, 1, 0.3, i * 1000 + n, 1,
                               api_name="/text_to_image")
                with lock:
                    times.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the load goes on
                with lock:
                    errors.append(str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q = statistics.quantiles(times, n=20) if len(times) >= 2 else [float("nan")] * 19
    return {"model": model, "clients": clients, "seconds": seconds, "completed": len(times), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "p50_s": statistics.median(times) if times else float("nan"),
            "p95_s": q[18]}


def main() -> None:
    quiet_libraries()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one-step", type=Path, default=ONE_STEP_MODEL)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", default="app_latency")
    args = parser.parse_args()
    from hypersd.app.service import AppService, offered_models
    from hypersd.app.ui import launch

    models = offered_models(args.one_step, UNIFIED_LORA, TEACHER_GUIDANCE)
    capacity = max(args.clients) + 1  # the gate holds every client's request: none is refused at these loads
    service = AppService(TEACHER, models, None, capacity=capacity)
    port = _free_port()
    page = launch(service, "127.0.0.1", port, block=False)
    url = f"http://127.0.0.1:{port}/"
    rows = []
    try:
        for model in [m.label for m in models if m.label.startswith(("one-step", "teacher"))]:
            for clients in args.clients:
                row = load(url, model, clients, args.seconds)
                rows.append(row)
                print(f"{model}, {clients} clients: p50 {row['p50_s']:.3f} s, p95 {row['p95_s']:.3f} s, "
                      f"{row['completed']} done, {row['errors']} errors")
    finally:
        page.close()
    lines = ["# `hypersd app` latency under load", "",
             f"Request to image through the app's HTTP API (gradio_client, endpoint /text_to_image, one 32x32 image "
             f"per request) on loopback, {args.seconds:g} s per cell, {os.cpu_count()} CPUs; the app's gate holds "
             f"{capacity} requests.", "", "| model | clients | p50 (s) | p95 (s) | completed | errors |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['clients']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['completed']} | "
              f"{r['errors']} |" for r in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"rows": rows, "capacity": capacity}, indent=2))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / args.out}.md")


if __name__ == "__main__":
    main()
