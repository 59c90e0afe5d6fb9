"""A model's calibration: per-finding thresholds and Platt scaling, kept beside its weights.

``calibration.json`` in a model folder (written by ``python -m training calibrate``) holds, per
anatomy x finding where the validation data allowed and per finding otherwise, a Platt map
``p = sigmoid(slope * logit(raw) + intercept)`` (slope >= 0: monotone) and the threshold of the
ROC point nearest (0, 1) on the raw scale. A map whose fitting rows the model did not separate
(validation AUC below the file's ``min_auc``) never flags anything: its threshold would flag
noise. Scores and table flags go through these maps.

Heatmaps have their own maps (``maps`` in the file), fitted the same way on each validation
map's **peak** (its highest raw value in the anatomy): a single place's probability is not on
its anatomy's score scale (the anatomy pools many places), so the score's threshold would light
up most maps of absent findings. A map value is then "the probability that the finding is
present, were this place the map's peak", and a map's threshold is its ROC corner raised, when
needed, until at most ``MAP_FALSE_POSITIVE`` of the validation maps of absent findings reach it:
a hot spot is rare where nothing is. A folder without the file is uncalibrated
(`read_calibration` returns None). numpy only: no torch, no Qt.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FvlmInputError
from ..io.files import write_atomic
from ..model.config import CHECKPOINT_WEIGHTS_FILE

CALIBRATION_FILE = "calibration.json"
FORMAT = "napari-fvlm-calibration"
VERSION = 1
EPSILON = 1e-6  # raw probabilities are clipped to [EPSILON, 1 - EPSILON] before the logit
LOGIT_LIMIT = math.log((1 - EPSILON) / EPSILON)
FINGERPRINT_SAMPLES, FINGERPRINT_BLOCK = 16, 1 << 16
MAP_FALSE_POSITIVE = 0.05  # at most this share of validation maps of absent findings reach a map's threshold


def raw_logits(raw) -> np.ndarray:
    """logit of raw probabilities (any shape), clipped so 0 and 1 stay finite."""
    p = np.clip(np.asarray(raw, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PlattMap:
    """One fitted calibration: Platt scaling on the raw logit, and the ROC-corner threshold."""

    slope: float
    intercept: float
    threshold: float  # raw probability at the ROC point nearest (0, 1) on the fitting data
    positives: int
    negatives: int
    auc: float | None = None  # ROC AUC of the raw scores on the fitting rows
    level: str = "finding"  # "anatomy", "finding" or "overall": the rows it was fitted on
    separates: bool = True  # auc reached the calibration's min_auc: flags mean something

    def from_logits(self, logits) -> np.ndarray:
        """Calibrated probabilities from raw logits (the zero-shot logit difference), any shape."""
        z = self.slope * np.clip(np.asarray(logits, dtype=np.float64), -LOGIT_LIMIT, LOGIT_LIMIT) + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow

    def __call__(self, raw) -> np.ndarray:
        """Calibrated probabilities from raw probabilities, any shape."""
        return self.from_logits(raw_logits(raw))

    @property
    def calibrated_threshold(self) -> float:
        """The threshold on the calibrated scale (the same rows lie above it)."""
        return float(self(self.threshold))

    def above(self, raw) -> np.ndarray:
        """Whether raw probabilities reach the threshold (decided on the raw scale: exact);
        all False for a finding the model does not separate."""
        raw = np.asarray(raw, dtype=np.float64)
        return raw >= self.threshold if self.separates else np.zeros(raw.shape, bool)

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "threshold": self.threshold,
                "positives": self.positives, "negatives": self.negatives, "auc": self.auc}

    @classmethod
    def from_dict(cls, data, level: str, where: str, min_auc: float = 0.0) -> PlattMap:
        if not isinstance(data, dict):
            raise FvlmInputError(f"{where} is not an object")
        missing = [k for k in ("slope", "intercept", "threshold", "positives", "negatives") if k not in data]
        if missing:
            raise FvlmInputError(f"{where} lacks {', '.join(missing)}")
        numbers = [data[k] for k in ("slope", "intercept", "threshold")]
        if not all(_is_number(v) for v in numbers):
            raise FvlmInputError(f"{where}: slope, intercept and threshold must be finite numbers")
        slope, intercept, threshold = (float(v) for v in numbers)
        counts = [data[k] for k in ("positives", "negatives")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise FvlmInputError(f"{where}: positives and negatives must be counts")
        if slope < 0 or not 0.0 <= threshold <= 1.0:
            raise FvlmInputError(f"{where}: slope must be >= 0 and threshold in [0, 1]")
        auc = data.get("auc")
        if auc is not None and not (_is_number(auc) and 0.0 <= auc <= 1.0):
            raise FvlmInputError(f"{where}: auc must be null or a number in [0, 1]")
        separates = auc is None or auc >= min_auc
        return cls(slope, intercept, threshold, int(counts[0]), int(counts[1]),
                   None if auc is None else float(auc), level, separates)



@dataclass(frozen=True)
class CalibratedScore:
    """One anatomy x finding score as shown: raw and calibrated probability, threshold, flag."""

    raw: float
    probability: float
    threshold: float  # on the calibrated scale
    raw_threshold: float
    above: bool
    level: str
    separates: bool = True  # False: the model did not separate this finding on validation

    def to_dict(self) -> dict:
        return {"probability": round(self.probability, 6), "threshold": round(self.threshold, 6),
                "raw_threshold": round(self.raw_threshold, 6), "above_threshold": self.above,
                "separates": self.separates, "fitted_on": self.level}


@dataclass(frozen=True)
class Calibration:
    """The calibration of one model: maps per (anatomy, finding), per finding, and pooled."""

    pairs: dict[tuple[str, str], PlattMap]
    findings: dict[str, PlattMap]
    overall: PlattMap | None = None
    min_auc: float = 0.0  # maps fitted on rows with a lower AUC flag nothing
    model: str = ""
    weights_fingerprint: str | None = None
    fitted_on: dict = field(default_factory=dict)
    maps: Calibration | None = None  # the heatmaps' own maps, fitted on validation map peaks

    def for_maps(self) -> Calibration:
        """The calibration heatmaps use: their own when fitted, else the scores' (older files)."""
        return self.maps or self

    def lookup(self, anatomy: str, finding: str | None) -> PlattMap | None:
        """The map of (anatomy, finding), else of the finding; ``finding=None`` (a free-text
        query) gets the map pooled over every finding. None: not calibrated."""
        if finding is None:
            return self.overall
        return self.pairs.get((anatomy, finding)) or self.findings.get(finding)

    def calibrate(self, anatomy: str, finding: str | None, raw) -> np.ndarray | None:
        """Calibrated probabilities (same shape) for raw ones of (anatomy, finding); None when
        that finding is not calibrated. Heatmaps use this, so they match the table."""
        chosen = self.lookup(anatomy, finding)
        return None if chosen is None else chosen(raw)

    def threshold(self, anatomy: str, finding: str | None) -> float | None:
        """The finding's threshold on the calibrated scale; None when not calibrated."""
        chosen = self.lookup(anatomy, finding)
        return None if chosen is None else chosen.calibrated_threshold

    def above(self, anatomy: str, finding: str | None, raw) -> np.ndarray | None:
        """Whether raw probabilities (any shape) are above the finding's threshold; all False
        where the model does not separate the finding; None when not calibrated."""
        chosen = self.lookup(anatomy, finding)
        return None if chosen is None else chosen.above(raw)

    def score(self, anatomy: str, finding: str, raw: float) -> CalibratedScore | None:
        chosen = self.lookup(anatomy, finding)
        if chosen is None:
            return None
        return CalibratedScore(float(raw), float(chosen(raw)), chosen.calibrated_threshold, chosen.threshold,
                               bool(chosen.above(raw)), chosen.level, chosen.separates)

    def to_dict(self) -> dict:
        data = {
            "format": FORMAT, "version": VERSION, "method": "platt", "threshold_rule": "roc-corner",
            "min_auc": self.min_auc, "model": self.model, "weights_fingerprint": self.weights_fingerprint,
            "fitted_on": self.fitted_on, **self._tables(),
        }
        if self.maps is not None:
            data["maps"] = {"fitted_on": "validation map peaks", "max_false_positive": MAP_FALSE_POSITIVE,
                            **self.maps._tables()}
        return data

    def _tables(self) -> dict:
        return {"findings": {f: m.to_dict() for f, m in sorted(self.findings.items())},
                "pairs": {f"{a}/{f}": m.to_dict() for (a, f), m in sorted(self.pairs.items())},
                "overall": self.overall.to_dict() if self.overall else None}

    @classmethod
    def from_dict(cls, data) -> Calibration:
        """Validated; FvlmInputError (one line, without the file name) for anything malformed."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FvlmInputError(f"not a calibration file (its \"format\" is not \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise FvlmInputError(f"calibration version {data.get('version')!r} is not the version this "
                                 f"napari-fvlm reads ({VERSION}); fit it again with `python -m training calibrate`")
        if data.get("method") != "platt" or data.get("threshold_rule") != "roc-corner":
            raise FvlmInputError("unknown calibration method or threshold rule (expected platt, roc-corner)")
        min_auc = data.get("min_auc", 0.0)
        if not (_is_number(min_auc) and 0.0 <= min_auc <= 1.0):
            raise FvlmInputError("\"min_auc\" must be a number in [0, 1]")
        fitted_on = data.get("fitted_on", {})
        fingerprint = data.get("weights_fingerprint")
        if not isinstance(fitted_on, dict) or not (fingerprint is None or isinstance(fingerprint, str)):
            raise FvlmInputError("\"fitted_on\" must be an object and \"weights_fingerprint\" a string")
        maps = data.get("maps")
        if maps is not None and not isinstance(maps, dict):
            raise FvlmInputError("\"maps\" must be an object")
        return cls(*_parse_tables(data, float(min_auc), ""), float(min_auc), str(data.get("model", "")),
                   fingerprint, fitted_on,
                   None if maps is None else cls(*_parse_tables(maps, float(min_auc), "maps: "), float(min_auc)))


def _parse_tables(data: dict, min_auc: float, where: str) -> tuple[dict, dict, PlattMap | None]:
    """(pairs, findings, overall) of a file's (or its "maps" part's) tables, validated."""
    findings, pairs = data.get("findings"), data.get("pairs")
    if not isinstance(findings, dict) or not isinstance(pairs, dict):
        raise FvlmInputError(f"{where}\"findings\" and \"pairs\" must be objects")
    parsed_pairs = {}
    for key, value in pairs.items():
        anatomy, sep, finding = key.partition("/")
        if not sep or not anatomy or not finding:
            raise FvlmInputError(f"{where}pair key {key!r} is not \"anatomy/finding\"")
        parsed_pairs[anatomy, finding] = PlattMap.from_dict(value, "anatomy", f"{where}pair {key!r}", min_auc)
    overall = data.get("overall")
    return (parsed_pairs,
            {f: PlattMap.from_dict(v, "finding", f"{where}finding {f!r}", min_auc) for f, v in findings.items()},
            None if overall is None else PlattMap.from_dict(overall, "overall", f"{where}\"overall\"", min_auc))


def weights_fingerprint(model_dir: str | Path) -> str | None:
    """A cheap fingerprint of the folder's weights file (its size and 16 evenly spaced 64 KiB
    blocks): retrained or replaced weights change it. Not a security check. None without weights."""
    path = Path(model_dir) / CHECKPOINT_WEIGHTS_FILE
    if not path.is_file():
        return None
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({max(0, (size - FINGERPRINT_BLOCK) * i // (FINGERPRINT_SAMPLES - 1))
                              for i in range(FINGERPRINT_SAMPLES)}):
            handle.seek(offset)
            digest.update(handle.read(FINGERPRINT_BLOCK))
    return "sampled-sha256:" + digest.hexdigest()


def read_calibration(model_dir: str | Path) -> Calibration | None:
    """The model folder's calibration; None when it has none (uncalibrated). A malformed file,
    another version, or one fitted on other weights is refused with one line."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        calibration = Calibration.from_dict(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FvlmInputError(f"{path} is not valid JSON ({error}); fit it again with "
                             "`python -m training calibrate` or remove it.") from None
    except FvlmInputError as error:
        raise FvlmInputError(f"{path}: {error}.") from None
    fingerprint = weights_fingerprint(model_dir)
    if calibration.weights_fingerprint and fingerprint and calibration.weights_fingerprint != fingerprint:
        raise FvlmInputError(f"{path} was fitted on other weights than {CHECKPOINT_WEIGHTS_FILE}; fit it "
                             "again with `python -m training calibrate` or remove it.")
    return calibration


def write_calibration(model_dir: str | Path, calibration: Calibration) -> Path:
    """Write ``calibration.json`` into the model folder atomically."""
    text = json.dumps(calibration.to_dict(), indent=2, allow_nan=False) + "\n"
    return write_atomic(Path(model_dir) / CALIBRATION_FILE, text.encode("utf-8"))


def calibrated_scores(scores: dict[str, dict[str, float]], calibration: Calibration | None
                      ) -> dict[str, dict[str, CalibratedScore]]:
    """{anatomy: {finding: CalibratedScore}} for every calibrated score ({} when uncalibrated)."""
    if calibration is None:
        return {}
    out: dict[str, dict[str, CalibratedScore]] = {}
    for anatomy, findings in scores.items():
        for finding, raw in findings.items():
            scored = calibration.score(anatomy, finding, raw)
            if scored is not None:
                out.setdefault(anatomy, {})[finding] = scored
    return out
