"""TotalSegmentator through its real code (stand-in weights), in a worker process, offline."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_fvlm.core.anatomy import totalseg
from napari_fvlm.core.anatomy.totalseg import (
    TotalSegmentatorProvider,
    missing_models,
    required_models,
    totalseg_weights_dir,
)
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS, TOTAL_CLASSES
from napari_fvlm.core.errors import FvlmInputError, FvlmRuntimeError, ProcessOutput
from napari_fvlm.core.io.nifti import read_nifti
from napari_fvlm.core.progress import Cancelled

from totalseg_standin import BRIGHT_CLASS, bright_sphere_ct


def test_class_table_matches_installed_totalsegmentator():
    from totalsegmentator.map_to_binary import class_map
    assert dict(class_map["total"]) == TOTAL_CLASSES


def test_weights_folder_is_found_as_totalsegmentator_finds_it(tmp_path, monkeypatch):
    from totalsegmentator.config import get_weights_dir
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    assert totalseg_weights_dir() == get_weights_dir() == tmp_path / "home" / "nnunet" / "results"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    assert totalseg_weights_dir() == get_weights_dir()


def test_required_models_follow_the_options():
    fast, full = required_models(fast=True), required_models(fast=False)
    assert len(fast) == 1 and len(full) == 5  # one 3 mm model; five 1.5 mm part models
    cropped = required_models(fast=True, roi_subset=["heart"])
    assert cropped[:1] == fast and len(cropped) == 2  # plus the coarse model that finds the crop
    assert all(m.name.endswith("__nnUNetPlans__3d_fullres") for m in fast + full + cropped)


def test_missing_weights_refused_before_any_worker_or_download(empty_totalseg_home, monkeypatch):
    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started although the weights are missing")

    monkeypatch.setattr(totalseg.subprocess, "Popen", no_worker)
    ct, _ = bright_sphere_ct()
    start = time.perf_counter()
    with pytest.raises(FvlmInputError, match="totalseg_download_weights -t total_fast") as err:
        TotalSegmentatorProvider(fast=True, device="cpu").segment(ct)
    assert time.perf_counter() - start < 1.0
    assert "TOTALSEG_HOME_DIR" in str(err.value)
    assert list(empty_totalseg_home.iterdir()) == []  # nothing created: no weights folder, no config


@pytest.mark.slow
def test_worker_refuses_downloads_and_network_on_its_own(empty_totalseg_home, tmp_path):
    """Even started directly, the worker neither downloads nor writes TotalSegmentator's config."""
    ct, _ = bright_sphere_ct()
    ct_path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(np.transpose(ct.array, (2, 1, 0)), ct.affine), ct_path)
    done = subprocess.run([sys.executable, "-m", totalseg.WORKER_MODULE, str(ct_path), str(tmp_path / "o.nii"),
                           "--fast", "--device", "cpu"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TOTALSEG_HOME_DIR": str(empty_totalseg_home)})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith(totalseg.ERROR_PREFIX)]
    assert errors and "totalseg_download_weights" in errors[-1]
    assert list(empty_totalseg_home.iterdir()) == []
    for command in re.findall(r"`(totalseg_download_weights[^`]*)`", errors[-1]):
        assert downloader_tasks(command), command  # the worker's advice parses too


def downloader_tasks(command: str) -> list:
    """The task ids TotalSegmentator's own downloader would fetch for ``command`` (nothing is fetched);
    its argument parser exits (SystemExit) on a command it does not accept."""
    from totalsegmentator.bin import totalseg_download_weights as downloader

    fetched = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(downloader, "download_pretrained_weights", fetched.append)
        patch.setattr(downloader, "setup_totalseg", lambda *args, **kwargs: {})
        patch.setattr(downloader, "set_config_key", lambda *args, **kwargs: None)
        patch.setattr(sys, "argv", shlex.split(command))
        downloader.main()
    return fetched


@pytest.mark.parametrize("fast", [True, False])
def test_the_download_command_we_print_is_accepted_by_totalsegmentator(empty_totalseg_home, monkeypatch, fast):
    monkeypatch.setattr(totalseg.subprocess, "Popen", None)  # no worker either
    with pytest.raises(FvlmInputError) as err:
        TotalSegmentatorProvider(fast=fast, device="cpu").segment(bright_sphere_ct()[0])
    command = re.search(r"`(totalseg_download_weights[^`]*)`", str(err.value)).group(1)
    fetched = downloader_tasks(command)
    needed = {int(re.match(r"Dataset(\d+)_", m.parts[0]).group(1)) for m in required_models(fast)}
    assert needed and needed <= set(fetched), (command, fetched)
    with pytest.raises(SystemExit):  # the form printed before: TotalSegmentator's parser refuses it
        downloader_tasks("totalseg_download_weights -t total --fast")


def test_worker_network_guard_refuses_remote_hosts_only():
    code = ("import socket\n"
            "from napari_fvlm.core.anatomy.totalseg_worker import refuse_network\n"
            "refuse_network()\n"
            "a, b = socket.socketpair(); a.sendall(b'ok'); assert b.recv(2) == b'ok'\n"
            "try:\n    socket.create_connection(('example.org', 443), timeout=1)\n"
            "except OSError as err:\n    print('refused:', err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: network access is disabled" in done.stdout


def _ras_stored_ct(tmp_path):
    """The test CT as a file stored in RAS voxel order (not the canonical one), read back."""
    ct, sphere = bright_sphere_ct()
    image = nib.as_closest_canonical(nib.Nifti1Image(np.transpose(ct.array, (2, 1, 0)), ct.affine))
    path = tmp_path / "ct_ras.nii.gz"
    nib.save(image, path)
    loaded = read_nifti(path)
    assert not loaded.source.reorientation.is_identity and np.array_equal(loaded.array, ct.array)
    return loaded, sphere


@pytest.mark.slow
def test_totalsegmentator_end_to_end_with_standin_weights(standin_totalseg_home, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ct, sphere = _ras_stored_ct(tmp_path)
    reports = []
    labels = TotalSegmentatorProvider(fast=True, device="cpu").segment(
        ct, progress=lambda fraction, message: reports.append((fraction, message)))

    assert labels.same_grid(ct) and labels.array.dtype == np.uint8
    values = set(np.unique(labels.array).tolist()) - {0}
    assert values and values <= set(TOTAL_CLASSES)
    assert labels.labels == {v: TOTAL_CLASSES[v] for v in values}
    bright = labels.array == TOTAL_CLASS_IDS[BRIGHT_CLASS]  # the stand-in labels what is bright
    dice = 2 * np.sum(bright & sphere) / (bright.sum() + sphere.sum())
    assert dice > 0.95, dice

    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("tiles" in message for _, message in reports)  # nnU-Net's own progress came through
    assert "nnunetv2" not in sys.modules and "totalsegmentator.nnunet" not in sys.modules
    assert not (standin_totalseg_home / "config.json").exists()  # no statistics id, no counter
    assert list(scratch.iterdir()) == []  # the worker's scratch files went with ours


@pytest.mark.slow
def test_cancel_kills_the_worker_and_its_children(standin_totalseg_home, monkeypatch):
    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(totalseg.subprocess, "Popen", popen)
    cancel, cancelled_at, outcome = threading.Event(), [], []

    def progress(fraction, message):
        if "Loading the TotalSegmentator model" in message and not cancel.is_set():
            cancelled_at.append(time.perf_counter())
            cancel.set()

    def run():
        try:
            TotalSegmentatorProvider(fast=True, device="cpu").segment(bright_sphere_ct()[0], progress, cancel)
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            outcome.append((err, time.perf_counter()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert outcome, "segment() did not return"
    error, ended_at = outcome[0]
    assert isinstance(error, Cancelled), error
    assert ended_at - cancelled_at[0] < 2.0
    assert started[0].poll() is not None
    if os.name == "posix":  # no process of the worker's group is left
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline:
            try:
                os.killpg(started[0].pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("processes of the cancelled worker are still running")


def test_cancel_before_start_starts_nothing(standin_totalseg_home, monkeypatch):
    monkeypatch.setattr(totalseg.subprocess, "Popen", lambda *a, **k: pytest.fail("worker started"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        TotalSegmentatorProvider().segment(bright_sphere_ct()[0], cancel=cancel)


@pytest.mark.parametrize("script, expected", [
    ("import sys; print('Traceback (most recent call last):', file=sys.stderr); "
     "print('ValueError: the image is 2D', file=sys.stderr); sys.exit(1)", "ValueError: the image is 2D"),
    ("import sys; print('FVLM-ERROR out of memory on the GPU', file=sys.stderr); "
     "print('  File x.py, line 3', file=sys.stderr); sys.exit(2)", "out of memory on the GPU"),
    ("import sys; print('FVLM-PROGRESS 0.1 started'); print('ERROR: Invalid license number.'); sys.exit(1)",
     "ERROR: Invalid license number."),
])
def test_worker_failure_becomes_one_clear_error(standin_totalseg_home, monkeypatch, script, expected):
    monkeypatch.setattr(TotalSegmentatorProvider, "worker_command",
                        lambda self, ct_path, out_path: [sys.executable, "-c", script])
    with pytest.raises(FvlmRuntimeError, match="TotalSegmentator failed") as err:  # not a refusal of the input
        TotalSegmentatorProvider().segment(bright_sphere_ct()[0])
    assert str(err.value).endswith(expected)
    assert isinstance(err.value.__cause__, ProcessOutput) and expected in str(err.value.__cause__)


def test_missing_models_sees_incomplete_folders(standin_totalseg_home):
    assert missing_models(fast=True) == []
    model = required_models(fast=True)[0]
    (totalseg_weights_dir() / model / "fold_0" / "checkpoint_final.pth").unlink()
    assert missing_models(fast=True) == [model]


@pytest.mark.parametrize("choice, cuda, expected", [
    ("auto", True, "gpu"), ("gpu", True, "gpu"), ("cuda", True, "gpu"), ("auto", False, "cpu"), ("cpu", True, "cpu")])
def test_device_is_named_in_totalsegmentators_words(monkeypatch, choice, cuda, expected):
    import torch
    from totalsegmentator.python_api import validate_device_type_api

    from napari_fvlm.core.anatomy.totalseg_worker import build_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    command = TotalSegmentatorProvider(device=choice).worker_command(Path("ct.nii"), Path("out.nii"))
    device = command[command.index("--device") + 1]
    assert device == expected
    assert validate_device_type_api(device) == device  # TotalSegmentator's own check
    assert build_parser().parse_args(command[3:]).device == device  # and the worker's


def test_gpu_without_cuda_is_refused_in_plain_words(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FvlmInputError, match="No GPU"):
        TotalSegmentatorProvider(device="gpu").worker_command(Path("ct.nii"), Path("out.nii"))


def test_bad_options_are_refused():
    with pytest.raises(FvlmInputError, match="device"):
        TotalSegmentatorProvider(device="tpu")
    with pytest.raises(FvlmInputError, match="not_an_organ"):
        TotalSegmentatorProvider(roi_subset=["heart", "not_an_organ"])
