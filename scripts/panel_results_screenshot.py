"""Retake the panel's screenshots in docs/report-draft.md: the report draft in the Report tab, and
prior vs current in the Compare tab with the prior shown beside the current, linked.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/panel_results_screenshot.py

A phantom pair of one seed, the current with cardiomegaly added (what `fvlm phantom --seed 7
--finding "lung nodule:right" [--finding cardiomegaly]` writes), is opened and analysed by the
real panel with the bundled demo weights; a shown napari window is needed (off-screen Qt renders
black).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from panel_screenshot import settle, wait_until

BASE, ADDED = ["lung nodule:right"], ["cardiomegaly"]


def write_pair(folder: Path, seed: int) -> list[Path]:
    """prior/ and current/ phantoms; their CT and anatomy files in that order."""
    from napari_fvlm.core.phantom import generate_phantom, write_phantom

    for name, findings in (("prior", BASE), ("current", BASE + ADDED)):
        write_phantom(generate_phantom(seed, findings=findings), folder / name)
    return [folder / name / file for name in ("prior", "current") for file in ("ct.nii.gz", "anatomy.nii.gz")]


def close_toasts(window) -> None:
    """The readers' notifications ("no label names in the file") would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in window.findChildren(NapariQtNotification):
        toast.close()


def show_tab(panel, tab) -> None:
    """Bring the panel's tab ``tab`` into view (the panel scrolls)."""
    from qtpy.QtWidgets import QScrollArea

    panel.view.tabs.setCurrentWidget(tab)
    panel.findChild(QScrollArea).ensureWidgetVisible(panel.view.tabs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", default="docs/images/panel-report-draft.png")
    parser.add_argument("--compare", default="docs/images/panel-prior-current.png")
    args = parser.parse_args()

    import napari

    from napari_fvlm.demo import PANEL, fit_window
    from napari_fvlm.widgets.viewer_layout import main_window

    with tempfile.TemporaryDirectory() as work:
        viewer = napari.Viewer(title="napari-fvlm")
        fit_window(viewer)
        prior, prior_masks, current, current_masks = [viewer.open(str(p), plugin="napari-fvlm")[0]
                                                      for p in write_pair(Path(work), args.seed)]
        _dock, panel = viewer.window.add_plugin_dock_widget("napari-fvlm", PANEL)
        window = main_window(viewer)
        window.show()
        panel.view.inputs.select(ct=current.name, labels=current_masks.name)
        panel.analyze()
        wait_until(lambda: panel.state.result is not None and not panel.runner.busy, 600)
        show_tab(panel, panel.view.report)
        close_toasts(window)
        settle()
        window.grab().save(args.report)
        print(f"report draft written to {args.report}")

        panel.view.comparison.select(prior.name, current.name, prior_masks.name, current_masks.name)
        panel.prior_current.compare()
        wait_until(lambda: panel.state.comparison is not None and not panel.runner.busy, 600)
        show_tab(panel, panel.view.comparison)
        panel.view.comparison.table.choose("heart", "cardiomegaly")
        settle(2.0)
        window.grab().save(args.compare)
        print(f"prior vs current written to {args.compare}")
        viewer.close()


if __name__ == "__main__":
    main()
