"""The anatomy x finding table: calibrated probability and threshold flag per row, flagged first.

Colour means "above the finding's threshold" (warm, stronger with the calibrated probability);
rows below threshold stay plain. A score without calibration says "uncalibrated", is ranked by
its raw zero-shot probability after the calibrated rows, and is never coloured: raw softmax
values are not probabilities of anything.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QHeaderView, QTableWidgetItem

from ..core.inference.ranking import UNCALIBRATED, RankedScore, ranked_scores
from .finding_rows import KEY_ROLE, FindingRows

COLUMNS = ("#", "Anatomy", "Finding", "Probability", "Threshold")
RANK, ANATOMY, FINDING, PROBABILITY, THRESHOLD = range(len(COLUMNS))


def row_color(row: RankedScore) -> QColor | None:
    """Warm for a score above its threshold, stronger with its calibrated probability; else none."""
    if not row.above:
        return None
    p = min(max(float(row.calibrated.probability), 0.0), 1.0)
    return QColor(230, int(110 - 70 * p), 30, int(70 + 150 * p))


class ResultsTable(FindingRows):
    """Emits ``finding_chosen(anatomy, finding)`` when the user picks a row."""

    def __init__(self, parent=None) -> None:
        super().__init__(COLUMNS, parent)
        self._rows: dict[tuple[str, str], RankedScore] = {}
        header = self.horizontalHeader()
        for column in (RANK, PROBABILITY, THRESHOLD):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(ANATOMY, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(ANATOMY, 130)
        header.setSectionResizeMode(FINDING, QHeaderView.ResizeMode.Stretch)
        self.setToolTip("Calibrated probability of each finding in each anatomy and whether it is above the "
                        "finding's threshold (coloured); choose a row to see where the model looks.")

    def set_scores(self, scores: dict[str, dict[str, float]], calibrated: dict | None = None) -> None:
        """Fill the table in rank order (the user may re-sort by any column)."""
        self.setSortingEnabled(False)
        self.clearContents()
        rows = ranked_scores(scores, calibrated)
        self._rows = {(r.anatomy, r.finding): r for r in rows}
        self.setRowCount(len(rows))
        for index, row in enumerate(rows):
            color = row_color(row)
            items = [QTableWidgetItem() for _ in COLUMNS]
            items[RANK].setData(Qt.ItemDataRole.DisplayRole, row.rank)
            items[ANATOMY].setText(row.anatomy.replace("_", " "))
            items[FINDING].setText(row.finding)
            if row.calibrated is None:
                items[PROBABILITY].setText(UNCALIBRATED)
                items[PROBABILITY].setForeground(QBrush(QColor(150, 150, 150)))
            else:
                items[PROBABILITY].setData(Qt.ItemDataRole.DisplayRole, round(row.calibrated.probability, 3))
            items[THRESHOLD].setText(row.shown_threshold)
            for column in (RANK, PROBABILITY):
                items[column].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for column, item in enumerate(items):
                item.setData(KEY_ROLE, (row.anatomy, row.finding))
                if color is not None:
                    item.setBackground(QBrush(color))
                item.setToolTip(self._tooltip(row))
                self.setItem(index, column, item)
        self.setSortingEnabled(True)
        self.sortItems(RANK, Qt.SortOrder.AscendingOrder)

    @staticmethod
    def _tooltip(row: RankedScore) -> str:
        where = f"{row.finding} in {row.anatomy.replace('_', ' ')}"
        if row.calibrated is None:
            return (f"{where}: rank {row.rank}, raw zero-shot score {row.raw:.3f} (uncalibrated: "
                    "compare ranks, not values)")
        return (f"{where}: calibrated probability {row.calibrated.probability:.3f}, {row.shown_threshold} "
                f"(raw score {row.raw:.3f}, threshold fitted per {row.calibrated.level})")

    @property
    def calibration_status(self) -> str:
        """"calibrated", "uncalibrated", "partly calibrated", or "empty"."""
        if not self._rows:
            return "empty"
        flags = {r.calibrated is not None for r in self._rows.values()}
        return {frozenset({True}): "calibrated", frozenset({False}): UNCALIBRATED}.get(
            frozenset(flags), "partly calibrated")

    def rows(self) -> list[RankedScore]:
        """What the table shows, in display order."""
        return [self._rows[self.item(row, 0).data(KEY_ROLE)] for row in range(self.rowCount())]
