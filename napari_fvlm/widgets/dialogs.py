"""File dialogs of the panel's exports (the writers themselves take plain paths)."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog


def ask_folder(parent, title: str) -> str | None:
    return QFileDialog.getExistingDirectory(parent, title) or None


def ask_save_path(parent, title: str, suggested: str, file_filter: str) -> str | None:
    path, _ = QFileDialog.getSaveFileName(parent, title, suggested, file_filter)
    return path or None


def ask_open_path(parent, title: str, file_filter: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, title, "", file_filter)
    return path or None
