"""How long the napari window freezes: the largest pause of a 20 ms timer during each user action.

Runs a real viewer (needs an X server: `xvfb-run -a python -m benchmarks gui`) with the three
planes shown, while another process keeps every CPU core busy. Actions: opening a
512 x 512 x 300 CT (in the background, and napari's own synchronous open as the baseline), the
first analysis (the model loaded in this run), choosing a table row, a query, an anatomy
checkbox, and the exports. Target: every largest gap under 100 ms.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

TARGET_S = 0.100
JOB_TIMEOUT_S = 600


def _spin() -> None:
    while True:
        pass


def busy_cores(count: int | None = None) -> list:
    """Processes that keep ``count`` cores (default: all) at 100 %; terminate them when done."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count or os.cpu_count() or 2)]
    for spinner in spinners:
        spinner.start()
    return spinners


def wait_until(done, timeout_s: float = JOB_TIMEOUT_S) -> None:
    from napari_fvlm.widgets.responsiveness import wait_until as run_until

    run_until(done, timeout_s)


def settle(seconds: float = 0.3) -> None:
    from napari_fvlm.widgets.responsiveness import settle as run_for

    run_for(seconds)


def main() -> None:
    import napari

    from benchmarks.chest_ct import chest_ct
    from napari_fvlm.core.io.nifti import write_nifti
    from napari_fvlm.widgets.responsiveness import GapMeter

    folder = Path(tempfile.mkdtemp(prefix="fvlm-bench-gui-"))
    ct, masks = chest_ct()
    write_nifti(ct, folder / "ct.nii.gz")
    write_nifti(masks, folder / "masks.nii.gz")
    del ct, masks

    spinners = busy_cores()  # forked before Qt starts
    viewer = napari.Viewer(title="bench", show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", "fVLM analysis")
    viewer.window._qt_window.resize(1500, 950)
    panel.show_three_planes(True)
    settle()

    def settled() -> None:
        """Pending redraws have landed and the side planes have caught up (they follow a turn later)."""
        settle()
        wait_until(panel.layout_of_views.planes.settled)

    meter = GapMeter()
    gaps: dict[str, float] = {}
    try:
        meter.start()
        layer = viewer.open(str(folder / "masks.nii.gz"), plugin="napari-fvlm")[0]  # napari's own way
        settled()
        gaps["baseline: napari's synchronous open (masks)"] = meter.stop()

        meter.start()
        opened = []
        panel.open_ct(str(folder / "ct.nii.gz"))
        panel._opening.returned.connect(lambda *_: opened.append(True))
        wait_until(lambda: bool(opened) and "ct" in viewer.layers)
        settled()
        gaps["open a 512x512x300 CT"] = meter.stop()

        panel.view.inputs.select(ct="ct", labels=layer.name)
        meter.start()
        panel.analyze()
        wait_until(lambda: not panel.runner.busy)
        settled()
        gaps["first analysis (model loaded)"] = meter.stop()
        if panel.state.result is None:
            raise RuntimeError(panel.view.status.text())

        row = panel.view.table.rows()[3]
        anatomy, finding = row.anatomy, row.finding
        meter.start()
        panel.view.table.choose(anatomy, finding)
        wait_until(lambda: not panel.runner.busy)
        settled()
        gaps["table row click"] = meter.stop()

        meter.start()
        panel.ask("nodule in the left lower lobe")
        wait_until(lambda: not panel.runner.busy)
        settled()
        gaps["query"] = meter.stop()

        first_id = panel.view.anatomy.all_ids()[0]
        meter.start()
        panel.view.anatomy.set_visible(first_id, False)
        settled()
        gaps["anatomy checkbox"] = meter.stop()

        meter.start()
        panel.export_findings(folder / "export")
        wait_until(lambda: not panel.runner.busy)
        panel.export_masks(folder / "export_masks.nii.gz")
        wait_until(lambda: not panel.runner.busy)
        settled()
        gaps["export findings and masks"] = meter.stop()
    finally:
        for spinner in spinners:
            spinner.terminate()
        viewer.close()

    baseline = gaps.pop("baseline: napari's synchronous open (masks)")
    print(f"baseline, napari's synchronous open of the masks file: largest gap {baseline * 1000:.0f} ms")
    print(f"background open vs synchronous open: {baseline / max(gaps['open a 512x512x300 CT'], 1e-3):.1f}x "
          "shorter largest gap")
    for action, gap in gaps.items():
        ok = "ok" if gap < TARGET_S else "MISSED"
        print(f"largest GUI gap, {action}, all cores busy: {gap * 1000:.0f} ms "
              f"(target < {TARGET_S * 1000:.0f} ms) {ok}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
