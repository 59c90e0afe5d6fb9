"""The panel's state between events: one small dataclass, changed only by the panel's continuations."""

from __future__ import annotations

from dataclasses import dataclass, field

from .jobs import AnalysisResult, ComparisonResult


@dataclass
class PanelState:
    result: AnalysisResult | None = None  # the last finished analysis
    anatomy_layer: str | None = None  # the Labels layer that shows its masks
    history: dict = field(default_factory=dict)  # query text -> Grounding, oldest first
    shown_findings: list[tuple[str, str]] = field(default_factory=list)  # (anatomy, finding) maps viewed
    maps: dict = field(default_factory=dict)  # layer name -> jobs.ShownMap, shown again without a worker
    comparison: ComparisonResult | None = None  # the last prior/current comparison
    closed: bool = False  # the viewer is closing: late results are dropped
