"""The panel's widgets and their arrangement; no behaviour beyond what each widget does itself."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.windows import WINDOW_PRESETS
from .anatomy_list import AnatomyList
from .comparison_view import ComparisonView
from .inputs import InputsForm
from .query_box import QueryBox
from .report_box import ReportBox
from .results_table import ResultsTable

NOTICE = "Research use only — not for diagnosis."
MODEL_CARD = "docs/model-card.md"
DEFAULT_THRESHOLD = 0.4
ANATOMY_COLUMN_MAX = 220  # px
FINDINGS_TITLES = {
    "empty": "Findings",
    "calibrated": "Findings (calibrated probability; coloured: above threshold)",
    "partly calibrated": "Findings (calibrated probability where fitted; coloured: above threshold)",
    "uncalibrated": "Findings (uncalibrated model: ranked by raw zero-shot score)",
}


def model_card_link() -> str:
    """The model card: the repository's file when this is a source checkout, else its relative name."""
    card = Path(__file__).resolve().parents[2] / MODEL_CARD
    return card.as_uri() if card.is_file() else MODEL_CARD


def _group(title: str, *widgets, layout=None) -> QGroupBox:
    box = QGroupBox(title)
    inner = layout or QVBoxLayout()
    for widget in widgets:
        inner.addWidget(widget)
    box.setLayout(inner)
    return box


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


class PanelView(QWidget):
    """Inputs, run controls, findings table, query box, and tabs: display controls, anatomy list,
    exports, the report draft, prior vs current."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.notice = QLabel(f"<b>⚠ {NOTICE}</b> <a style='color: #8ab4f8;' href='{model_card_link()}'>Model card</a>")
        self.notice.setOpenExternalLinks(True)
        self.notice.setStyleSheet("color: #f0b429;")
        self.open_ct = QPushButton("Open CT…")
        self.open_ct.setToolTip("Read a NIfTI file or DICOM folder in the background (the window stays responsive)")
        self.three_planes = QPushButton("Three planes")
        self.three_planes.setCheckable(True)
        self.three_planes.setToolTip("Axial, coronal and sagittal views side by side, linked; "
                                     "click again for one big view")
        self.inputs = InputsForm()
        self.analyze = QPushButton("Analyze")
        self.analyze.setToolTip("Score every anatomy for every finding (runs in the background)")
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("Choose a CT and its anatomy masks, then press Analyze.")
        self.status.setWordWrap(True)
        self.table = ResultsTable()
        self.table.setMinimumHeight(180)
        # anatomy names as wide as they are (up to a limit; longer ones are elided, with a tooltip)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setMaximumSectionSize(ANATOMY_COLUMN_MAX)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.query = QueryBox()
        self.presets = {name: QPushButton(name) for name in WINDOW_PRESETS}
        for name, button in self.presets.items():
            level, width = WINDOW_PRESETS[name]
            button.setToolTip(f"CT window {name}: level {level:g}, width {width:g} HU")
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 95)
        self.threshold.setValue(int(DEFAULT_THRESHOLD * 100))
        self.threshold.setToolTip("Heatmap values below this are not shown")
        self.threshold_label = QLabel()
        self.set_threshold_text(DEFAULT_THRESHOLD)
        self.anatomy = AnatomyList()
        self.export_findings = QPushButton("Findings…")
        self.export_findings.setToolTip("findings.json, findings.csv and heatmaps (NIfTI on the CT grid)")
        self.export_masks = QPushButton("Masks…")
        self.export_masks.setToolTip("The anatomy masks as NIfTI in the CT's original geometry")
        self.export_screenshot = QPushButton("Screenshot…")
        self.export_dicom = QPushButton("DICOM SEG + SR…")
        self.export_dicom.setToolTip("For a CT read from a DICOM series: anatomy and finding Segmentations and a "
                                     "TID 1500 structured report referencing that series")
        self.report = ReportBox()
        self.comparison = ComparisonView()
        self.cursor = QLabel("")
        self.cursor.setToolTip("Value under the mouse: Hounsfield units and anatomy")

        layout = QVBoxLayout(self)
        layout.addWidget(self.notice)
        layout.addLayout(_row(self.open_ct, self.three_planes))
        layout.addWidget(self.inputs)
        layout.addLayout(_row(self.analyze, self.cancel, self.progress))
        layout.addWidget(self.status)
        self.findings_box = _group(FINDINGS_TITLES["empty"], self.table)
        layout.addWidget(self.findings_box, stretch=1)
        layout.addWidget(_group("Ask", self.query))
        self.tabs = QTabWidget()
        self.tabs.addTab(self._display_tab(), "Display")
        self.tabs.addTab(self.anatomy, "Anatomy")
        self.tabs.addTab(self._export_tab(), "Export")
        self.tabs.addTab(self.report, "Report")
        self.tabs.addTab(self.comparison, "Compare")
        layout.addWidget(self.tabs)
        layout.addWidget(self.cursor)

    def _display_tab(self) -> QWidget:
        tab = QWidget()
        column = QVBoxLayout(tab)
        column.addLayout(_row(*self.presets.values()))
        column.addLayout(_row(self.threshold_label, self.threshold))
        column.addStretch()
        return tab

    def _export_tab(self) -> QWidget:
        tab = QWidget()
        column = QVBoxLayout(tab)
        column.addLayout(_row(self.export_findings, self.export_masks, self.export_screenshot))
        column.addLayout(_row(self.export_dicom))
        column.addWidget(QLabel("Files keep the CT's original geometry; the CT itself is never overwritten."))
        column.addStretch()
        return tab

    def show_scores(self, scores: dict, calibrated: dict) -> None:
        """Fill the findings table and say in its title whether the probabilities are calibrated."""
        self.table.set_scores(scores, calibrated)
        self.findings_box.setTitle(FINDINGS_TITLES[self.table.calibration_status])

    def set_threshold_text(self, value: float, from_map: bool = False) -> None:
        self.threshold_label.setText(f"Heatmap ≥ {value:.2f}" + (" (the map's threshold)" if from_map else ""))

    def show_map_threshold(self, value: float) -> None:
        """Move the slider to a calibrated map's own threshold without re-thresholding the layers."""
        self.threshold.blockSignals(True)
        self.threshold.setValue(min(int(round(value * 100)), self.threshold.maximum()))
        self.threshold.blockSignals(False)
        self.set_threshold_text(value, from_map=True)

    def set_running(self, running: bool) -> None:
        """Analyze is disabled while a job runs; Cancel only then."""
        self.analyze.setEnabled(not running)
        self.cancel.setEnabled(running)
        if running:
            self.progress.setValue(0)

    def say(self, message: str, level: str = "info") -> None:
        """The status line: info (plain), warning (amber) or error (red)."""
        colors = {"info": "", "warning": "color: #f0b429;", "error": "color: #ff6b6b;"}
        self.status.setStyleSheet(colors[level])
        self.status.setText(message)
