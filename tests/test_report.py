"""The report draft and the prior/current comparison: on hand-made tables (exact wording, sides,
numbers only from the table) and on two phantoms of one seed, the second with a finding added,
analysed by the bundled demo weights with their calibration."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_fvlm._reader import read_volume
from napari_fvlm.cli import main
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.geometry import ras_to_display
from napari_fvlm.core.inference.calibration import CalibratedScore
from napari_fvlm.core.report.compare import compare_tables, comparison_text, corresponding_point
from napari_fvlm.core.report.draft import NOTHING_ABOVE, UNCALIBRATED, report_draft, statements, with_notice
from napari_fvlm.core.report.linked import LinkedViews, display_extent
from napari_fvlm.core.report.table import FindingsTable

SEED, BASE, ADDED = 7, "lung nodule:right", ("cardiomegaly", "heart")


def scored(probability: float, threshold: float, separates: bool = True) -> CalibratedScore:
    return CalibratedScore(probability, probability, threshold, threshold,
                           separates and probability >= threshold, "finding", separates)


def hand_table(calibrated: bool = True, **overrides) -> FindingsTable:
    rows = {
        "lung_left": {"pleural effusion": scored(0.81, 0.32), "emphysema": scored(0.9, 0.2, separates=False)},
        "lung_lower_lobe_left": {"pleural effusion": scored(0.74, 0.47)},
        "lung_right": {"pleural effusion": scored(0.66, 0.55), "lung nodule": scored(0.12, 0.3)},
        "heart": {"cardiomegaly": scored(0.2, 0.4)},
        "aorta": {"arterial wall calcification": scored(0.93, 0.5)},
    }
    rows.update(overrides)
    raw = {a: {f: s.raw for f, s in row.items()} for a, row in rows.items()}
    return FindingsTable(raw, rows if calibrated else {}, calibrated, "fine", "demo", absent=["spleen"])


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+|\d+", text))


def test_draft_states_above_threshold_findings_by_section_with_sides():
    text = report_draft(hand_table(), study="ct.nii.gz")
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    assert text.startswith("Research use only; not for diagnosis.")
    assert lines["Lungs"] == ("Pleural effusion, bilateral (left lung 0.81, threshold 0.32; left lower lobe 0.74, "
                              "threshold 0.47; right lung 0.66, threshold 0.55).")
    assert lines["Heart"] == NOTHING_ABOVE
    assert lines["Mediastinum"] == "Arterial wall calcification (aorta 0.93, threshold 0.50)."
    assert "emphysema" in lines["Never flagged (the model does not separate them on validation, in at least one anatomy)"]
    assert "spleen" in text and "nodule" not in text and "cardiomegaly" not in text.lower()
    table_numbers = {f"{v:.2f}" for row in hand_table().calibrated.values() for s in row.values()
                     for v in (s.probability, s.threshold)}
    assert numbers_in(text.split("FINDINGS", 1)[1].split("Never flagged")[0]) <= table_numbers  # nothing invented


def test_a_saved_draft_keeps_the_notice_an_edit_removed():
    assert with_notice("Heart: enlarged.") == "Research use only; not for diagnosis.\nHeart: enlarged.\n"
    draft = report_draft(hand_table())
    assert with_notice(draft) == draft


def test_one_sided_finding_says_its_side():
    table = hand_table(lung_right={"pleural effusion": scored(0.1, 0.55)})
    assert statements(table)["Lungs"][0].laterality == "left"


def test_uncalibrated_model_drafts_no_finding():
    text = report_draft(hand_table(calibrated=False))
    assert UNCALIBRATED in text and "effusion" not in text and "Lungs" not in text


def test_comparison_needs_one_calibrated_model():
    with pytest.raises(FvlmInputError, match="calibrated"):
        compare_tables(hand_table(), hand_table(calibrated=False))
    other = FindingsTable({}, {}, True, "fine", "other")
    with pytest.raises(FvlmInputError, match="same model"):
        compare_tables(hand_table(), other)


def test_comparison_flags_new_resolved_and_persistent():
    prior = hand_table(heart={"cardiomegaly": scored(0.2, 0.4)})
    current = hand_table(heart={"cardiomegaly": scored(0.85, 0.4)}, aorta={"arterial wall calcification": scored(0.3, 0.5)})
    changes = {(c.anatomy, c.finding): c for c in compare_tables(prior, current)}
    assert changes["heart", "cardiomegaly"].status == "new"
    assert changes["heart", "cardiomegaly"].delta == pytest.approx(0.65)
    assert changes["aorta", "arterial wall calcification"].status == "resolved"
    assert changes["lung_left", "pleural effusion"].status == "persistent"
    assert changes["lung_right", "lung nodule"].status == ""
    first = compare_tables(prior, current)[0]
    assert (first.anatomy, first.status) == ("heart", "new")
    assert "heart" in comparison_text(compare_tables(prior, current)).splitlines()[1]


@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory, demo_session):
    """(prior, current) as (FindingsTable, CT, labels): one seed, the current with cardiomegaly added,
    written by `fvlm phantom` and analysed by the demo weights."""
    folder = tmp_path_factory.mktemp("pair")
    assert main(["phantom", "--out", str(folder / "prior"), "--seed", str(SEED), "--finding", BASE]) == 0
    assert main(["phantom", "--out", str(folder / "current"), "--seed", str(SEED), "--finding", BASE,
                 "--finding", ADDED[0]]) == 0
    analyzer = demo_session.models.get("demo", "cpu")
    assert analyzer.calibration is not None
    out = []
    for name in ("prior", "current"):
        ct, labels = read_volume(str(folder / name / "ct.nii.gz")), read_volume(str(folder / name / "anatomy.nii.gz"))
        _encoded, analysis = analyzer.analyze(ct, labels)
        out.append((FindingsTable.from_analysis(analysis, analyzer.config), ct, labels))
    return out


def named_findings(draft: str, table: FindingsTable) -> set[str]:
    body = draft.split("FINDINGS", 1)[1].split("\n\n")[0]
    return {f for row in table.scores.values() for f in row if re.search(rf"\b{re.escape(f)}\b", body, re.I)}


def test_phantom_drafts_name_exactly_the_above_threshold_findings(phantom_pair):
    for table, _ct, _labels in phantom_pair:
        draft = report_draft(table)
        assert named_findings(draft, table) == {f for _a, f, _s in table.above_threshold()}
    current = phantom_pair[1][0]
    assert ADDED[0] in named_findings(report_draft(current), current)  # the model finds the added one


def test_phantom_pair_shows_the_added_finding_as_new_in_its_anatomy(phantom_pair):
    (prior, *_), (current, *_) = phantom_pair
    changes = compare_tables(prior, current)
    added = next(c for c in changes if (c.finding, c.anatomy) == ADDED)
    assert added.status == "new" and added.delta > 0
    assert all(c.status != "resolved" for c in changes if c.finding == ADDED[0])


def test_linked_point_stays_in_the_same_anatomy(phantom_pair):
    (_, _, prior_labels), (_, _, current_labels) = phantom_pair
    heart_id = next(i for i, n in prior_labels.labels.items() if n == "heart")
    centre = np.argwhere(prior_labels.array == heart_id).mean(axis=0)
    world, anatomy = corresponding_point(prior_labels.to_world(centre), prior_labels, current_labels, "fine")
    assert anatomy == "heart"
    voxel = tuple(int(round(v)) for v in current_labels.to_voxel(world))
    assert current_labels.array[voxel] == heart_id  # the enlarged heart's centre is still heart


def test_linked_views_show_the_prior_beside_the_current_on_the_same_slice(phantom_pair):
    (_, _, prior_labels), (_, _, current_labels) = phantom_pair
    views = LinkedViews.of(prior_labels, current_labels, "fine")
    heart_id = next(i for i, n in current_labels.labels.items() if n == "heart")
    point = ras_to_display(current_labels.to_world(np.argwhere(current_labels.array == heart_id).mean(axis=0)))
    link = views.link(point)
    assert link.anatomy == "heart"
    np.testing.assert_allclose(link.prior_point[:2], point[:2])  # the same slice and screen row
    assert display_extent(prior_labels)[0][2] + link.shift[2] > display_extent(current_labels)[1][2]  # beside
    assert views.on_prior(link.prior_point) and not views.on_prior(point)
    back, anatomy = views.current_point(link.prior_point, link.shift)
    assert anatomy == "heart"
    np.testing.assert_allclose(back, point, atol=1e-6)  # and back
