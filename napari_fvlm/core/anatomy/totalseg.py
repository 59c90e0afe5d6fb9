"""TotalSegmentator as a segmentation provider, run in a worker process.

TotalSegmentator spawns processes, may call ``sys.exit`` and downloads missing weights on its
own; running it in a child process keeps all of that out of napari, lets a cancel kill it at
once, and lets this process check the weights first so nothing is ever downloaded unasked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ..errors import FvlmInputError, FvlmRuntimeError, ProcessOutput
from ..io.nifti import read_nifti, write_nifti
from ..progress import Cancelled, Progress, check_cancel
from ..volume import Volume
from .align import align_labels
from .providers import to_total_ids
from .totalseg_classes import TOTAL_CLASS_IDS
from .totalseg_worker import download_command

PROGRESS_PREFIX = "FVLM-PROGRESS "  # worker -> provider: "<prefix><fraction> <message>"
ERROR_PREFIX = "FVLM-ERROR "  # worker -> provider: one human line on failure
WORKER_MODULE = "napari_fvlm.core.anatomy.totalseg_worker"
DEVICES = ("auto", "cpu", "gpu", "cuda")  # the user's words, and torch's once resolved
MAX_SOCKET_DIR_LENGTH = 60  # leaves room for multiprocessing's "/pymp-*/listener-*" below it


def totalseg_home() -> Path:
    """TotalSegmentator's home folder, found as TotalSegmentator finds it (TOTALSEG_HOME_DIR)."""
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"])
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()  # as TotalSegmentator does in docker
    return home / ".totalsegmentator"


def totalseg_weights_dir() -> Path:
    """The nnU-Net results folder that holds TotalSegmentator's weights."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    return totalseg_home() / "nnunet" / "results"


def required_models(fast: bool = True, roi_subset=None) -> list[Path]:
    """Model folders (relative to the weights folder) the `total` task reads for these options.

    Read from TotalSegmentator's own task tables, which are plain data (no torch import).
    """
    try:
        from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS
    except ImportError:
        raise FvlmInputError("TotalSegmentator is not installed; install it with "
                             "`pip install TotalSegmentator`, or open a mask file instead.") from None
    mode = TASK_CONFIGS["total"]["sub_modes"]["fast" if fast else "default"]
    ids = mode["task_id"] if isinstance(mode["task_id"], list) else [mode["task_id"]]
    models = [(i, mode["trainer"]) for i in ids]
    if roi_subset:  # a coarse 6 mm model first finds the region to crop
        models.append((TASK_CONFIGS["total"]["sub_modes"]["fastest"]["task_id"],
                       TASK_CONFIGS["total"]["sub_modes"]["fastest"]["trainer"]))
    return [Path(TASK_ID_WEIGHTS_CONFIGS[i]["foldername"]) / f"{trainer}__nnUNetPlans__3d_fullres"
            for i, trainer in models]


def missing_models(fast: bool = True, roi_subset=None) -> list[Path]:
    """The required model folders that lack their plans, dataset description or fold-0 checkpoint."""
    weights = totalseg_weights_dir()
    needed = ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth")
    return [m for m in required_models(fast, roi_subset) if not all((weights / m / f).is_file() for f in needed)]


def missing_weights_message(missing: list[Path], fast: bool) -> str:
    datasets = sorted({m.parts[0] for m in missing})
    return (f"TotalSegmentator's weights are not in {totalseg_weights_dir()} (missing {', '.join(datasets)}); "
            f"download them once with `{download_command(fast)}`, or set TOTALSEG_HOME_DIR "
            f"to a folder that has them, or choose a Labels layer or a mask file instead.")


def totalseg_device(device: str) -> str:
    """TotalSegmentator's name for a device ("gpu", "cpu"): the user's choice resolved once, as
    torch names it ("cuda"), then translated here, at TotalSegmentator's edge."""
    from ..inference.models import pick_device

    return {"cuda": "gpu"}.get(pick_device(device), "cpu")


