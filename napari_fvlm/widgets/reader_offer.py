"""Asking once whether napari should open CT files with this plugin without asking which reader.

napari's builtin reader also claims .nii/.nii.gz/.dcm, so each drag-and-drop asks "which reader?"
until a preference is set. The panel offers to set it, visibly and once: the answer (yes or no)
is remembered in this plugin's own file, and napari's settings change only on "Yes".
"""

from __future__ import annotations

import json
from pathlib import Path

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .._reader import PLUGIN, READER_PATTERNS, prefer_this_reader, reader_patterns_without_preference
from ..core.io.files import write_atomic

OFFER_KEY = "open_ct_files_with_napari_fvlm"


def answers_path() -> Path:
    """This plugin's small file of remembered answers, in the user's configuration folder."""
    from platformdirs import user_config_path

    return user_config_path(PLUGIN) / "answers.json"


def _answers() -> dict:
    try:
        answers = json.loads(answers_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return answers if isinstance(answers, dict) else {}


def remember(key: str, answer: str) -> None:
    write_atomic(answers_path(), json.dumps({**_answers(), key: answer}, indent=1).encode())


def should_offer() -> bool:
    """True when napari would ask "which reader?" for a CT file and the user was never asked here."""
    return OFFER_KEY not in _answers() and bool(reader_patterns_without_preference())


class ReaderOffer(QWidget):
    """One line and two buttons; hidden once answered, never shown again after an answer."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        patterns = ", ".join(p.lstrip("*") for p in READER_PATTERNS)
        self.question = QLabel(f"Open dropped {patterns} files with napari-fvlm, without napari asking "
                               f"which reader?")
        self.question.setWordWrap(True)
        self.yes, self.no = QPushButton("Yes"), QPushButton("No")
        self.yes.setToolTip("Sets napari's preferred reader for these files (Preferences → Plugins "
                            "changes it back)")
        self.yes.clicked.connect(lambda: self.answer(True))
        self.no.clicked.connect(lambda: self.answer(False))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.question, 1)
        layout.addWidget(self.yes)
        layout.addWidget(self.no)
        self.setVisible(should_offer())

    def answer(self, yes: bool) -> list[str]:
        """Record the answer; on yes, set napari's preference. Returns the patterns set."""
        remember(OFFER_KEY, "yes" if yes else "no")
        self.setVisible(False)
        return prefer_this_reader() if yes else []
