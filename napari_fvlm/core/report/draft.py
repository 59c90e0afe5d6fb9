"""A structured report draft from the calibrated findings table, organised by anatomy.

It states only the findings above their calibrated threshold, each with the patient's side (from
the anatomy groups' sides) and, for every anatomy where it is above, the calibrated probability
and threshold; a section without one says "No finding above threshold". It adds nothing the table
does not hold: no sizes, no counts, no measurements. An uncalibrated model's raw probabilities are
ranks, not findings, so its draft states none and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..anatomy.catalog import group_set
from ..inference.export import RESEARCH_NOTICE
from ..inference.findings import organ_of
from .table import FindingsTable

SECTIONS = (("Lungs", ("lung",)), ("Heart", ("heart",)), ("Mediastinum", ("aorta", "esophagus", "trachea")),
            ("Upper abdomen", ("liver", "spleen", "kidney", "stomach")))
OTHER_SECTION = "Other"
NOTHING_ABOVE = "No finding above threshold."
UNCALIBRATED = ("This model has no calibration (calibration.json), so no score can be stated as a finding: "
                "its raw zero-shot probabilities are ranks only. Calibrate the model "
                "(python -m training calibrate) to draft a report.")


@dataclass(frozen=True)
class Statement:
    """One finding of a section: its side(s) and where it is above threshold."""

    finding: str
    laterality: str  # "left", "right", "bilateral" or "" (not lateral)
    places: tuple[tuple[str, float, float], ...]  # (anatomy display name, calibrated probability, threshold)

    def sentence(self) -> str:
        side = f", {self.laterality}" if self.laterality else ""
        where = "; ".join(f"{name} {p:.2f}, threshold {t:.2f}" for name, p, t in self.places)
        return f"{self.finding[:1].upper()}{self.finding[1:]}{side} ({where})."


def section_of(anatomy: str) -> str:
    organ = organ_of(anatomy)
    return next((name for name, organs in SECTIONS if organ in organs), OTHER_SECTION)


def _laterality(sides: set) -> str:
    sides.discard(None)
    return "bilateral" if len(sides) == 2 else (sides.pop() if sides else "")


def statements(table: FindingsTable) -> dict[str, list[Statement]]:
    """{section: statements} of the findings above threshold, sections in report order (every
    section of the model's anatomies is present, empty when nothing is above there)."""
    groups = {g.name: g for g in group_set(table.group_set)}
    by_section: dict[str, dict[str, list]] = {s: {} for s in _sections(table)}
    for anatomy, finding, scored in table.above_threshold():
        by_section[section_of(anatomy)].setdefault(finding, []).append((groups[anatomy], scored))
    out = {}
    for section, findings in by_section.items():
        out[section] = [Statement(finding, _laterality({g.side for g, _ in places}),
                                  tuple((g.display, s.probability, s.threshold) for g, s in places))
                        for finding, places in findings.items()]
    return out


def _sections(table: FindingsTable) -> list[str]:
    present = {section_of(a) for a in table.scores}
    return [s for s in [name for name, _ in SECTIONS] + [OTHER_SECTION] if s in present]


def _not_assessed(table: FindingsTable) -> list[str]:
    unseparated = sorted({f for row in table.calibrated.values() for f, s in row.items() if not s.separates})
    lines = []
    if unseparated:
        lines.append("Never flagged (the model does not separate them on validation, in at least one anatomy): "
                     f"{', '.join(unseparated)}.")
    if table.absent:
        names = ", ".join(a.replace("_", " ") for a in table.absent)
        lines.append(f"Not assessed (not found in the anatomy masks): {names}.")
    return lines


def report_draft(table: FindingsTable, study: str = "") -> str:
    """The draft as plain text, headed by the research-use notice; meant to be edited."""
    head = [RESEARCH_NOTICE, f"Report draft from fVLM model '{table.model_name}'"
            + (f" for {study}" if study else "") + "; review and edit before any use.", ""]
    if not table.is_calibrated:
        return "\n".join(head + [UNCALIBRATED]) + "\n"
    body = ["FINDINGS (above threshold: calibrated probability, threshold)"]
    for section, found in statements(table).items():
        body.append(f"{section}: " + (" ".join(s.sentence() for s in found) if found else NOTHING_ABOVE))
    extra = _not_assessed(table)
    return "\n".join(head + body + ([""] + extra if extra else [])) + "\n"


def with_notice(text: str) -> str:
    """A draft as saved after editing: headed by the research-use notice (put back when an edit
    removed it), ending in a newline."""
    text = text if text.lstrip().startswith(RESEARCH_NOTICE) else f"{RESEARCH_NOTICE}\n{text}"
    return text if text.endswith("\n") else text + "\n"
