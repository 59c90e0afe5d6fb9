"""The Compare tab: which CT layer is the prior and which the current (each with its masks), and
the table of per-anatomy changes of their calibrated scores, new and resolved findings first."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.report.compare import Change
from .finding_rows import KEY_ROLE, FindingRows
from .inputs import set_items

COLUMNS = ("Status", "Anatomy", "Finding", "Prior", "Current", "Change")
STATUS, ANATOMY, FINDING, PRIOR, CURRENT, CHANGE = range(len(COLUMNS))
STATUS_COLORS = {"new": QColor(230, 90, 30, 170), "resolved": QColor(60, 140, 230, 150),
                 "persistent": QColor(200, 160, 40, 110)}
TOTALSEG = "TotalSegmentator"


def number_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


class ChangesTable(FindingRows):
    """The changes in the comparison's order; emits ``finding_chosen(anatomy, finding)`` for a row."""

    def __init__(self, parent=None) -> None:
        super().__init__(COLUMNS, parent)
        self.changes: list[Change] = []
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(FINDING, QHeaderView.ResizeMode.Stretch)
        self.setMinimumHeight(160)
        self.setToolTip("Calibrated probability in the prior and the current CT; new: above threshold now and "
                        "not before, resolved: the reverse. Choose a row to go to its anatomy in both.")

    def set_changes(self, changes: list[Change]) -> None:
        """Fill the table in the comparison's order (new, resolved, persistent, the rest)."""
        self.changes = list(changes)
        self.clearContents()
        self.setRowCount(len(changes))
        for row, change in enumerate(changes):
            texts = (change.status or "-", change.anatomy.replace("_", " "), change.finding, number_text(change.prior),
                     number_text(change.current), "—" if change.delta is None else f"{change.delta:+.2f}")
            color = STATUS_COLORS.get(change.status)
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                item.setData(KEY_ROLE, (change.anatomy, change.finding))
                if column >= PRIOR:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if color is not None:
                    item.setBackground(QBrush(color))
                self.setItem(row, column, item)

    def row_of(self, anatomy: str, finding: str) -> int | None:
        return next((i for i, c in enumerate(self.changes) if (c.anatomy, c.finding) == (anatomy, finding)), None)


class ComparisonView(QWidget):
    """Prior and current CT layers with their masks (a Labels layer, or TotalSegmentator), Compare,
    and the changes table. The model and device are the Inputs box's."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.prior, self.current = QComboBox(), QComboBox()
        self.prior_masks, self.current_masks = QComboBox(), QComboBox()
        for combo, role in ((self.prior, "the earlier CT"), (self.current, "the later CT")):
            combo.setToolTip(f"The CT image layer of {role}")
        for combo in (self.prior_masks, self.current_masks):
            combo.setToolTip("That CT's anatomy masks: a Labels layer, or TotalSegmentator")
        self.compare = QPushButton("Compare")
        self.compare.setToolTip("Analyse both CTs with the Inputs box's model (a CT analysed before is not "
                                "encoded again) and show the changes; the prior is shown beside the current, linked")
        self.note = QLabel("Choose the prior and the current CT of one patient, then press Compare. "
                           "The model must be calibrated.")
        self.note.setWordWrap(True)
        self.table = ChangesTable()
        form = QFormLayout()
        form.addRow("Prior", self.prior)
        form.addRow("  masks", self.prior_masks)
        form.addRow("Current", self.current)
        form.addRow("  masks", self.current_masks)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.compare)
        layout.addWidget(self.note)
        layout.addWidget(self.table, stretch=1)

    def set_layer_names(self, ct_names: list[str], labels_names: list[str]) -> None:
        for combo in (self.prior, self.current):
            set_items(combo, ct_names)
        for combo in (self.prior_masks, self.current_masks):
            set_items(combo, [*labels_names, TOTALSEG])

    def select(self, prior: str, current: str, prior_masks: str | None = None,
               current_masks: str | None = None) -> None:
        """Choose the layers (masks: a Labels layer's name; None: TotalSegmentator)."""
        self.prior.setCurrentText(prior)
        self.current.setCurrentText(current)
        self.prior_masks.setCurrentText(prior_masks or TOTALSEG)
        self.current_masks.setCurrentText(current_masks or TOTALSEG)

    def choices(self) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
        """((prior CT layer, its Labels layer or None for TotalSegmentator), (current ..., ...))."""
        def masks(combo):
            return None if combo.currentText() in ("", TOTALSEG) else combo.currentText()
        return ((self.prior.currentText() or None, masks(self.prior_masks)),
                (self.current.currentText() or None, masks(self.current_masks)))
