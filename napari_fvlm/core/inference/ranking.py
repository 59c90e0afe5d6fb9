"""Scores in rank order, as the panel's table shows them and findings.csv lists them.

Calibrated scores above threshold come first, then the other calibrated ones (each by calibrated
probability), then uncalibrated scores by raw probability; ties by name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

UNCALIBRATED = "uncalibrated"


@dataclass(frozen=True)
class RankedScore:
    """One score: its rank, the raw probability and, when calibrated, its `CalibratedScore`."""

    rank: int
    anatomy: str
    finding: str
    raw: float
    calibrated: object | None  # calibration.CalibratedScore

    @property
    def above(self) -> bool | None:
        return None if self.calibrated is None else self.calibrated.above

    @property
    def shown_probability(self) -> str:
        return UNCALIBRATED if self.calibrated is None else f"{self.calibrated.probability:.3f}"

    @property
    def shown_threshold(self) -> str:
        if self.calibrated is None:
            return "—"
        if not self.calibrated.separates:
            return "not separated"
        word = "above" if self.calibrated.above else "below"
        return f"{word} {self.calibrated.threshold:.2f}"


def ranked_scores(scores: dict[str, dict[str, float]], calibrated: dict | None = None) -> list[RankedScore]:
    """Every anatomy x finding score in rank order (see the module docstring)."""
    calibrated = calibrated or {}
    keyed = []
    for anatomy, findings in scores.items():
        for finding, raw in findings.items():
            scored = calibrated.get(anatomy, {}).get(finding)
            key = (0 if scored.above else 1, -scored.probability) if scored else (2, -float(raw))
            keyed.append((key, anatomy, finding, float(raw), scored))
    keyed.sort(key=lambda item: (item[0], item[1], item[2]))
    return [RankedScore(i + 1, a, f, raw, scored) for i, (_k, a, f, raw, scored) in enumerate(keyed)]


def findings_csv(analysis) -> str:
    """findings.csv: rank, anatomy, finding, raw and calibrated probability, the threshold on the
    calibrated scale and the flag (the last three empty when not calibrated)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "anatomy", "finding", "raw_probability", "calibrated_probability", "threshold",
                     "above_threshold"])
    for row in ranked_scores(analysis.scores, analysis.calibrated):
        scored = row.calibrated
        calibrated = ["", "", ""] if scored is None else [f"{scored.probability:.6f}", f"{scored.threshold:.6f}",
                                                          "yes" if scored.above else "no"]
        writer.writerow([row.rank, row.anatomy, row.finding, f"{row.raw:.6f}", *calibrated])
    return out.getvalue()
