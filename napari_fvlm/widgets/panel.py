"""The "fVLM analysis" dock widget: connects the layout, the layer wiring and the job runner.

Each user action starts at most one worker; each worker outcome has a named continuation here
(``_analysis_done``, ``_query_done``, ...), which is the only code that changes `PanelState`.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import QScrollArea, QStyle, QVBoxLayout, QWidget

from ..core.errors import FvlmInputError
from ..core.inference import models as model_sources
from ..core.inference.session import AnalysisSession
from . import dialogs, export_actions
from .comparison import PriorCurrent
from .jobs import run_analysis, run_finding, run_query
from .layers import LayerWiring
from .layout import PanelView
from .progress_report import ProgressReport
from .runner import CloseWatcher, Continuations, Runner
from .state import PanelState
from .viewer_layout import ViewerLayout
from .window_presets import apply_window

CLOSE_WAIT_S = 2.0


def flagged_count(analysis) -> int:
    return sum(s.above for table in analysis.calibrated.values() for s in table.values())


def score_words(analysis, anatomy: str, finding: str) -> str:
    """A score as the status line says it: calibrated probability and flag, or uncalibrated."""
    scored = analysis.calibrated.get(anatomy, {}).get(finding)
    if scored is None:
        return f"uncalibrated (raw zero-shot score {analysis.scores[anatomy][finding]:.2f}, a rank only)"
    side = "above" if scored.above else "below"
    return f"p = {scored.probability:.2f}, {side} its threshold {scored.threshold:.2f}"


class FvlmPanel(QWidget):
    """Analyze a CT with fVLM: scores per anatomy and finding, heatmaps, free-text grounding, exports."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = PanelState()
        self.view = PanelView()
        self.wiring = LayerWiring(napari_viewer)
        self.layout_of_views = ViewerLayout.of(napari_viewer)
        self._pending_finding: tuple[str, str] | None = None  # the last row chosen while a job ran
        self._opening = None  # the worker reading a CT, while it runs
        self.runner = Runner()
        self.session = AnalysisSession()
        self.progress = ProgressReport(self.view.progress)
        self.close_watcher = CloseWatcher(self.shutdown, self)
        self.prior_current = PriorCurrent(self)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._connect()
        self.refresh_layer_choices()
        if not (model_sources.DEMO_WEIGHTS / "config.json").is_file():
            self.view.say("The bundled demo weights are not installed in this copy: choose Model → "
                          "Checkpoint folder to analyze.", "warning")

    def _connect(self) -> None:
        view, events = self.view, self.viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self.refresh_layer_choices)
        self.viewer.cursor.events.position.connect(self._show_cursor_value)
        view.analyze.clicked.connect(self.analyze)
        view.cancel.clicked.connect(self.cancel)
        self.runner.progressed.connect(self._on_progress)
        view.table.finding_chosen.connect(self.show_finding)
        view.query.query_submitted.connect(self.ask)
        view.query.history_chosen.connect(self.show_query)
        view.threshold.valueChanged.connect(self._on_threshold)
        view.anatomy.visibility_changed.connect(self._on_anatomy_visibility)
        view.three_planes.toggled.connect(self.show_three_planes)
        view.open_ct.clicked.connect(self._ask_open_ct)
        for name, button in view.presets.items():
            button.clicked.connect(lambda _=False, n=name: self.apply_window(n))
        view.export_findings.clicked.connect(self._ask_export_findings)
        view.export_masks.clicked.connect(self._ask_export_masks)
        view.export_screenshot.clicked.connect(self._ask_screenshot)
        view.export_dicom.clicked.connect(self._ask_export_dicom)
        view.report.save.clicked.connect(self._ask_save_report)
        runner = self.runner
        self.destroyed.connect(lambda *_: runner.stop(CLOSE_WAIT_S))
        QTimer.singleShot(0, self._watch_window)  # once docked, watch the viewer's window

    # --- inputs ---------------------------------------------------------------------------------
    def refresh_layer_choices(self, *_event) -> None:
        names = ([layer.name for layer in self.wiring.ct_candidates()],
                 [layer.name for layer in self.wiring.labels_candidates()])
        self.view.inputs.set_layer_names(*names)
        self.view.comparison.set_layer_names(*names)

    def open_ct(self, path) -> None:
        """Read a CT in the background and add it as a layer (drag-and-drop reads on the GUI thread)."""
        from .background_open import open_in_background

        self.view.say(f"Opening {path}…")
        self._opening = open_in_background(self.viewer, path, self._ct_opened, self.refuse)

    def _ct_opened(self, layers) -> None:
        if not self.state.closed and layers:
            self.view.inputs.select(ct=layers[0].name)
            self.view.say(f"Opened {layers[0].name}.")

    def _ask_open_ct(self) -> None:
        path = dialogs.ask_open_path(self, "Open a CT (NIfTI file; for a DICOM series choose any of its files)",
                                     "CT (*.nii.gz *.nii *.dcm);;All files (*)")
        if path:
            self.open_ct(str(Path(path).parent) if path.lower().endswith(".dcm") else path)  # a series: its folder

    # --- analysis -------------------------------------------------------------------------------
    def analyze(self) -> bool:
        """Start the analysis in the background; False (with a message) when it cannot start."""
        if self.refuse_if_busy():
            return False
        try:
            request = self.wiring.analysis_request(self.view.inputs.choices())
        except FvlmInputError as err:
            self.refuse(str(err))
            return False
        then = self.long_continuations(self._analysis_done)
        return self.start_long("analysis", run_analysis, request, self.session, then=then,
                               message=f"Analyzing {request.ct_name}…")

    def refuse_if_busy(self) -> bool:
        """True (with a message) while a job runs."""
        if self.runner.busy:
            self.view.say(f"Busy with the {self.runner.kind}: wait for it to finish or press Cancel.", "warning")
        return self.runner.busy

    def start_long(self, kind: str, job, *args, then: Continuations, message: str) -> bool:
        """Start an analysis-sized job (analysis, comparison) with the progress bar and Cancel."""
        if self.refuse_if_busy():
            return False
        self.runner.start(kind, job, *args, then=then, with_progress=True)
        self.view.set_running(True)
        self.view.say(message)
        self.progress.start()
        return True

    def long_continuations(self, done) -> Continuations:
        """A long job's continuations: ``done``, or the analysis's refusal, cancel and failure lines."""
        return Continuations(done, self._analysis_refused, self._analysis_cancelled, self._analysis_failed)

    def cancel(self) -> None:
        if self.runner.cancel():
            self.view.say("Cancelling…")

    def _on_progress(self, fraction: float, message: str) -> None:
        if not self.state.closed:
            self.progress.update(fraction, message)

    def _analysis_done(self, result) -> None:
        if self.state.closed:
            return
        self.end_long(completed=True)
        self.state.result, self.state.history, self.state.shown_findings = result, {}, []
        self.view.query.clear()
        self.view.show_scores(result.analysis.scores, result.analysis.calibrated)
        self._show_anatomy(result)
        absent = f" Not found in the masks: {', '.join(result.analysis.absent)}." if result.analysis.absent else ""
        calibration = ("uncalibrated model: rows are ranked by raw score" if result.analysis.calibration is None
                       else f"{flagged_count(result.analysis)} above threshold")
        self.view.say(f"Scored {len(result.analysis.scores)} anatomies ({calibration}) in "
                      f"{result.analysis.timing_s.get('total', 0.0):.1f} s. Choose a row to see its heatmap, "
                      f"or ask below.{absent}")
        self.view.report.offer(result.draft, result.request.ct_name)  # an edited draft is kept: see ReportBox
        rows = self.view.table.rows()
        if rows:  # the most probable finding's map, at once
            self.view.table.choose(rows[0].anatomy, rows[0].finding)

    def _analysis_refused(self, message: str) -> None:
        if not self.state.closed:
            self.end_long(completed=False)
            self.refuse(message)

    def _analysis_cancelled(self) -> None:
        if not self.state.closed:
            self.end_long(completed=False)
            self.view.say("Analysis cancelled; nothing was changed.", "warning")

    def _analysis_failed(self, err: Exception) -> None:
        if not self.state.closed:
            self.end_long(completed=False)
            self.view.say(f"The analysis failed: {err}", "error")

    def _show_anatomy(self, result) -> None:
        source = result.request.anatomy
        layer = self.wiring.find(source.layer) if source.kind == "labels" else None
        shown = source.labels if layer is not None else result.labels  # the layer's own label values
        if layer is None:
            layer = self.wiring.show_anatomy(result.labels, f"{result.request.ct_name} anatomy")
        self.state.anatomy_layer = layer.name
        self.view.anatomy.set_labels(shown.labels or {})  # named when read: no rescan on the GUI thread

    # --- findings and queries -------------------------------------------------------------------
    def show_finding(self, anatomy: str, finding: str) -> None:
        """Show one scored finding's heatmap and jump to its peak; the map is made in a worker.

        Rows chosen while a job runs are not lost: the last one is shown when the job ends.
        """
        if self.state.result is None:
            return
        if self.runner.busy:
            self._pending_finding = (anatomy, finding)
            return
        then = Continuations(self._finding_done, self.refuse, self._next_finding, self._job_failed)
        self.runner.start("heatmap", run_finding, self.state.result, anatomy, finding, then=then)

    def _finding_done(self, shown) -> None:
        if self.state.closed:
            return
        result = self.state.result
        anatomy, finding = shown.finding
        self._show_map(shown, "finding")
        z = self.wiring.jump_to(shown.peak_ras)  # found in the worker
        if (anatomy, finding) not in self.state.shown_findings:
            self.state.shown_findings.append((anatomy, finding))
        self.view.say(f"{finding} in {anatomy.replace('_', ' ')}: {score_words(result.analysis, anatomy, finding)}; "
                      f"strongest at z = {z:.0f} mm.")
        self._next_finding()

    def _next_finding(self) -> None:
        pending, self._pending_finding = self._pending_finding, None
        if pending is not None and not self.state.closed:
            self.show_finding(*pending)

    def ask(self, text: str) -> bool:
        """Ground a free-text query in the background; False (with a message) when it cannot start."""
        from ..core.inference.grounding import check_query

        if self.state.result is None:
            self.refuse("Analyze a CT first: questions are answered on its analysis.")
            return False
        try:
            text = check_query(text)
        except FvlmInputError as err:
            self.refuse(str(err))
            return False
        then = Continuations(self._query_done, self.refuse, lambda: None, self._job_failed)
        return self._start("query", run_query, self.state.result, text, then=then)

    def _query_done(self, outcome) -> None:
        if self.state.closed:
            return
        grounding, shown = outcome
        self.state.history.pop(grounding.text, None)
        self.state.history[grounding.text] = grounding
        self.state.maps[shown.name] = shown
        self.show_query(grounding.text)
        self._next_finding()

    def _job_failed(self, err: Exception) -> None:
        if not self.state.closed:
            self.view.say(f"Failed: {err}", "error")
            self._next_finding()

    def show_query(self, text: str) -> None:
        """Show a grounded query again (from the history: no model call)."""
        grounding, shown = self.state.history.get(text), self.state.maps.get(text)
        if grounding is None or shown is None:
            return
        self._show_map(shown, "query")
        self.view.query.show_grounding(grounding)
        z = self.wiring.jump_to(grounding.peak_world_mm)
        self.view.say(f"'{grounding.text}' points to {grounding.peak_anatomy.replace('_', ' ')} (z = {z:.0f} mm).")

    def _show_map(self, shown, kind: str):
        """A calibrated map is shown from its own threshold (below it: dark); others from the slider."""
        threshold = shown.heatmap.threshold
        if threshold is None:
            threshold = self.view.threshold.value() / 100
        else:
            self.view.show_map_threshold(threshold)
        return self.wiring.show_heatmap(shown, kind, threshold, self.view.query.keep_previous.isChecked())

    # --- display --------------------------------------------------------------------------------
    def _on_threshold(self, value: int) -> None:
        self.view.set_threshold_text(value / 100)
        self.wiring.set_heatmap_threshold(value / 100)

    def _on_anatomy_visibility(self, ids: list) -> None:
        layer = self.wiring.find(self.state.anatomy_layer)
        if layer is not None:
            self.wiring.set_labels_visible(layer, ids, self.view.anatomy.all_ids())

    def show_three_planes(self, shown: bool) -> None:
        """Axial, coronal and sagittal side by side, or back to one big view."""
        self.layout_of_views.show_three(shown)
        if self.view.three_planes.isChecked() != shown:
            self.view.three_planes.setChecked(shown)

    def apply_window(self, preset: str) -> None:
        layer = self.wiring.find(self.view.inputs.ct.currentText())
        if layer is None:
            self.refuse("Open a CT first: window presets apply to the CT layer.")
            return
        apply_window(layer, preset)

    def _show_cursor_value(self, _event=None) -> None:
        ct = self.wiring.find(self.view.inputs.ct.currentText())
        self.view.cursor.setText(self.wiring.cursor_readout(ct, self.wiring.find(self.state.anatomy_layer)))

    # --- exports --------------------------------------------------------------------------------
    def export_findings(self, folder) -> bool:
        """Write findings.json/.csv and heatmaps into ``folder`` in the background."""
        state = self.state
        if self._needs_result() or not self._passes(export_actions.check_findings_folder, folder, state.result):
            return False
        return self._export(export_actions.write_findings, folder, state.result, list(state.history.values()),
                            list(state.shown_findings))

    def export_masks(self, path) -> bool:
        """The anatomy masks as NIfTI in the CT's original geometry, written in the background."""
        if self._needs_result() or not self._passes(export_actions.refuse_sources, path, self._sources()):
            return False
        return self._export(export_actions.write_masks, path, self.state.result)

    def export_dicom(self, folder) -> bool:
        """DICOM SEG + SR referencing the CT's source series into ``folder``, written in the background."""
        if self._needs_result() or not self._passes(export_actions.check_dicom, folder, self.state.result):
            return False
        return self._export(export_actions.write_dicom, folder, self.state.result, list(self.state.shown_findings))

    def save_report(self, path) -> bool:
        """The report draft as the reader left it (with the research-use notice) as a .txt file."""
        text = self.view.report.text()
        if not text.strip():
            self.refuse("Analyze a CT first: its report draft appears in the Report tab.")
            return False
        if not self._passes(export_actions.check_report_path, path, self._sources()):
            return False
        return self._export(export_actions.write_report, path, text, self._sources())

    def export_screenshot(self, path) -> bool:
        """The whole window as PNG: grabbed here (Qt needs the GUI thread), encoded and written in the background."""
        if not self._passes(export_actions.check_screenshot_path, path, self._sources()):
            return False
        image = self.viewer.screenshot(canvas_only=False, flash=False)
        return self._export(export_actions.write_png, path, image, self._sources())

    def _export_done(self, written) -> None:
        if self.state.closed:
            return
        if isinstance(written, list):  # the files of a folder
            written = f"{written[0].parent}: {', '.join(path.name for path in written)}" if written else "nothing"
        self.view.say(f"Written: {written}.")

    def _ask_export_findings(self) -> None:
        folder = dialogs.ask_folder(self, "An empty folder (or an earlier export) for the findings")
        if folder:
            self.export_findings(folder)

    def _ask_export_masks(self) -> None:
        if not self._needs_result():
            path = dialogs.ask_save_path(self, "Save anatomy masks", f"{self.state.result.request.ct_name}"
                                         "_anatomy.nii.gz", "NIfTI (*.nii.gz *.nii)")
            if path:
                self.export_masks(path)

    def _ask_export_dicom(self) -> None:
        """Refused at once for a CT not read from DICOM; else asks for the folder."""
        if self._needs_result() or not self._passes(export_actions.check_dicom_source, self.state.result):
            return
        folder = dialogs.ask_folder(self, "An empty folder (or an earlier DICOM export) for the SEG and SR files")
        if folder:
            self.export_dicom(folder)

    def _ask_save_report(self) -> None:
        name = self.state.result.request.ct_name if self.state.result else "fvlm"
        path = dialogs.ask_save_path(self, "Save the report draft", f"{name}_report.txt", "Text (*.txt)")
        if path:
            self.save_report(path)

    def _ask_screenshot(self) -> None:
        path = dialogs.ask_save_path(self, "Save screenshot", "fvlm_screenshot.png", "PNG (*.png)")
        if path:
            self.export_screenshot(path)

    def _passes(self, check, *args) -> bool:
        """Run an input check; False (with its message) when it refuses."""
        try:
            check(*args)
        except FvlmInputError as err:
            self.refuse(str(err))
            return False
        return True

    def _export(self, job, *args) -> bool:
        then = Continuations(self._export_done, self.refuse, lambda: None, self._job_failed)
        return self._start("export", job, *args, then=then)

    def _sources(self) -> list[str]:
        """Files the analysis read: no export may replace them."""
        return export_actions.source_paths(self.state.result) if self.state.result else []

    def _start(self, kind: str, job, *args, then: Continuations) -> bool:
        """Start a short job (query, export); refused politely while another one runs."""
        if not self.runner.start(kind, job, *args, then=then):
            self.view.say(f"Busy with the {self.runner.kind}: try again when it has finished.", "warning")
            return False
        return True

    def _needs_result(self) -> bool:
        if self.state.result is None:
            self.refuse("Analyze a CT first; there is nothing to export yet.")
            return True
        return False

    # --- lifecycle ------------------------------------------------------------------------------
    def refuse(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        self.view.say(message, "warning")
        show_warning(message)

    def end_long(self, completed: bool) -> None:
        self.view.set_running(False)
        self.progress.finish(completed)

    def minimumSizeHint(self) -> QSize:
        """As wide as the content needs (styled, so asked each time): the scroll area only scrolls down."""
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        return QSize(self.view.minimumSizeHint().width() + scroll_bar + 4, super().minimumSizeHint().height())

    def showEvent(self, event) -> None:
        self._watch_window()
        super().showEvent(event)

    def _watch_window(self) -> None:
        self.close_watcher.watch(self)

    def shutdown(self, wait_s: float = CLOSE_WAIT_S) -> bool:
        """The viewer is closing: cancel the running job and wait briefly; True when it has stopped."""
        self.state.closed = True
        stopped = self.runner.stop(wait_s)
        self.progress.close()
        return stopped
