"""The anatomy x finding table: one row per score, highest first, shaded by probability."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("Anatomy", "Finding", "Probability")
KEY_ROLE = Qt.ItemDataRole.UserRole


def probability_color(probability: float) -> QColor:
    """A warm shade whose strength follows the probability (readable on dark and light themes)."""
    p = min(max(float(probability), 0.0), 1.0)
    return QColor(230, int(120 - 80 * p), 30, int(15 + 200 * p ** 3))


def ranked_rows(scores: dict[str, dict[str, float]]) -> list[tuple[str, str, float]]:
    """(anatomy, finding, probability) rows, highest probability first (ties by name)."""
    rows = [(a, f, float(p)) for a, findings in scores.items() for f, p in findings.items()]
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))


class ResultsTable(QTableWidget):
    """Emits ``finding_chosen(anatomy, finding)`` when the user picks a row."""

    finding_chosen = Signal(str, str)

    def __init__(self, parent=None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(0, 140)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip("Zero-shot probability of each finding in each anatomy; "
                        "choose a row to see where the model looks.")
        self.itemSelectionChanged.connect(self._emit_choice)

    def set_scores(self, scores: dict[str, dict[str, float]]) -> None:
        """Fill the table, highest probability first (the user may re-sort by any column)."""
        self.setSortingEnabled(False)
        self.clearContents()
        rows = ranked_rows(scores)
        self.setRowCount(len(rows))
        for row, (anatomy, finding, probability) in enumerate(rows):
            brush = QBrush(probability_color(probability))
            items = [QTableWidgetItem(anatomy.replace("_", " ")), QTableWidgetItem(finding), QTableWidgetItem()]
            items[2].setData(Qt.ItemDataRole.DisplayRole, round(probability, 3))
            items[2].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for column, item in enumerate(items):
                item.setData(KEY_ROLE, (anatomy, finding))
                item.setBackground(brush)
                item.setToolTip(f"{finding} in {anatomy.replace('_', ' ')}: {probability:.3f}")
                self.setItem(row, column, item)
        self.setSortingEnabled(True)
        self.sortItems(2, Qt.SortOrder.DescendingOrder)

    def rows(self) -> list[tuple[str, str, float]]:
        """What the table shows, in display order (anatomy, finding, probability)."""
        out = []
        for row in range(self.rowCount()):
            anatomy, finding = self.item(row, 0).data(KEY_ROLE)
            out.append((anatomy, finding, float(self.item(row, 2).data(Qt.ItemDataRole.DisplayRole))))
        return out

    def choose(self, anatomy: str, finding: str) -> bool:
        """Select the row of (anatomy, finding), as a click would; False when it is not shown."""
        for row in range(self.rowCount()):
            if self.item(row, 0).data(KEY_ROLE) == (anatomy, finding):
                self.selectRow(row)
                self.scrollToItem(self.item(row, 0))
                return True
        return False

    def _emit_choice(self) -> None:
        items = self.selectedItems()
        if items:
            anatomy, finding = items[0].data(KEY_ROLE)
            self.finding_chosen.emit(anatomy, finding)
