#!/usr/bin/env bash
# One-command set-up: system packages (Xvfb for headless napari), a virtual
# environment in .venv, and this project with its test extras and a Qt binding (`all`). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb xauth)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxcb-shape0 libxcb-cursor0 \
    libegl1 libgl1 libdbus-1-3 >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ constraints-gpu.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  constraints=constraints.txt
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    constraints=constraints-gpu.txt  # a GPU is present: let pip take torch's CUDA build
  fi
  .venv/bin/python -m pip install -q -c "$constraints" -e ".[test,all]" 2>&1 \
    | grep -vE "^WARNING: Location .* is ignored" || true
  .venv/bin/python -c "import torch, napari, napari_fvlm, qtpy.QtWidgets" || { echo "set-up failed: see pip output above" >&2; exit 1; }
  touch "$stamp"
fi
echo "set-up done: .venv ready"
