"""`fvlm report` and `fvlm compare`: the report draft and the prior/current table from saved
analyses (findings.json of `fvlm analyze`, or the folder holding it)."""

from __future__ import annotations

import json
from pathlib import Path

from .core.errors import FvlmInputError
from .core.io.files import write_atomic


def read_findings(path) -> tuple[dict, Path]:
    """(findings.json document, its path) from the file or the analysis folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "findings.json"
    if not path.is_file():
        raise FvlmInputError(f"No findings.json at '{path}'; give the output folder of `fvlm analyze` or its "
                             "findings.json.")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FvlmInputError(f"{path} is not valid JSON ({error}).") from None


def _emit(text: str, out, log) -> None:
    if out:
        write_atomic(Path(out), text.encode("utf-8"))
        log(f"written to {out}")
    else:
        log(text.rstrip("\n"))


def run_report(findings, out=None, log=print) -> str:
    """The report draft of a saved analysis, printed or written to ``out``."""
    from .core.report.draft import report_draft
    from .core.report.table import FindingsTable

    document, path = read_findings(findings)
    study = Path(document.get("ct", {}).get("path") or path.parent).name
    text = report_draft(FindingsTable.from_document(document), study=study)
    _emit(text, out, log)
    return text


def run_compare(prior, current, out=None, log=print) -> str:
    """The prior/current change table of two saved analyses, printed or written to ``out``."""
    from .core.inference.export import RESEARCH_NOTICE
    from .core.report.compare import compare_tables, comparison_text
    from .core.report.table import FindingsTable

    tables = [FindingsTable.from_document(read_findings(p)[0]) for p in (prior, current)]
    text = f"{RESEARCH_NOTICE}\nPrior: {prior}\nCurrent: {current}\n\n" + comparison_text(compare_tables(*tables))
    _emit(text, out, log)
    return text
