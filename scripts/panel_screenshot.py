"""Retake the panel's screenshots in docs/images: the first screen of `fvlm demo` (analysis done,
the most probable finding's heatmap shown) and the three planes after a query.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/panel_screenshot.py \
        --seed 20001 --query "enlarged heart"

The seed should be a held-out one (20000 and up: never trained on). Runs the real panel with
the bundled demo weights; a shown napari window is needed (off-screen Qt renders black).
"""

from __future__ import annotations

import argparse


def wait_until(done, timeout_s: float) -> None:
    from napari_fvlm.widgets.responsiveness import wait_until as run_until

    run_until(done, timeout_s, poll_ms=20)


def settle(seconds: float = 1.0) -> None:
    from napari_fvlm.widgets.responsiveness import settle as run_for

    run_for(seconds, poll_ms=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20001)
    parser.add_argument("--query", default="enlarged heart")
    parser.add_argument("--first-screen", default="docs/images/demo-first-screen.png")
    parser.add_argument("--planes", default="docs/images/three-planes.png")
    args = parser.parse_args()

    from napari_fvlm.demo import open_demo
    from napari_fvlm.widgets.viewer_layout import main_window

    viewer, panel = open_demo(seed=args.seed)  # sized to the screen, three planes, analysis started
    window = main_window(viewer)
    window.show()
    wait_until(lambda: panel.state.result is not None and not panel.runner.busy, 600)
    settle()
    window.grab().save(args.first_screen)
    print(f"first screen written to {args.first_screen}")
    panel.ask(args.query)
    wait_until(lambda: not panel.runner.busy and args.query in panel.state.history, 120)
    settle()
    window.grab().save(args.planes)
    print(f"three planes written to {args.planes}")
    viewer.close()


if __name__ == "__main__":
    main()
