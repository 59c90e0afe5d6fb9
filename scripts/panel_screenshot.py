"""Retake docs/images/panel.png: the demo on a held-out phantom, analysed, one query grounded.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/panel_screenshot.py \
        --seed 20001 --query "enlarged heart" --out docs/images/panel.png

The seed should be a held-out one (20000 and up: never trained on). Runs the real panel with
the bundled demo weights; a shown napari window is needed (off-screen Qt renders black).
"""

from __future__ import annotations

import argparse
import time


def wait_until(app, done, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the panel did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20001)
    parser.add_argument("--query", default="enlarged heart")
    parser.add_argument("--out", default="docs/images/panel.png")
    args = parser.parse_args()

    from qtpy.QtWidgets import QApplication

    from napari_fvlm.demo import open_demo

    viewer, panel = open_demo(seed=args.seed)
    viewer.window.resize(1500, 950)
    viewer.window.show()
    app = QApplication.instance()
    wait_until(app, lambda: panel.state.result is not None and not panel.runner.busy, 300)
    panel.ask(args.query)
    wait_until(app, lambda: not panel.runner.busy and args.query in panel.state.history, 120)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    viewer.window._qt_window.grab().save(args.out)
    print(f"screenshot written to {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
