"""Free-text grounding box: type a finding, press Enter; see where it lands, the best anatomies,
and the queries asked so far (click one to show it again)."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QGridLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QWidget

TOP_ANATOMIES = 5


class QueryBox(QWidget):
    """Emits ``query_submitted(text)`` on Enter and ``history_chosen(text)`` on a history click."""

    query_submitted = Signal(str)
    history_chosen = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Ask: e.g. nodule in the left lower lobe — press Enter")
        self.edit.setClearButtonEnabled(True)
        self.keep_previous = QCheckBox("keep previous heatmaps")
        self.keep_previous.setToolTip("Show each new heatmap beside the earlier ones instead of replacing them.")
        self.peak = QLabel("")
        self.peak.setWordWrap(True)
        self.top = QListWidget()
        self.top.setToolTip("The searched anatomies by the query map's highest probability inside each "
                           "(the first holds the peak)")
        self.history = QListWidget()
        self.history.setToolTip("Past queries: click one to show it again")
        for view in (self.top, self.history):
            view.setMaximumHeight(96)
            view.setTextElideMode(Qt.TextElideMode.ElideRight)
            view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 0, 0, 1, 2)
        layout.addWidget(self.keep_previous, 1, 0, 1, 2)
        layout.addWidget(self.peak, 2, 0, 1, 2)
        layout.addWidget(QLabel("Top anatomies"), 3, 0)
        layout.addWidget(QLabel("History"), 3, 1)
        layout.addWidget(self.top, 4, 0)
        layout.addWidget(self.history, 4, 1)
        self.edit.returnPressed.connect(self._submit)
        self.history.itemClicked.connect(lambda item: self.history_chosen.emit(item.text()))

    def _submit(self) -> None:
        self.query_submitted.emit(self.edit.text())

    def show_grounding(self, grounding) -> None:
        """The peak, the top anatomies with their peak probabilities, and the query at the top of the history."""
        x, y, z = grounding.peak_world_mm
        side = "patient's left" if x < 0 else "patient's right"
        self.peak.setText(f"<b>{grounding.text}</b>: peak in <b>{grounding.peak_anatomy.replace('_', ' ')}</b> "
                          f"({side}, z = {z:.0f} mm)")
        self.top.clear()
        for anatomy, score in grounding.anatomy_scores[:TOP_ANATOMIES]:
            self.top.addItem(QListWidgetItem(f"{anatomy.replace('_', ' ')}   {score:.3f}"))
        self._remember(grounding.text)

    def clear(self) -> None:
        """Forget the shown answer and the history (a new analysis starts afresh)."""
        self.peak.clear()
        self.top.clear()
        self.history.clear()

    def _remember(self, text: str) -> None:
        for row in range(self.history.count()):
            if self.history.item(row).text() == text:
                self.history.takeItem(row)
                break
        self.history.insertItem(0, text)
        self.history.item(0).setToolTip(text)

    def history_texts(self) -> list[str]:
        return [self.history.item(row).text() for row in range(self.history.count())]
