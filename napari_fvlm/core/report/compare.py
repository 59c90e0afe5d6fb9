"""Prior vs current: per-anatomy changes of the calibrated scores of two CTs, and the point of one
CT that corresponds to a point of the other (same anatomy, same relative position).

Both analyses must come from one calibrated model: calibrated probabilities are comparable across
CTs, raw ones are ranks within a CT. A finding is "new" when above threshold now and not before,
"resolved" the other way round, "persistent" when above in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FvlmInputError
from ..volume import Volume
from .table import FindingsTable

STATUS_ORDER = ("new", "resolved", "persistent", "")


@dataclass(frozen=True)
class Change:
    """One anatomy x finding in both CTs (calibrated probabilities; None where not scored)."""

    anatomy: str
    finding: str
    prior: float | None
    current: float | None
    prior_above: bool
    current_above: bool

    @property
    def delta(self) -> float | None:
        return None if self.prior is None or self.current is None else self.current - self.prior

    @property
    def status(self) -> str:
        if self.current_above and not self.prior_above:
            return "new"
        if self.prior_above and not self.current_above:
            return "resolved"
        return "persistent" if self.current_above else ""


def _check_comparable(prior: FindingsTable, current: FindingsTable) -> None:
    if not (prior.is_calibrated and current.is_calibrated):
        raise FvlmInputError("Comparing two CTs needs a calibrated model: raw zero-shot probabilities rank "
                             "findings within one CT and are not comparable across CTs.")
    if (prior.model_name, prior.group_set) != (current.model_name, current.group_set):
        raise FvlmInputError(f"The prior was analysed with model '{prior.model_name}' and the current with "
                             f"'{current.model_name}'; analyse both with the same model to compare them.")


def compare_tables(prior: FindingsTable, current: FindingsTable) -> list[Change]:
    """Every calibrated anatomy x finding of either CT: new first, then resolved, persistent, and
    the rest, each by the size of the change."""
    _check_comparable(prior, current)
    keys = dict.fromkeys((a, f) for t in (prior, current) for a, row in t.calibrated.items() for f in row)
    changes = []
    for anatomy, finding in keys:
        before, now = prior.score(anatomy, finding), current.score(anatomy, finding)
        changes.append(Change(anatomy, finding, before.probability if before else None,
                              now.probability if now else None, bool(before and before.above),
                              bool(now and now.above)))
    return sorted(changes, key=lambda c: (STATUS_ORDER.index(c.status), -abs(c.delta or 0.0), c.anatomy, c.finding))


def comparison_text(changes: list[Change], limit: int | None = None) -> str:
    """The changes as an aligned plain-text table (status, anatomy, finding, prior, current, change)."""
    def number(value):
        return "—" if value is None else f"{value:.2f}"
    rows = [("status", "anatomy", "finding", "prior", "current", "change")]
    rows += [(c.status or "-", c.anatomy, c.finding, number(c.prior), number(c.current),
              "—" if c.delta is None else f"{c.delta:+.2f}") for c in changes[:limit]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows) + "\n"


def corresponding_point(world_mm, prior_labels: Volume, current_labels: Volume, names: str) -> tuple[np.ndarray, str]:
    """(RAS mm in the current CT, anatomy) of a prior point: the same relative position within the
    bounding box of the same anatomy (outside every anatomy: within all labelled voxels); see
    linked.py, which the panel's linked views use."""
    from .linked import AnatomyBoxes

    return AnatomyBoxes.of(prior_labels, names).corresponding(world_mm, AnatomyBoxes.of(current_labels, names))