class TotalSegmentatorProvider:
    """TotalSegmentator's `total` task (fast 3 mm model by default) on a CT, in a child process."""

    name = "TotalSegmentator"

    def __init__(self, fast: bool = True, device: str = "auto", roi_subset=None):
        if device not in DEVICES:
            raise FvlmInputError(f"device {device!r} is not one of {', '.join(DEVICES)}.")
        unknown = sorted(set(roi_subset or ()) - set(TOTAL_CLASS_IDS))
        if unknown:
            raise FvlmInputError(f"not TotalSegmentator `total` classes: {', '.join(unknown)}.")
        self.fast = fast
        self.device = device
        self.roi_subset = list(roi_subset) if roi_subset else None

    def worker_command(self, ct_path: Path, out_path: Path) -> list[str]:
        command = [sys.executable, "-m", WORKER_MODULE, str(ct_path), str(out_path),
                   "--device", totalseg_device(self.device),
                   "--scratch", str(out_path.parent)]  # TotalSegmentator's scratch goes with ours
        if self.fast:
            command.append("--fast")
        if self.roi_subset:
            command += ["--roi-subset", ",".join(self.roi_subset)]
        return command

    def segment(self, ct: Volume, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Volume:
        report = _Monotonic(progress)
        check_cancel(cancel, "TotalSegmentator")
        missing = missing_models(self.fast, self.roi_subset)
        if missing:
            raise FvlmInputError(missing_weights_message(missing, self.fast))
        with tempfile.TemporaryDirectory(prefix="fvlm-totalseg-") as tmp:
            report(0.0, "Writing the CT for TotalSegmentator")
            ct_path = write_nifti(ct, Path(tmp) / "ct.nii")
            out_path = Path(tmp) / "segmentation.nii"
            self._run(self.worker_command(ct_path, out_path), tmp, report, cancel)
            if not out_path.is_file():
                raise FvlmRuntimeError("TotalSegmentator finished without writing a segmentation.")
            result = read_nifti(out_path)
        array, names = to_total_ids(result.array, result.labels, "TotalSegmentator output")
        labels = align_labels(ct, Volume(array, result.affine, result.source, names))
        report(1.0, "TotalSegmentator finished")
        return labels

    def _run(self, command: list[str], tmp: str, report, cancel: threading.Event | None) -> None:
        env = _worker_environment(tmp)
        popen_kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1,
                                   env=env, **popen_kwargs)
        lines: deque[str] = deque()
        stdout_tail: deque[str] = deque(maxlen=40)
        stderr_tail: deque[str] = deque(maxlen=40)
        readers = [threading.Thread(target=_pump, args=(process.stdout, lines.append), daemon=True),
                   threading.Thread(target=_pump, args=(process.stderr, stderr_tail.append), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            while process.poll() is None:
                if cancel is not None and cancel.is_set():
                    _kill_tree(process)
                    raise Cancelled("TotalSegmentator was cancelled.")
                _forward_progress(lines, report, stdout_tail)
                time.sleep(0.05)
        except BaseException:
            if process.poll() is None:
                _kill_tree(process)
            raise
        for reader in readers:
            reader.join(timeout=5)
        _forward_progress(lines, report, stdout_tail)
        if process.returncode != 0:
            reason = _failure_line(stderr_tail, stdout_tail, process.returncode)
            output = "\n".join(stderr_tail) or "\n".join(stdout_tail)  # its traceback, else what it printed
            raise FvlmRuntimeError(f"TotalSegmentator failed: {reason}") from ProcessOutput(output)


class _Monotonic:
    """Progress that never goes back (TotalSegmentator may run a second model after the first)."""

    def __init__(self, progress: Progress | None):
        self.progress, self.best = progress, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        self.best = max(self.best, min(1.0, float(fraction)))
        if self.progress is not None:
            self.progress(self.best, message)


def _worker_environment(tmp: str) -> dict[str, str]:
    """The child's environment: this package importable, output unbuffered, temporary files in ``tmp``.

    nnU-Net's process manager puts Unix sockets under TMPDIR, whose paths are limited to about
    100 characters, so ``tmp`` becomes the child's TMPDIR only when it is short; otherwise the
    worker still puts its own scratch files there (``--scratch``).
    """
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if len(tmp) <= MAX_SOCKET_DIR_LENGTH:  # then even a killed worker leaves nothing behind
        env.update(TMPDIR=tmp, TEMP=tmp, TMP=tmp)
    return env


def _pump(stream, sink) -> None:
    for line in iter(stream.readline, ""):
        sink(line.rstrip("\r\n"))
    stream.close()


def _forward_progress(lines: deque, report, other: deque) -> None:
    """Progress lines to ``report``; TotalSegmentator's own prints to ``other``."""
    while lines:
        line = lines.popleft()
        if not line.startswith(PROGRESS_PREFIX):
            other.append(line)
            continue
        fraction, _, message = line[len(PROGRESS_PREFIX):].partition(" ")
        try:
            fraction = float(fraction)
        except ValueError:
            continue
        report(fraction, message)


def _failure_line(stderr_tail, stdout_tail, returncode: int) -> str:
    """The worker's own error line, else the last line of stderr (then stdout) that says something."""
    lines = [line.strip() for line in stderr_tail if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):]
    noise = ("File ", "Traceback", "warnings.warn", "^", "~", "|")
    for tail in (lines, [line.strip() for line in stdout_tail if line.strip()]):
        meaningful = [line for line in tail if not line.startswith(noise) and "%|" not in line]
        if meaningful:
            return meaningful[-1]
    if returncode < 0:
        return f"the worker was stopped by signal {-returncode} (out of memory?)."
    return f"the worker exited with status {returncode}."


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the worker and every process it spawned, at once."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
