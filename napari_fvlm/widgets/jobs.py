"""What the panel's workers run: Qt-free functions from a request to a result.

They never touch widgets or layers (the panel's continuations do that on the GUI thread), so
they can be tested, and reused, without a viewer. Heavy imports (torch) happen here, lazily,
inside the worker thread, so opening the panel stays fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from ..core.errors import FvlmInputError
from ..core.volume import Volume

Progress = Callable[[float, str], None]
ANATOMY_KINDS = ("totalseg", "labels", "file")


@dataclass(frozen=True)
class AnatomySource:
    """Where the anatomy masks come from: TotalSegmentator, a Labels layer's volume, or a mask file."""

    kind: str
    labels: Volume | None = None
    path: str | None = None
    description: str = ""
    layer: str | None = None  # the Labels layer's name, when the masks came from one


@dataclass
class AnalysisRequest:
    """Everything one analysis needs, read from the widgets on the GUI thread before it starts."""

    ct: Volume
    ct_name: str
    anatomy: AnatomySource
    model_source: str  # "demo", a checkpoint folder, or a hub id
    device: str  # "auto", "cpu" or "gpu"


@dataclass
class AnalysisResult:
    """A finished analysis: the masks on the CT grid, the model, the CT's encoding and the scores."""

    request: AnalysisRequest
    labels: Volume
    analyzer: object  # core.inference.analyzer.Analyzer
    encoded: object  # core.inference.encoding.EncodedCT
    analysis: object  # core.inference.analyzer.Analysis
    model_info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """The job stopped on bad input; ``message`` says what to do."""

    message: str


@dataclass(frozen=True)
class Cancelled:
    """The user cancelled the job; nothing was produced."""


class ModelCache:
    """Loaded analyzers per (model source, device), so a second analysis skips loading the model."""

    def __init__(self) -> None:
        self._analyzers: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def get(self, source: str, device: str):
        from ..core.inference.analyzer import Analyzer
        from ..core.inference.models import load_model, pick_device

        key = (str(source), pick_device(device))
        with self._lock:
            if key not in self._analyzers:
                model, _folder = load_model(source, key[1])
                self._analyzers[key] = Analyzer(model)
            return self._analyzers[key]

    def __len__(self) -> int:
        return len(self._analyzers)


def _span(progress: Progress | None, low: float, high: float) -> Progress | None:
    """A progress callback for one stage that maps its 0..1 onto low..high of the whole job."""
    if progress is None:
        return None
    return lambda fraction, message: progress(low + (high - low) * float(fraction), message)


def anatomy_provider(source: AnatomySource, device: str, fast: bool = True):
    """The segmentation provider for an anatomy source (``fast``: TotalSegmentator's 3 mm model)."""
    from ..core.anatomy.providers import MaskFileProvider, VolumeProvider

    if source.kind == "labels":
        if source.labels is None:
            raise FvlmInputError("Choose the Labels layer that holds the anatomy masks.")
        return VolumeProvider(source.labels)
    if source.kind == "file":
        if not source.path:
            raise FvlmInputError("Choose a mask file (TotalSegmentator's segmentation) with Browse.")
        return MaskFileProvider(source.path)
    if source.kind == "totalseg":
        from ..core.anatomy.totalseg import TotalSegmentatorProvider
        return TotalSegmentatorProvider(fast=fast, device=device)
    raise FvlmInputError(f"Unknown anatomy source {source.kind!r}; choose one of {', '.join(ANATOMY_KINDS)}.")


def run_analysis(request: AnalysisRequest, models: ModelCache, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> AnalysisResult:
    """Load the model (first, so a bad model fails fast), make the masks, encode and score the CT."""
    from ..core.inference.encoding import check_cancel

    if progress is not None:
        progress(0.0, "loading the model")
    analyzer = models.get(request.model_source, request.device)
    check_cancel(cancel)
    masks_end = 0.6 if request.anatomy.kind == "totalseg" else 0.15
    provider = anatomy_provider(request.anatomy, request.device, fast=analyzer.config.totalseg_fast)
    labels = provider.segment(request.ct, _span(progress, 0.05, masks_end), cancel)
    if not labels.labels:
        raise FvlmInputError("The masks hold no TotalSegmentator anatomy; choose the segmentation of this CT.")
    encoded, analysis = analyzer.analyze(request.ct, labels, progress=_span(progress, masks_end, 1.0),
                                         cancel=cancel)
    model_info = {"name": analyzer.name, "source": request.model_source, "config": analyzer.config.to_dict()}
    return AnalysisResult(request, labels, analyzer, encoded, analysis, model_info)


def run_query(result: AnalysisResult, text: str):
    """Ground a free-text query on an analysed CT (tokens are cached: tens of milliseconds)."""
    return result.analyzer.ground(result.encoded, text)


def guarded(job: Callable, *args, **kwargs):
    """Run ``job``; bad input becomes `Refused`, a cancel becomes `Cancelled`; bugs propagate."""
    from ..core.anatomy.providers import SegmentationCancelled
    from ..core.inference.encoding import AnalysisCancelled

    try:
        return job(*args, **kwargs)
    except FvlmInputError as err:
        return Refused(str(err))
    except (AnalysisCancelled, SegmentationCancelled):
        return Cancelled()
