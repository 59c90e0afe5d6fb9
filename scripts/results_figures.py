"""Pictures for docs/dicom-results.md and docs/report-draft.md, made from real outputs.

A phantom pair (one seed, cardiomegaly added to the second) is written as DICOM series, analysed by
`fvlm analyze --dicom-out` with the demo weights; the DICOM SEG is read back with highdicom and drawn
over the source slices; the report draft and the prior/current table come from `fvlm report` and
`fvlm compare`. Run from the repository root: python scripts/results_figures.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pydicom

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from napari_fvlm.analyze import run_analyze  # noqa: E402
from napari_fvlm.core.io.dicom import read_dicom_series  # noqa: E402
from napari_fvlm.core.io.nifti import write_nifti  # noqa: E402
from napari_fvlm.core.phantom import generate_phantom  # noqa: E402
from napari_fvlm.core.report.compare import corresponding_point  # noqa: E402
from napari_fvlm.reporting import run_compare, run_report  # noqa: E402

from dicom_fixtures import SeriesGeometry, write_phantom_series  # noqa: E402

SEED, BASE, ADDED = 7, ["lung nodule:right"], ["cardiomegaly"]


def analyse_pair(work: Path) -> dict:
    """{name: (folder, ct paths in slice order, phantom)} for prior and current, analysed."""
    cases = {}
    for name, findings in (("prior", BASE), ("current", BASE + ADDED)):
        phantom = generate_phantom(SEED, findings=findings)
        folder = work / name
        geometry = SeriesGeometry(pixel_spacing=(1.5, 1.5), slice_offsets=[2.5 * k for k in range(phantom.ct.shape[0])])
        ct_paths, _ = write_phantom_series(folder, phantom, geometry)
        write_nifti(read_dicom_series(folder / "labels"), folder / "anatomy.nii.gz")
        run_analyze(str(folder / "ct"), str(folder / "out"), masks=str(folder / "anatomy.nii.gz"), model="demo",
                    device="cpu", dicom_out=str(folder / "dicom"))
        cases[name] = (folder, ct_paths, phantom)
    return cases


def seg_frames(seg_path: Path, ct_paths) -> tuple[np.ndarray, list[str]]:
    """(frames (k, rows, cols, segments) in the order of ``ct_paths``, segment labels), via highdicom."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_paths]
    labels = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=False), labels


def source_slice(path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def show_ct(axis, hu, title):
    axis.imshow(np.clip(hu, -1000, 400), cmap="gray", vmin=-1000, vmax=400)
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def seg_figure(case, out: Path) -> None:
    folder, ct_paths, phantom = case
    anatomy, names = seg_frames(folder / "dicom" / "anatomy_seg.dcm", ct_paths)
    probability, maps = seg_frames(folder / "dicom" / "finding_probabilities_seg.dcm", ct_paths)
    heart = names.index("heart")
    k = int(np.argmax(anatomy[..., heart].sum(axis=(1, 2))))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    hu = source_slice(ct_paths[k])
    show_ct(axes[0], hu, f"source slice {k} (file {ct_paths[k].name})")
    show_ct(axes[1], hu, "anatomy SEG (BINARY) read back by highdicom")
    colours = plt.cm.tab20(np.linspace(0, 1, len(names)))
    for s in range(len(names)):
        if anatomy[k, ..., s].any():
            axes[1].contour(anatomy[k, ..., s], levels=[0.5], colors=[colours[s]], linewidths=0.8)
    card = next(i for i, m in enumerate(maps) if m.startswith("cardiomegaly"))
    show_ct(axes[2], hu, f"FRACTIONAL SEG: {maps[card]}")
    shown = np.ma.masked_less_equal(probability[k, ..., card], 0.0)
    image = axes[2].imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.75)
    fig.colorbar(image, ax=axes[2], fraction=0.046, label="probability (fixed 0-1 scale)")
    fig.suptitle("DICOM SEG of an fVLM analysis over its source series (research use only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def text_panel(axis, text: str, size: float = 7.5) -> None:
    axis.axis("off")
    axis.text(0.0, 1.0, text, va="top", ha="left", family="monospace", fontsize=size, wrap=True)


def report_figure(case, out: Path) -> str:
    folder, ct_paths, _ = case
    draft = run_report(folder / "out", log=lambda _line: None)
    fig, axis = plt.subplots(figsize=(11, 1.9))
    wrapped = "\n".join(line if len(line) < 150 else line[:147] + "..." for line in draft.splitlines())
    text_panel(axis, wrapped, 8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return draft


def compare_figure(cases, out: Path) -> str:
    table = run_compare(cases["prior"][0] / "out", cases["current"][0] / "out", log=lambda _line: None)
    prior, current = (read_dicom_series(cases[n][0] / "labels") for n in ("prior", "current"))
    cts = [read_dicom_series(cases[n][0] / "ct") for n in ("prior", "current")]
    heart_id = 51
    centre = np.argwhere(prior.array == heart_id).mean(axis=0)
    linked, anatomy = corresponding_point(prior.to_world(centre), prior, current, "fine")
    points = [centre, current.to_voxel(linked)]
    fig = plt.figure(figsize=(11, 6.0))
    for i, (ct, point, name) in enumerate(zip(cts, points, ("prior", "current (cardiomegaly added)"))):
        axis = fig.add_subplot(2, 2, i + 1)
        show_ct(axis, ct.array[int(round(point[0]))], f"{name}: axial slice through the linked point ({anatomy})")
        axis.plot(point[2], point[1], "c+", markersize=14, markeredgewidth=2)
    text_panel(fig.add_subplot(2, 1, 2), "\n".join(table.splitlines()[:14]), 8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        cases = analyse_pair(Path(work))
        seg_figure(cases["current"], out / "dicom-seg-overlay.png")
        print(report_figure(cases["current"], out / "report-draft.png"))
        print(compare_figure(cases, out / "prior-current.png"))


if __name__ == "__main__":
    main()
