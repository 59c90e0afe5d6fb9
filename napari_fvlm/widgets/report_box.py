"""The report draft of the last analysis, as an editable text box.

A reader's edits are never replaced without asking: a new analysis replaces an unedited draft at
once, but beside an edited one it only offers its own draft ("Use the new draft").
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class ReportBox(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.edit = QPlainTextEdit()
        self.edit.setPlaceholderText("The report draft appears here after an analysis; edit it, then save it.")
        self.edit.setMinimumHeight(160)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #f0b429;")
        self.note.hide()
        self.use_new = QPushButton("Use the new draft")
        self.use_new.setToolTip("Replace your edited text with the draft of the last analysis")
        self.use_new.hide()
        self.save = QPushButton("Save as text…")
        self.save.setToolTip("The text as you left it, headed by the research-use notice (.txt)")
        self._pending: str | None = None
        self.use_new.clicked.connect(self.use_pending)
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_new)
        buttons.addStretch()
        buttons.addWidget(self.save)
        layout = QVBoxLayout(self)
        layout.addWidget(self.edit, stretch=1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)

    @property
    def edited(self) -> bool:
        """The reader has changed the text since the draft was shown (and left some text)."""
        return self.edit.document().isModified() and bool(self.edit.toPlainText().strip())

    def text(self) -> str:
        return self.edit.toPlainText()

    def offer(self, draft: str, study: str) -> bool:
        """Show a new analysis's draft; beside edited text, only offer it. True when shown."""
        if not self.edited:
            self._show(draft)
            return True
        self._pending = draft
        self.note.setText(f"You edited this draft; the analysis of {study} has made a new one. Your text is kept: "
                          "'Use the new draft' replaces it.")
        self.note.show()
        self.use_new.show()
        return False

    def use_pending(self) -> None:
        if self._pending is not None:
            self._show(self._pending)

    def _show(self, draft: str) -> None:
        self.edit.setPlainText(draft)
        self.edit.document().setModified(False)
        self._pending = None
        self.note.hide()
        self.use_new.hide()
