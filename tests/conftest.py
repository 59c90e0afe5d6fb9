"""Shared fixtures. Tests run offline: the text encoder loads from its local package folder."""

import os

import pytest

from totalseg_standin import empty_totalseg_home, standin_totalseg_home  # noqa: F401  (shared fixtures)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def notifications():
    """The notifications napari shows in the viewer (its toasts), in order."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture(scope="session")
def synthetic_case(tmp_path_factory):
    """The synthetic CT and masks as NIfTI files and a random `demo` model folder, written once per
    run for every module that only reads them: (folder, model folder)."""
    from engine_fixtures import write_synthetic_case

    return write_synthetic_case(tmp_path_factory.mktemp("synthetic_case"))


@pytest.fixture(scope="session")
def random_demo_model(synthetic_case) -> str:
    """The random `demo` model folder of `synthetic_case` (tests must not change it)."""
    return synthetic_case[1]


@pytest.fixture(scope="session")
def demo_session():
    """One analysis session for every test that analyses with the bundled demo weights: the model
    loads once per run (on first use) and each CT is encoded once."""
    from napari_fvlm.core.inference.session import AnalysisSession

    return AnalysisSession()


@pytest.fixture(scope="session")
def analysed_case(synthetic_case, tmp_path_factory):
    """The folder `fvlm analyze` wrote for `synthetic_case` with the two `CASE_QUERIES`, run once
    for every test that reads such a folder (tests must not change it)."""
    from napari_fvlm.cli import main

    from engine_fixtures import CASE_QUERIES

    folder, model = synthetic_case
    out = tmp_path_factory.mktemp("analysed_case") / "result"
    queries = [item for query in CASE_QUERIES for item in ("--query", query)]
    assert main(["analyze", str(folder / "ct.nii.gz"), "--masks", str(folder / "anatomy.nii.gz"), "--model", model,
                 *queries, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One sample cache for every test that trains or evaluates the tiny training config: a cache
    folder is named by the preprocessing it holds, and each phantom is built once for the run,
    whichever test's seed range asks for it first."""
    return tmp_path_factory.mktemp("tiny_cache")


GUI_FIXTURES = {"make_napari_viewer", "qtbot"}


def pytest_collection_modifyitems(items):
    """Every test that opens a viewer or drives Qt is a `gui` test (`-m "not gui"` runs without X)."""
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
