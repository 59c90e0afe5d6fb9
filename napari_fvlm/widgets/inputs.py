"""The analysis inputs: which CT layer, where anatomy masks come from, which model, which device.

When TotalSegmentator cannot run here (not installed, weights not downloaded), the anatomy source
starts on the Labels layer (or mask file) that is there, and the form says how to get the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QWidget,
)

from ..core.errors import FvlmInputError
from .reader_offer import ReaderOffer

ANATOMY_CHOICES = {"totalseg": "TotalSegmentator (fast)", "labels": "Labels layer", "file": "Mask file"}
MODEL_CHOICES = {"demo": "Bundled demo", "folder": "Checkpoint folder", "fvlm-b": "fVLM-B (hub id)"}
DEVICE_CHOICES = {"auto": "auto", "cpu": "CPU", "gpu": "GPU"}


@dataclass
class InputChoices:
    """What the form says, as plain values (read on the GUI thread before a job starts)."""

    ct_layer: str | None
    anatomy_kind: str
    labels_layer: str | None
    mask_path: str
    model_source: str  # "demo", a checkpoint folder, or a hub id
    device: str


def _combo(choices: dict[str, str]) -> QComboBox:
    combo = QComboBox()
    for key, text in choices.items():
        combo.addItem(text, key)
    return combo


def _path_row(placeholder: str, browse) -> tuple[QWidget, QLineEdit]:
    row, edit, button = QWidget(), QLineEdit(), QPushButton("Browse…")
    edit.setPlaceholderText(placeholder)
    button.clicked.connect(browse)
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit)
    layout.addWidget(button)
    return row, edit


def totalseg_problem() -> tuple[str, str]:
    """(why TotalSegmentator cannot run here, the short line the form shows); ("", ...) when it can."""
    from ..core.anatomy.totalseg import missing_models, missing_weights_message
    from ..core.anatomy.totalseg_worker import download_command

    try:
        missing = missing_models(fast=True)
    except FvlmInputError as err:  # not installed
        return str(err), "not installed: pip install TotalSegmentator"
    if missing:
        return missing_weights_message(missing, fast=True), f"no weights: run {download_command(fast=True)}"
    return "", "segments the CT (fast model)"


def set_items(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo's items, keeping the current choice when it still exists."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


class InputsForm(QGroupBox):
    def __init__(self, parent=None) -> None:
        super().__init__("Inputs", parent)
        self.ct = QComboBox()
        self.ct.setToolTip("The CT image layer to analyse")
        self.anatomy_kind = _combo(ANATOMY_CHOICES)
        self.anatomy_kind.activated.connect(self._anatomy_chosen)
        self.anatomy_chosen = False  # by the user (or select()): then layer changes leave it alone
        self.labels = QComboBox()
        file_row, self.mask_path = _path_row("segmentation .nii.gz (or a folder of masks)", self._browse_masks)
        self.totalseg_problem, note = totalseg_problem()
        self.totalseg_note = QLabel(note)
        self.totalseg_note.setToolTip(self.totalseg_problem or "TotalSegmentator's fast `total` model, "
                                      "in a separate process")
        self.totalseg_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.anatomy_detail = QStackedWidget()
        for widget in (self.totalseg_note, self.labels, file_row):
            self.anatomy_detail.addWidget(widget)
        self.model_kind = _combo(MODEL_CHOICES)
        folder_row, self.model_folder = _path_row("folder with config.json + model.safetensors",
                                                  self._browse_model)
        self.model_detail = QStackedWidget()
        for widget in (QLabel("small model trained on the phantom"), folder_row,
                       QLabel("napari-fvlm/fvlm-b from the local model cache")):
            self.model_detail.addWidget(widget)
        self.device = _combo(DEVICE_CHOICES)
        for stack in (self.anatomy_detail, self.model_detail):
            stack.setFixedHeight(file_row.sizeHint().height())
        self.anatomy_kind.currentIndexChanged.connect(self.anatomy_detail.setCurrentIndex)
        self.model_kind.currentIndexChanged.connect(self.model_detail.setCurrentIndex)
        self.reader_offer = ReaderOffer()
        form = QFormLayout(self)
        form.addRow(self.reader_offer)
        form.addRow("CT", self.ct)
        form.addRow("Anatomy", self.anatomy_kind)
        form.addRow("", self.anatomy_detail)
        form.addRow("Model", self.model_kind)
        form.addRow("", self.model_detail)
        form.addRow("Device", self.device)
        self._default_anatomy()

    def _anatomy_chosen(self, _index=None) -> None:
        self.anatomy_chosen = True

    def _default_anatomy(self) -> None:
        """Until the user chooses: TotalSegmentator when it can run, else the masks that are there."""
        if self.anatomy_chosen:
            return
        kind = "totalseg" if not self.totalseg_problem else "labels" if self.labels.count() else "file"
        self.anatomy_kind.setCurrentIndex(list(ANATOMY_CHOICES).index(kind))

    def set_layer_names(self, ct_names: list[str], labels_names: list[str]) -> None:
        set_items(self.ct, ct_names)
        set_items(self.labels, labels_names)
        self._default_anatomy()

    def select(self, ct: str | None = None, labels: str | None = None, checkpoint: str | None = None,
               device: str | None = None) -> None:
        """Choose inputs programmatically (the demo, tests): a Labels layer, a checkpoint folder, ..."""
        if ct is not None:
            self.ct.setCurrentText(ct)
        if labels is not None:
            self.anatomy_kind.setCurrentIndex(list(ANATOMY_CHOICES).index("labels"))
            self.labels.setCurrentText(labels)
            self.anatomy_chosen = True
        if checkpoint is not None:
            self.model_kind.setCurrentIndex(list(MODEL_CHOICES).index("folder"))
            self.model_folder.setText(str(checkpoint))
        if device is not None:
            self.device.setCurrentIndex(list(DEVICE_CHOICES).index(device))

    def select_mask_file(self, path: str) -> None:
        self.anatomy_chosen = True
        self.anatomy_kind.setCurrentIndex(list(ANATOMY_CHOICES).index("file"))
        self.mask_path.setText(str(path))

    def choices(self) -> InputChoices:
        model = self.model_kind.currentData()
        source = self.model_folder.text().strip() if model == "folder" else model
        return InputChoices(ct_layer=self.ct.currentText() or None, anatomy_kind=self.anatomy_kind.currentData(),
                            labels_layer=self.labels.currentText() or None,
                            mask_path=self.mask_path.text().strip(), model_source=source,
                            device=self.device.currentData())

    def _browse_masks(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Anatomy masks (TotalSegmentator segmentation)", "",
                                              "NIfTI (*.nii *.nii.gz);;All files (*)")
        if path:
            self.mask_path.setText(path)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model checkpoint folder")
        if folder:
            self.model_folder.setText(folder)
