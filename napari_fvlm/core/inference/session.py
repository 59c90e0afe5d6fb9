"""One analysis session for every front end: read a CT, choose its anatomy masks, load the model
once, analyse (each CT encoded once per model), and export the findings folder.

`fvlm analyze` and the napari panel both call this module and never each other, so the same CT,
masks and model give the same findings.json, findings.csv and heatmaps from either.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import FvlmInputError
from ..progress import Progress, check_cancel, span
from ..volume import Volume

ANATOMY_KINDS = ("totalseg", "labels", "file")
TOTALSEGMENTATOR = "TotalSegmentator"
FINDING_HEATMAP_THRESHOLD = 0.5  # raw probability that flags a finding of an uncalibrated model
MAX_CACHED_MASKS = 2


@dataclass(frozen=True)
class AnatomySource:
    """Where the anatomy masks come from: TotalSegmentator, a label volume, or a mask file/folder."""

    kind: str
    labels: Volume | None = None
    path: str | None = None
    description: str = ""

    @classmethod
    def from_masks(cls, masks: str | None) -> AnatomySource:
        """A mask file or folder, or TotalSegmentator when none is given (`fvlm analyze --masks`)."""
        return cls("file", path=str(masks), description=str(masks)) if masks else cls("totalseg")

    @property
    def described(self) -> str:
        """What findings.json says the masks came from."""
        return self.description or (TOTALSEGMENTATOR if self.kind == "totalseg" else str(self.path or self.kind))


@dataclass
class AnalysedCT:
    """A finished analysis: the CT, its masks on the CT grid, the model, the encoding and the scores."""

    ct: Volume
    labels: Volume
    anatomy: AnatomySource
    analyzer: object  # analyzer.Analyzer
    encoded: object  # encoding.EncodedCT
    analysis: object  # analyzer.Analysis
    model_info: dict

    def source_paths(self) -> list[str]:
        """Files the analysis read (the CT, the masks): exports must never replace them."""
        volumes = (self.ct, self.anatomy.labels, self.labels)
        paths = [self.anatomy.path, *(v.source.path for v in volumes if v is not None and v.source is not None)]
        return [p for p in paths if p]


def read_ct(path, warn: Callable[[str], None] | None = None) -> Volume:
    """The CT at ``path`` (NIfTI file, DICOM folder or file); a label volume is refused, and an
    image that does not look like CT in HU is read with a warning through ``warn``."""
    from ..io.read import read_volume

    ct = read_volume(path)
    if ct.is_labels:
        raise FvlmInputError(f"{path} holds labels, not a CT image; pass it as the masks.")
    not_ct = ct.source.details.get("not_ct") if ct.source is not None else None
    if not_ct and warn is not None:
        warn(f"{path} does not look like a CT in Hounsfield units: {not_ct}; the scores assume a CT.")
    return ct


def anatomy_provider(source: AnatomySource, device: str, fast: bool = True):
    """The segmentation provider for an anatomy source (``fast``: TotalSegmentator's 3 mm model)."""
    from ..anatomy.providers import MaskFileProvider, VolumeProvider

    if source.kind == "labels":
        if source.labels is None:
            raise FvlmInputError("Choose the Labels layer that holds the anatomy masks.")
        return VolumeProvider(source.labels)
    if source.kind == "file":
        if not source.path:
            raise FvlmInputError("Choose a mask file (TotalSegmentator's segmentation) with Browse.")
        return MaskFileProvider(source.path)
    if source.kind == "totalseg":
        from ..anatomy.totalseg import TotalSegmentatorProvider
        return TotalSegmentatorProvider(fast=fast, device=device)
    raise FvlmInputError(f"Unknown anatomy source {source.kind!r}; choose one of {', '.join(ANATOMY_KINDS)}.")


def model_totalseg_fast(source) -> bool:
    """The TotalSegmentator mode a model was trained with, read from its config (no torch)."""
    from ..model.config import read_checkpoint_config
    from .models import resolve_model_source

    return read_checkpoint_config(resolve_model_source(source))[0].totalseg_fast


def model_info(analyzer, source) -> dict:
    """The findings.json "model" block."""
    return {"name": analyzer.name, "source": str(source or "demo"), "config": analyzer.config.to_dict(),
            "protocol": analyzer.protocol}


def fingerprint(volume: Volume) -> str:
    """A digest of a volume's voxels and geometry: the key of its cached encoding and masks."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(volume.array)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.asarray(volume.affine, np.float64).tobytes())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class ModelCache:
    """Loaded analyzers per (model source, device, protocol): a second analysis skips loading."""

    def __init__(self) -> None:
        self._analyzers: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def get(self, source, device: str = "auto", protocol: str | None = None):
        from .models import load_analyzer, pick_device

        key = (str(source or "demo"), pick_device(device), protocol)
        with self._lock:
            if key not in self._analyzers:
                self._analyzers[key] = load_analyzer(source, key[1], protocol=protocol)
            return self._analyzers[key]

    def __len__(self) -> int:
        return len(self._analyzers)


class AnalysisSession:
    """The models loaded so far and TotalSegmentator's recent masks, for any number of analyses."""

    def __init__(self) -> None:
        self.models = ModelCache()
        self._masks: OrderedDict[tuple, Volume] = OrderedDict()

    def masks(self, ct: Volume, anatomy: AnatomySource, device: str, fast: bool = True,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> Volume:
        """Anatomy labels on the CT grid; TotalSegmentator runs once per CT and mode."""
        key = (fingerprint(ct), fast, device) if anatomy.kind == "totalseg" else None
        if key in self._masks:
            return self._masks[key]
        labels = anatomy_provider(anatomy, device, fast).segment(ct, progress, cancel)
        if not labels.labels:
            raise FvlmInputError("The masks hold no TotalSegmentator anatomy; choose the segmentation of this CT.")
        if key is not None:
            self._masks[key] = labels
            while len(self._masks) > MAX_CACHED_MASKS:
                self._masks.popitem(last=False)
        return labels

    def analyse(self, ct: Volume, labels: Volume, anatomy: AnatomySource, analyzer, source, queries=(),
                progress: Progress | None = None, cancel: threading.Event | None = None) -> AnalysedCT:
        """Score every anatomy x finding and ground ``queries``; the same CT and masks with the same
        model reuse the first encoding."""
        key = (fingerprint(ct), fingerprint(labels))
        encoded, analysis = analyzer.analyze(ct, labels, queries, key=key, progress=progress, cancel=cancel)
        return AnalysedCT(ct, labels, anatomy, analyzer, encoded, analysis, model_info(analyzer, source))

    def run(self, ct: Volume, anatomy: AnatomySource, source, device: str = "auto", queries=(),
            progress: Progress | None = None, cancel: threading.Event | None = None) -> AnalysedCT:
        """Load the model (first, so a bad model fails fast), make the masks, analyse."""
        analyzer = self.models.get(source, device)
        check_cancel(cancel)
        masks_end = 0.6 if anatomy.kind == "totalseg" else 0.15
        labels = self.masks(ct, anatomy, device, analyzer.config.totalseg_fast, span(progress, 0.05, masks_end),
                            cancel)
        return self.analyse(ct, labels, anatomy, analyzer, source, queries, span(progress, masks_end, 1.0), cancel)


def heatmap_info(analysis, anatomy: str, finding: str) -> dict:
    """What findings.json says about a finding's heatmap: raw and (when calibrated) calibrated values."""
    info = {"finding": finding, "anatomy": anatomy, "probability": analysis.scores[anatomy][finding]}
    scored = analysis.calibrated.get(anatomy, {}).get(finding)
    if scored is not None:
        info.update(calibrated_probability=round(scored.probability, 6), above_threshold=scored.above)
    return info


def flagged_findings(analysis, threshold: float = FINDING_HEATMAP_THRESHOLD) -> dict[str, str]:
    """{finding: the anatomy where it is most likely} for each flagged finding. Flagged: above its
    calibrated threshold; for an uncalibrated model, a raw probability of at least ``threshold``."""
    best: dict[str, tuple[str, float]] = {}
    for anatomy, findings in analysis.scores.items():
        for finding, raw in findings.items():
            if analysis.calibration is not None:
                scored = analysis.calibrated.get(anatomy, {}).get(finding)
                flagged, strength = (scored.above, scored.probability) if scored else (False, 0.0)
            else:
                flagged, strength = raw >= threshold, raw
            if flagged and strength > best.get(finding, ("", -1.0))[1]:
                best[finding] = (anatomy, strength)
    return {finding: anatomy for finding, (anatomy, _strength) in sorted(best.items())}


def export_maps(analysed: AnalysedCT, analysis, shown: Iterable[tuple[str, str]] = ()) -> dict:
    """The heatmaps an export writes: each query's, each flagged finding's (in its likeliest
    anatomy), and the (anatomy, finding) maps in ``shown`` that those do not already cover."""
    analyzer, encoded = analysed.analyzer, analysed.encoded
    maps = {f"query:{i}": (g.heatmap, {"query": g.text}) for i, g in enumerate(analysis.queries)}
    flagged = [(anatomy, finding) for finding, anatomy in flagged_findings(analysis).items()]
    extra = [(anatomy, finding) for anatomy, finding in dict.fromkeys(shown)
             if (anatomy, finding) not in flagged and finding in analysis.scores.get(anatomy, {})]
    for anatomy, finding in flagged + extra:
        key = f"finding:{finding}" if (anatomy, finding) in flagged else f"finding:{finding}:{anatomy}"
        maps[key] = (analyzer.finding_heatmap(encoded, anatomy, finding), heatmap_info(analysis, anatomy, finding))
    return maps


def check_export_folder(out, analysed: AnalysedCT) -> Path:
    """The resolved output folder, refused before any work when it is or holds a file the analysis
    read, or holds files that are not an earlier export."""
    from .export import check_out_dir

    out = refuse_sources(out, analysed.source_paths())
    check_out_dir(out)
    return out


def refuse_sources(target, sources: Iterable[str | None]) -> Path:
    """``target`` resolved; refused when it is, or (for a folder) holds, one of ``sources``."""
    target = Path(target).expanduser().resolve()
    for source in sources:
        if not source:
            continue
        source = Path(source).expanduser().resolve()
        if target == source:
            raise FvlmInputError(f"{target.name} is the file the analysis was read from; "
                                 "choose another name so the original stays untouched.")
        if target in source.parents:
            raise FvlmInputError(f"{target.name} holds {source.name}, which the analysis was read from; "
                                 "choose another folder so the original stays untouched.")
    return target


def export_findings(out, analysed: AnalysedCT, queries=None, shown: Iterable[tuple[str, str]] = (),
                    timing_s: dict | None = None) -> Path:
    """findings.json, findings.csv and heatmaps/*.nii.gz (the CT's own grid and affine) in ``out``,
    published together. ``queries`` (groundings) replace the analysis's own when given; ``timing_s``
    adds to its timings."""
    from .export import write_analysis

    out = check_export_folder(out, analysed)
    analysis = analysed.analysis
    if queries is not None or timing_s:
        analysis = replace(analysis, queries=list(analysis.queries if queries is None else queries),
                           timing_s={**analysis.timing_s, **(timing_s or {})})
    maps = export_maps(analysed, analysis, shown)
    return write_analysis(out, analysed.ct, analysis, maps, analysed.model_info,
                          {"masks": {"source": analysed.anatomy.described}})


def check_dicom_folder(out, analysed: AnalysedCT) -> Path:
    """The resolved DICOM output folder, refused before any work when the CT did not come from a
    DICOM series, or the folder is or holds a source file or holds files of another kind."""
    from ..dicom_export.series import require_dicom_ct
    from ..dicom_export.write import DICOM_OUTPUTS
    from .export import check_out_dir

    require_dicom_ct(analysed.ct)
    out = refuse_sources(out, analysed.source_paths())
    check_out_dir(out, DICOM_OUTPUTS)
    return out


def export_dicom(out, analysed: AnalysedCT, shown: Iterable[tuple[str, str]] = ()) -> list[Path]:
    """DICOM SEG and SR results referencing the CT's source series in ``out`` (docs/dicom-results.md),
    from the maps a findings export writes (`export_maps`); returns the written paths."""
    from ..dicom_export.write import write_analysis_dicom

    out = check_dicom_folder(out, analysed)
    maps = export_maps(analysed, analysed.analysis, shown)
    return write_analysis_dicom(out, analysed.ct, analysed.labels, analysed.analysis, analysed.analyzer.config,
                                maps, FINDING_HEATMAP_THRESHOLD)
