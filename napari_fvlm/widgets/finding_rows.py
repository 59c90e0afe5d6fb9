"""A read-only table whose rows are (anatomy, finding) pairs, one chosen at a time: the findings
table and the prior/current changes table."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QTableWidget

KEY_ROLE = Qt.ItemDataRole.UserRole  # every item of a row holds its (anatomy, finding) under this role


class FindingRows(QTableWidget):
    """Emits ``finding_chosen(anatomy, finding)`` when the user picks a row."""

    finding_chosen = Signal(str, str)

    def __init__(self, columns: tuple[str, ...], parent=None) -> None:
        super().__init__(0, len(columns), parent)
        self.setHorizontalHeaderLabels(columns)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(22)
        self.itemSelectionChanged.connect(self._emit_choice)

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
