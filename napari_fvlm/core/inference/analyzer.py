"""`Analyzer`: one model, cached CT encodings and text embeddings, and the analysis they answer.

The same object serves the napari panel, `fvlm analyze` and evaluation in training: encode a CT
once per (CT, model), then scores, finding heatmaps and queries cost a text forward at most.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..anatomy.align import align_labels
from ..progress import Progress, check_cancel
from ..volume import Volume
from .calibration import CalibratedScore, Calibration, calibrated_scores
from .encoding import EncodedCT, encode_ct
from .grounding import Grounding, Heatmap, finding_heatmap, ground_query
from .preprocess import prepare_for_model
from .scoring import zero_shot_scores

MAX_CACHED_CTS = 4
MAX_CACHED_TEXTS = 4096


@dataclass
class Analysis:
    """Scores for every anatomy x finding, and the queries grounded so far.

    ``scores`` are the raw zero-shot probabilities; ``calibrated`` holds, for the scores the
    model's calibration covers, the calibrated probability, threshold and flag; ``calibration``
    is None for an uncalibrated model."""

    scores: dict[str, dict[str, float]]
    absent: list[str]
    queries: list[Grounding] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)
    calibrated: dict[str, dict[str, CalibratedScore]] = field(default_factory=dict)
    calibration: Calibration | None = None


class Analyzer:
    """A loaded model with caches; thread-safe for one worker at a time (the GUI runs one).

    ``calibration`` is the model folder's (`read_calibration`), None when it has none."""

    def __init__(self, model, finding_set: str = "all", name: str | None = None,
                 calibration: Calibration | None = None, protocol: str | None = None):
        self.model = model
        self.finding_set = finding_set
        self.name = name or model.config.name
        self.calibration = calibration
        self.protocol = protocol or model.config.inference_protocol  # see ModelConfig.inference_protocol
        self._encoded: OrderedDict[object, EncodedCT] = OrderedDict()
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_encoder = None  # made at the first text: see TextEncoder.inference_copy
        self._lock = threading.Lock()

    @property
    def config(self):
        return self.model.config

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(T, D) embeddings, computed once per distinct text. The model is not trained while an
        Analyzer answers with it: texts go through the text encoder's inference copy."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if missing:
            if self._text_encoder is None:
                self.model.encode_text([])  # a clear error when the model has no text encoder
                # the reference protocol keeps float32 text: a bfloat16 copy moves its scores
                reference = self.protocol == "reference"
                self._text_encoder = self.model.text if reference else self.model.text.inference_copy()
            with torch.inference_mode():
                new = self._text_encoder(missing).float()
            for text, row in zip(missing, new):
                self._texts[text] = row
            while len(self._texts) > MAX_CACHED_TEXTS:
                self._texts.popitem(last=False)
        return torch.stack([self._texts[t] for t in texts])

    def encode(self, ct: Volume, labels: Volume, key=None, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> EncodedCT:
        """The CT's encoding, from the cache when ``key`` was encoded before."""
        if key is not None and key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        start = time.perf_counter()
        if progress is not None:
            progress(0.02, "preparing the CT")
        labels = align_labels(ct, labels)
        if self.protocol == "reference":
            from .reference_protocol import encode_reference

            with self._lock:
                encoded = encode_reference(self.model, ct, labels, progress, cancel)
        else:
            prepared = prepare_for_model(ct, labels, self.config)
            check_cancel(cancel)
            prepare_s = time.perf_counter() - start
            with self._lock:
                encoded = encode_ct(self.model, prepared, progress, cancel)
            encoded.timing_s["prepare"] = prepare_s
        if key is not None:
            self._encoded[key] = encoded
            while len(self._encoded) > MAX_CACHED_CTS:
                self._encoded.popitem(last=False)
        return encoded

    def scores(self, encoded: EncodedCT) -> dict[str, dict[str, float]]:
        """Raw zero-shot probabilities (what calibration is fitted on)."""
        return zero_shot_scores(self.model, encoded, self.text_embeddings, self.finding_set)

    def calibrated(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, CalibratedScore]]:
        """The calibrated values of raw ``scores`` ({} for an uncalibrated model)."""
        return calibrated_scores(scores, self.calibration)

    def ground(self, encoded: EncodedCT, query: str) -> Grounding:
        return ground_query(self.model, encoded, query, self.text_embeddings, self.config.anatomy_group_set,
                            self.calibration)

    def finding_heatmap(self, encoded: EncodedCT, anatomy: str, finding: str) -> Heatmap:
        return finding_heatmap(self.model, encoded, anatomy, finding, self.text_embeddings, self.calibration)

    def analyze(self, ct: Volume, labels: Volume, queries=(), key=None, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> tuple[EncodedCT, Analysis]:
        """Encode (or reuse), score every anatomy x finding, ground each query. The timings of a
        reused encoding are not repeated: they belong to the analysis that made it."""
        start = time.perf_counter()
        reused = key is not None and key in self._encoded
        encoded = self.encode(ct, labels, key, progress, cancel)
        check_cancel(cancel)
        if progress is not None:
            progress(0.92, "scoring findings")
        scores = self.scores(encoded)
        grounded = []
        for query in queries:
            check_cancel(cancel)
            grounded.append(self.ground(encoded, query))
        timing = {**({} if reused else encoded.timing_s), "total": time.perf_counter() - start}
        if progress is not None:
            progress(1.0, "done")
        return encoded, Analysis(scores, list(encoded.absent), grounded, timing, self.calibrated(scores),
                                 self.calibration)
