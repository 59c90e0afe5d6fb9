"""The run's metrics log: one CSV row per optimizer step (and per validation), rank 0 only."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("step", "epoch", "lr", "loss", "temperature", "step_seconds", "val_loss")


class MetricsLog:
    """Appends rows to ``metrics.csv``; on resume, rows past the resumed step are dropped first
    (they belong to the interrupted stretch that is about to be redone)."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, **values) -> None:
        if not self.enabled:
            return
        row = {k: _format(values.get(k)) for k in COLUMNS}
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, COLUMNS).writerow(row)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
