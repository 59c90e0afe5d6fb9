#!/usr/bin/env bash
# The whole test suite, headless: ruff first (style and obvious mistakes), then pytest under Xvfb
# (napari needs an X server). Arguments go to pytest, e.g. `-m "not slow"` for the inner loop.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check .
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest "$@"
