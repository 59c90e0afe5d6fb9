"""`fvlm analyze` end to end on a phantom (a new process: imports, reading, model, writing).

Target: median at most 10 s with the `demo` model on this 2-core CPU. The baseline printed beside
it is the bare interpreter start with torch and transformers imported, the floor of any run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import median_seconds, verdict


def _time(command: list[str], repeats: int) -> float:
    return median_seconds(lambda: subprocess.run(command, check=True, capture_output=True), repeats)


def main(repeats: int = 3) -> None:
    from napari_fvlm.core.inference.models import DEMO_WEIGHTS
    from napari_fvlm.core.phantom import generate_phantom, write_phantom

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_phantom(generate_phantom(7), folder / "phantom")
        model = "demo"
        if not (DEMO_WEIGHTS / "config.json").exists():  # before demo weights are trained
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from engine_fixtures import save_random_demo_model
            model = save_random_demo_model(folder / "random_demo")
            print("(no bundled demo weights yet: a randomly initialised demo model is timed)")
        command = [sys.executable, "-m", "napari_fvlm.cli", "analyze", str(folder / "phantom" / "ct.nii.gz"),
                   "--masks", str(folder / "phantom" / "anatomy.nii.gz"), "--model", model,
                   "--query", "nodule in the left lower lobe", "--out", str(folder / "out")]
        floor = _time([sys.executable, "-c", "import torch, transformers"], repeats)
        seconds = _time(command, repeats)
    print(f"(python + torch + transformers import alone: {floor:.1f}s)")
    print(f"demo fvlm analyze on a phantom, end to end: {seconds:.1f}s (target <= 10) "
          f"{verdict(seconds <= 10)}")


if __name__ == "__main__":
    main()
