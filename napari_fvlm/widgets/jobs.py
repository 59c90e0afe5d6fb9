"""What the panel's workers run: Qt-free functions from a request to a result.

They never touch widgets or layers (the panel's continuations do that on the GUI thread), so
they can be tested, and reused, without a viewer. Heavy imports (torch) happen here, lazily,
inside the worker thread, so opening the panel stays fast.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..core.anatomy.catalog import labels_in
from ..core.errors import FvlmInputError
from ..core.inference.session import AnalysedCT, AnalysisSession, AnatomySource, ModelCache
from ..core.progress import Cancelled, Progress, span
from ..core.volume import Volume


@dataclass(frozen=True)
class AnatomyChoice(AnatomySource):
    """An anatomy source as the panel chose it, with the Labels layer it came from (if any)."""

    layer: str | None = None  # the Labels layer's name, when the masks came from one
    layer_state: tuple | None = None  # that layer's (array, attributes): `labels` is made from it in the worker


@dataclass
class AnalysisRequest:
    """Everything one analysis needs, read from the widgets on the GUI thread before it starts."""

    ct: Volume
    ct_name: str
    anatomy: AnatomyChoice
    model_source: str  # "demo", a checkpoint folder, or a hub id
    device: str  # "auto", "cpu" or "gpu"


@dataclass
class AnalysisResult:
    """A finished analysis (`AnalysedCT`: masks, model, encoding, scores) and the request it answers."""

    request: AnalysisRequest
    analysed: AnalysedCT
    draft: str = ""  # the report draft of its findings (core/report/draft.py), made in the worker

    @property
    def labels(self) -> Volume:
        return self.analysed.labels

    @property
    def analyzer(self):
        return self.analysed.analyzer

    @property
    def encoded(self):
        return self.analysed.encoded

    @property
    def analysis(self):
        return self.analysed.analysis


@dataclass(frozen=True)
class ShownMap:
    """A heatmap as shown: its values on a grid whose world extent is exactly the CT's, so adding
    it never widens napari's sliders. About the heatmap's spacing, at most 3 mm (nearest sample:
    values are the model's own), zero where the heatmap does not reach. Exports use the heatmap
    itself."""

    name: str
    values: np.ndarray  # (z, y, x) float32
    affine: np.ndarray  # voxel -> RAS mm, same directions as the CT's
    heatmap: object  # the core.inference.grounding.Heatmap it shows
    finding: tuple[str, str] | None = None  # (anatomy, finding) for a scored finding's map
    peak_ras: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the heatmap's peak (the one peak rule), RAS mm


CANCELLED = object()  # a job's outcome when the user cancelled it: nothing was produced


@dataclass(frozen=True)
class Refused:
    """The job stopped on bad input; ``message`` says what to do."""

    message: str


LOADING_SHARE = 0.05  # of the progress bar, approached while the model loads
HEARTBEAT_S = 0.5


def load_with_progress(models: ModelCache, request: AnalysisRequest, progress: Progress | None):
    """The request's model, saying every half second what loading is doing and for how long.

    A first load imports torch and reads the weights and text encoder (tens of seconds on a busy
    CPU); the bar creeps towards `LOADING_SHARE` so the wait is visibly alive.
    """
    if progress is None:
        return models.get(request.model_source, request.device)
    stage, stop, start = ["importing torch"], threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            elapsed = time.monotonic() - start
            progress(LOADING_SHARE * (1 - np.exp(-elapsed / 15)), f"loading the model: {stage[0]} ({elapsed:.0f} s)")

    progress(0.0, "loading the model")
    heartbeat = threading.Thread(target=beat, name="fvlm-loading-progress", daemon=True)
    heartbeat.start()
    try:
        import torch  # noqa: F401  (the longest part of a first load, named as such)

        stage[0] = "reading the weights"
        return models.get(request.model_source, request.device)
    finally:
        stop.set()
        heartbeat.join()


def run_analysis(request: AnalysisRequest, session: AnalysisSession, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> AnalysisResult:
    """Load the model (first, so a bad model fails fast), make the masks, encode and score the CT,
    and draft its report."""
    from ..core.report.draft import report_draft

    if request.anatomy.layer_state is not None and request.anatomy.labels is None:
        from .._layers import layer_volume  # naming the labels scans the whole mask: not on the GUI thread

        data, attributes = request.anatomy.layer_state
        request.anatomy = replace(request.anatomy, labels=layer_volume(data, attributes, is_labels=True),
                                  layer_state=None)
    load_with_progress(session.models, request, progress)
    analysed = session.run(request.ct, request.anatomy, request.model_source, request.device, progress=progress,
                           cancel=cancel)
    return AnalysisResult(request, analysed, report_draft(findings_table(analysed), study=request.ct_name))


def findings_table(analysed: AnalysedCT):
    """The findings table (core/report/table.py) the report draft and the comparison read."""
    from ..core.report.table import FindingsTable

    return FindingsTable.from_analysis(analysed.analysis, analysed.analyzer.config)


@dataclass
class ComparisonResult:
    """Two finished analyses of one patient, the changes of their calibrated scores
    (`core.report.compare.Change`, new first) and their linked views (`core.report.linked`)."""

    prior: AnalysisResult
    current: AnalysisResult
    changes: list
    views: object  # LinkedViews


def run_comparison(prior: AnalysisRequest, current: AnalysisRequest, session: AnalysisSession,
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> ComparisonResult:
    """Analyse the prior, then the current (a CT analysed before with the same masks and model is
    not encoded again: the session's cache), compare their calibrated findings, and read both
    masks' anatomy boxes for the linked views."""
    from ..core.report.compare import compare_tables
    from ..core.report.linked import LinkedViews

    results = []
    for name, request, (low, high) in (("prior", prior, (0.0, 0.5)), ("current", current, (0.5, 1.0))):
        stage = span(progress, low, high)
        said = None if stage is None else (lambda f, m, stage=stage, name=name: stage(f, f"{name}: {m}"))
        results.append(run_analysis(request, session, said, cancel))
    changes = compare_tables(*(findings_table(r.analysed) for r in results))
    views = LinkedViews.of(results[0].labels, results[1].labels, results[1].analyzer.config.anatomy_group_set)
    return ComparisonResult(*results, changes, views)


MAX_SHOWN_SPACING_MM = 3.0  # coarser maps (40-48 mm tokens) are shown on a 3 mm grid: the masks cut them finely


def shown_map(heatmap, ct: Volume, name: str | None = None, labels: Volume | None = None,
              group_set: str | None = None) -> ShownMap:
    """``heatmap`` on a grid covering exactly the CT's field of view, at about its own spacing
    (at most ``MAX_SHOWN_SPACING_MM``, never finer than the CT).
    With the CT's ``labels`` (TotalSegmentator ids) it is also confined to the map's anatomies as
    the masks draw them at the CT's resolution: a shown voxel keeps its value only if every CT
    voxel whose centre it holds lies in them, so no shown value covers a voxel outside them."""
    from ..core.geometry import spacing_xyz, voxel_to_world
    from ..core.resample import grid_affine, resample

    shape_zyx = np.asarray(ct.array.shape, float)
    ct_spacing = spacing_xyz(ct.affine)[::-1]
    extent_zyx = ct_spacing * shape_zyx
    spacing = np.maximum(np.minimum(spacing_xyz(heatmap.affine)[::-1], MAX_SHOWN_SPACING_MM), ct_spacing)
    _affine, counts = grid_affine(ct.affine, ct.array.shape, spacing)
    affine, shape = grid_affine(ct.affine, ct.array.shape, extent_zyx / np.asarray(counts, float))
    values = resample(np.asarray(heatmap.values, np.float32), heatmap.affine, affine, shape, order=0,
                      cval=0.0, output_dtype=np.float32)
    if labels is not None and group_set is not None and heatmap.anatomies:
        from ..core.anatomy.catalog import group_set as groups_of

        ids = sorted({c for g in groups_of(group_set) if g.name in heatmap.anatomies for c in g.class_ids})
        if labels.array.shape == ct.array.shape and np.allclose(labels.affine, ct.affine, atol=1e-4):
            inside = _inside_on_grid(labels.array, ids, shape)
        else:  # masks on another grid: their nearest label at each shown voxel
            inside = labels_in(resample(np.asarray(labels.array), labels.affine, affine, shape, order=0, cval=0), ids)
        values[~inside] = 0.0
    peak = tuple(float(v) for v in voxel_to_world(heatmap.affine, np.asarray(heatmap.peak(), float)))
    return ShownMap(name or heatmap.name, values, affine, heatmap, peak_ras=peak)


_INSIDE_CACHE: dict = {}  # (id of the labels array, ids, shape) -> (weak ref to it, mask): maps of one anatomy reuse it
_INSIDE_CACHE_SIZE = 16
_INSIDE_LOCK = threading.Lock()


def _inside_on_grid(labels: np.ndarray, ids, shape) -> np.ndarray:
    """`_every_voxel_inside` of the voxels labelled ``ids``, cached: it reads every CT voxel
    (about a second for 512 x 512 x 300), the same for every map of those anatomies."""
    key = (id(labels), tuple(ids), tuple(shape))
    with _INSIDE_LOCK:
        hit = _INSIDE_CACHE.get(key)
    if hit is not None and hit[0]() is labels:
        return hit[1]
    inside = _every_voxel_inside(labels_in(labels, ids), shape)
    with _INSIDE_LOCK:
        if len(_INSIDE_CACHE) >= _INSIDE_CACHE_SIZE:
            _INSIDE_CACHE.pop(next(iter(_INSIDE_CACHE)))
        _INSIDE_CACHE[key] = (weakref.ref(labels), inside)
    return inside


def _every_voxel_inside(inside: np.ndarray, shape) -> np.ndarray:
    """Per voxel of a grid spanning the same extent as ``inside``'s (same directions): whether every
    fine voxel whose centre lies in it is inside; where the grid is finer, the nearest fine voxel."""
    out = inside.astype(np.uint8)
    for axis, (fine, coarse) in enumerate(zip(inside.shape, shape)):
        if coarse <= fine:
            owner = np.floor((np.arange(fine) + 0.5) * coarse / fine).astype(int)
            out = np.minimum.reduceat(out, np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]), axis=axis)
        else:
            out = np.take(out, np.floor((np.arange(coarse) + 0.5) * fine / coarse).astype(int), axis=axis)
    return out.astype(bool)


def _shown(result: AnalysisResult, heatmap, name: str | None = None) -> ShownMap:
    return shown_map(heatmap, result.request.ct, name, result.labels, result.analyzer.config.anatomy_group_set)


def run_finding(result: AnalysisResult, anatomy: str, finding: str) -> ShownMap:
    """One scored finding's heatmap, ready to show (a dot product and a small resample)."""
    heatmap = result.analyzer.finding_heatmap(result.encoded, anatomy, finding)
    return replace(_shown(result, heatmap), finding=(anatomy, finding))


def run_query(result: AnalysisResult, text: str):
    """Ground a free-text query on an analysed CT (tokens are cached: tens of milliseconds);
    returns the grounding and its heatmap ready to show."""
    grounding = result.analyzer.ground(result.encoded, text)
    return grounding, _shown(result, grounding.heatmap, grounding.text)


def guarded(job: Callable, *args, **kwargs):
    """Run ``job``; bad input becomes `Refused`, a cancel `CANCELLED`; failures and bugs propagate.
    (A worker treats a returned exception as raised: the cancel is a plain marker.)"""
    try:
        return job(*args, **kwargs)
    except FvlmInputError as err:
        return Refused(str(err))
    except Cancelled:
        return CANCELLED
