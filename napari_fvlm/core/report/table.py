"""The findings table of one analysis: every anatomy x finding score, raw and calibrated.

Built from a live `Analysis` (the panel, `fvlm analyze`) or from a findings.json document (a saved
analysis), so the report draft, the structured report and the comparison read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FvlmInputError
from ..inference.calibration import CalibratedScore


@dataclass(frozen=True)
class FindingsTable:
    """Scores of one CT. ``calibrated`` holds a `CalibratedScore` for each score the model's
    calibration covers; ``is_calibrated`` is False for a model without a calibration file."""

    scores: dict[str, dict[str, float]]
    calibrated: dict[str, dict[str, CalibratedScore]]
    is_calibrated: bool
    group_set: str  # the anatomy group set of the model (names, sides, display words)
    model_name: str
    absent: list[str] = field(default_factory=list)  # the model's anatomies missing from the masks

    @classmethod
    def from_analysis(cls, analysis, config) -> FindingsTable:
        return cls(analysis.scores, analysis.calibrated, analysis.calibration is not None,
                   config.anatomy_group_set, config.name, list(analysis.absent))

    @classmethod
    def from_document(cls, document: dict) -> FindingsTable:
        """From findings.json (docs/findings-json.md); FvlmInputError when it is not one."""
        try:
            anatomies = document["anatomies"]
            config = document["model"]["config"]
            scores = {a: {f: float(p) for f, p in entry["findings"].items()} for a, entry in anatomies.items()}
            calibrated = {a: {f: _score(scores[a][f], s) for f, s in entry.get("calibrated", {}).items()}
                          for a, entry in anatomies.items() if entry.get("calibrated")}
            is_calibrated = document["calibration"]["status"] == "calibrated"
            return cls(scores, calibrated, is_calibrated, config["anatomy_group_set"], config["name"],
                       list(document.get("absent_anatomies", [])))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FvlmInputError(f"not a findings.json of `fvlm analyze` (missing or malformed {error}); "
                                 "see docs/findings-json.md.") from None

    def score(self, anatomy: str, finding: str) -> CalibratedScore | None:
        return self.calibrated.get(anatomy, {}).get(finding)

    def above_threshold(self) -> list[tuple[str, str, CalibratedScore]]:
        """(anatomy, finding, score) of every calibrated score above its threshold, in table order."""
        return [(a, f, s) for a, table in self.calibrated.items() for f, s in table.items() if s.above]


def _score(raw: float, entry: dict) -> CalibratedScore:
    return CalibratedScore(raw, float(entry["probability"]), float(entry["threshold"]),
                           float(entry["raw_threshold"]), bool(entry["above_threshold"]),
                           str(entry.get("fitted_on", "finding")), bool(entry.get("separates", True)))
