"""A checkable list of the anatomy labels: tick to show a structure, untick to hide it."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

ID_ROLE = Qt.ItemDataRole.UserRole


class AnatomyList(QWidget):
    """Emits ``visibility_changed(ids)`` with the label ids left ticked."""

    visibility_changed = Signal(list)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.view = QListWidget()
        self.view.setMaximumHeight(120)
        self.view.setToolTip("Tick the anatomies to show in the anatomy layer")
        show_all, hide_all = QPushButton("Show all"), QPushButton("Hide all")
        show_all.clicked.connect(lambda: self.set_all(True))
        hide_all.clicked.connect(lambda: self.set_all(False))
        buttons = QHBoxLayout()
        buttons.addWidget(show_all)
        buttons.addWidget(hide_all)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        layout.addLayout(buttons)
        self.view.itemChanged.connect(lambda _item: self.visibility_changed.emit(self.visible_ids()))

    def set_labels(self, names: dict[int, str]) -> None:
        """One ticked row per label, sorted by name."""
        self.view.blockSignals(True)
        self.view.clear()
        for label_id, name in sorted(names.items(), key=lambda item: item[1]):
            item = QListWidgetItem(name.replace("_", " "))
            item.setData(ID_ROLE, int(label_id))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.view.addItem(item)
        self.view.blockSignals(False)

    def set_all(self, visible: bool) -> None:
        state = Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked
        self.view.blockSignals(True)
        for row in range(self.view.count()):
            self.view.item(row).setCheckState(state)
        self.view.blockSignals(False)
        self.visibility_changed.emit(self.visible_ids())

    def set_visible(self, label_id: int, visible: bool) -> None:
        """Tick or untick one label, as a click would."""
        for row in range(self.view.count()):
            item = self.view.item(row)
            if item.data(ID_ROLE) == label_id:
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)

    def all_ids(self) -> list[int]:
        return [int(self.view.item(r).data(ID_ROLE)) for r in range(self.view.count())]

    def visible_ids(self) -> list[int]:
        return [int(self.view.item(r).data(ID_ROLE)) for r in range(self.view.count())
                if self.view.item(r).checkState() == Qt.CheckState.Checked]
