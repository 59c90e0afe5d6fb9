"""Child process that runs TotalSegmentator's `total` task on one NIfTI file, offline.

Usage: ``python -m napari_fvlm.core.anatomy.totalseg_worker CT.nii OUT.nii [--fast] [--device D]
[--roi-subset a,b] [--scratch DIR]``, with D in TotalSegmentator's words (cpu, gpu, mps). Writes
TotalSegmentator's multilabel output to OUT, progress lines (``FVLM-PROGRESS <fraction> <message>``)
to stdout and, on failure, one ``FVLM-ERROR`` line to stderr. Inside this process TotalSegmentator
sends nothing anywhere: its usage statistics, its config writes and its weight downloads are
replaced, and any non-local connection is refused.

Keep the top level light: nnU-Net's spawned helpers import this module again.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import traceback

PROGRESS_PREFIX = "FVLM-PROGRESS "
ERROR_PREFIX = "FVLM-ERROR "
_LOCAL_HOSTS = (None, "", "localhost", "127.0.0.1", "::1")


def download_command(fast: bool = True) -> str:
    """The command that downloads the `total` weights, as TotalSegmentator's downloader spells it."""
    return f"totalseg_download_weights -t {'total_fast' if fast else 'total'}"


class MissingWeights(RuntimeError):
    """TotalSegmentator wanted to download weights; this worker never does."""


def emit(fraction: float, message: str) -> None:
    # sys.__stdout__: TotalSegmentator swaps sys.stdout for a sink while nnU-Net runs
    print(f"{PROGRESS_PREFIX}{fraction:.3f} {message}", file=sys.__stdout__, flush=True)


def refuse_network() -> None:
    """Make every non-local connection and name lookup in this process fail at once."""
    def refused(*_args, **_kwargs):
        raise OSError("network access is disabled in the TotalSegmentator worker")

    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(host, *args, **kwargs) if host in _LOCAL_HOSTS else refused()

    def is_local(sock, address) -> bool:
        return sock.family not in (socket.AF_INET, socket.AF_INET6) or address[0] in _LOCAL_HOSTS

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = lambda self, address: (
        real_connect(self, address) if is_local(self, address) else refused())
    socket.socket.connect_ex = lambda self, address: (
        real_connect_ex(self, address) if is_local(self, address) else refused())


def silence_totalsegmentator(api) -> None:
    """No usage statistics, no config file writes, no downloads (a missing model is an error)."""
    from totalsegmentator import config

    def read_config(totalseg_id=None):
        return {**(config.get_config() or {}), "send_usage_stats": False, "prediction_counter": 0}

    def no_download(task_id):
        from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
        info = TASK_ID_WEIGHTS_CONFIGS.get(task_id, {})
        folder = config.get_weights_dir() / info.get("rel_path", "") / info.get("foldername", str(task_id))
        if not folder.exists():
            raise MissingWeights(
                f"TotalSegmentator's model {folder.name} is not in {folder.parent}; download it once with "
                f"`{download_command(True)}` (or `{download_command(False)}` for the full model).")

    for module in (api, config):
        for name, replacement in (("send_usage_stats", lambda *a, **k: None),
                                  ("send_usage_stats_application", lambda *a, **k: None),
                                  ("increase_prediction_counter", lambda: None),
                                  ("set_config_key", lambda *a, **k: None),
                                  ("setup_totalseg", read_config)):
            if hasattr(module, name):
                setattr(module, name, replacement)
    api.download_pretrained_weights = no_download
    real_get_key = api.get_config_key
    api.get_config_key = lambda key: True if key == "statistics_disclaimer_shown" else real_get_key(key)


def report_progress(nnunet_module) -> None:
    """Progress from TotalSegmentator's steps: resampling, model loading, each predicted tile."""
    import nnunetv2.inference.predict_from_raw_data as predictor_module

    resamplings = {"count": 0}
    real_change_spacing, real_predict = nnunet_module.change_spacing, nnunet_module.nnUNetv2_predict

    def change_spacing(*args, **kwargs):
        first = resamplings["count"] == 0
        resamplings["count"] += 1
        emit(0.15 if first else 0.88, "Resampling to the model's spacing" if first else
             "Resampling back to the CT grid")
        return real_change_spacing(*args, **kwargs)

    def predict(*args, **kwargs):
        emit(0.25, "Loading the TotalSegmentator model")
        result = real_predict(*args, **kwargs)
        emit(0.85, "Writing the segmentation")
        return result

    class TileProgress(predictor_module.tqdm):
        """nnU-Net's progress bars: the sliding-window tiles (no description), then export."""

        def __init__(self, *args, desc=None, **kwargs):
            self.fvlm_desc, self.fvlm_done = desc, 0
            super().__init__(*args, desc=desc, **kwargs)

        def update(self, n=1):
            self.fvlm_done += n
            total = max(int(self.total or 1), 1)
            share = min(self.fvlm_done, total) / total
            if self.fvlm_desc is None:
                emit(0.3 + 0.5 * share, f"Segmenting ({self.fvlm_done}/{total} tiles)")
            else:
                emit(0.8 + 0.05 * share, str(self.fvlm_desc))
            return super().update(n)

    nnunet_module.change_spacing = change_spacing
    nnunet_module.nnUNetv2_predict = predict
    predictor_module.tqdm = TileProgress


def run(args: argparse.Namespace) -> None:
    emit(0.02, "Starting TotalSegmentator")
    if args.scratch:
        # multiprocessing's own folder (Unix sockets, path length limited) stays in the system's
        # short temporary folder; helper processes inherit it from here
        import multiprocessing.util
        multiprocessing.util.get_temp_dir()
        tempfile.tempdir = args.scratch
    refuse_network()
    import totalsegmentator.python_api as api
    api.setup_nnunet()  # nnU-Net reads its folders from the environment when first imported
    import totalsegmentator.nnunet as nnunet_module
    silence_totalsegmentator(api)
    report_progress(nnunet_module)
    emit(0.1, f"TotalSegmentator loaded (device: {args.device})")
    roi_subset = [c for c in args.roi_subset.split(",") if c] if args.roi_subset else None
    api.totalsegmentator(args.ct, args.out, ml=True, fast=args.fast, task="total", roi_subset=roi_subset,
                         device=args.device, quiet=True, nr_thr_resamp=1, nr_thr_saving=1)
    emit(0.97, "Segmentation written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run TotalSegmentator's `total` task offline.")
    parser.add_argument("ct")
    parser.add_argument("out")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu", "mps"),
                        help="TotalSegmentator's device name (the parent resolves 'auto')")
    parser.add_argument("--roi-subset", default="")
    parser.add_argument("--scratch", default=None, help="folder for TotalSegmentator's temporary files")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except SystemExit as stop:  # TotalSegmentator calls sys.exit("ERROR: ...") on some inputs
        if stop.code in (0, None):
            return 0
        if isinstance(stop.code, int):  # it printed why before; the provider reads that line
            return stop.code
        return _fail(str(stop.code))
    except MissingWeights as err:
        return _fail(str(err))
    except Exception as err:  # noqa: BLE001 -- one line for the provider, the traceback for whoever reads stderr
        traceback.print_exc()
        return _fail(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
    return 0


def _fail(message: str) -> int:
    print(ERROR_PREFIX + " ".join(message.split()), file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
