"""Report decomposition: sentence -> anatomy accuracy on phantom reports, negation, lobes, the hook."""

import pytest

from napari_fvlm.core.anatomy.catalog import group_set
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.phantom import generate_phantom
from training.phantom_data import finding_is_in
from training.reports import (
    NORMAL_TEMPLATE,
    Decomposition,
    decompose_report,
    is_normal_statement,
    register_decomposer,
    sentence_accuracy,
    sentence_anatomies,
    split_sections,
    split_sentences,
)

FINE = group_set("fine")


@pytest.fixture(scope="module")
def phantoms():
    return [generate_phantom(seed, (64, 128, 128), (5.0, 3.0, 3.0)) for seed in range(50)]


@pytest.mark.parametrize("group_set_name", ["fine", "ct-rate"])
def test_phantom_sentences_go_to_the_right_anatomy(phantoms, group_set_name):
    pairs = [pair for p in phantoms for pair in p.sentences]
    accuracy, wrong = sentence_accuracy(pairs, group_set_name)
    print(f"\nsentence -> anatomy accuracy ({group_set_name}): {accuracy:.2%} of {len(pairs)} sentences")
    assert len(pairs) > 400
    assert accuracy >= 0.98, wrong[:5]


def test_abnormal_flags_match_the_phantom_ground_truth(phantoms):
    agree = total = 0
    for phantom in phantoms:
        flags = decompose_report(phantom.report, "fine").abnormal
        for group in FINE:
            truth = any(finding_is_in(f, group) or (f.key == group.name) for f in phantom.findings)
            # a side-level finding (an effusion) flags every lobe of that side: count the lung and
            # the organs, where report and lesion agree on the anatomy exactly
            if group.name.startswith("lung_") and "lobe" in group.name:
                continue
            agree += flags[group.name] == truth
            total += 1
    print(f"\nabnormal flags agreeing with ground truth: {agree / total:.2%} of {total}")
    assert agree / total >= 0.97


def test_lobes_abbreviations_laterality_and_hierarchy():
    assert sentence_anatomies("There is a 6 mm nodule in the LLL.", FINE) == ["lung_left", "lung_lower_lobe_left"]
    assert sentence_anatomies("Consolidation in the lower lobe of the right lung.", FINE) == [
        "lung_right", "lung_lower_lobe_right"]
    assert sentence_anatomies("Small left-sided pleural effusion.", FINE) == [
        "lung_left", "lung_upper_lobe_left", "lung_lower_lobe_left"]
    assert sentence_anatomies("Bronchiectatic airways are noted in the RML.", FINE) == [
        "lung_right", "lung_middle_lobe_right"]
    assert sentence_anatomies("The central airways are patent.", FINE) == ["trachea"]
    assert sentence_anatomies("Emphysema.", group_set("ct-rate")) == ["lung"]
    assert sentence_anatomies("Mild cardiomegaly.", FINE) == ["heart"]
    assert sentence_anatomies("Degenerative changes of the thoracic spine.", FINE) == []


def test_negated_findings_are_normal_statements_about_their_anatomy():
    report = ("FINDINGS: No pleural effusion. The heart is normal in size. There is a 5 mm nodule in the RUL.\n"
              "IMPRESSION: 1. No pleural effusion.\n2. Nodule in the right upper lobe.")
    result = decompose_report(report, "fine")
    assert "No pleural effusion." in result.texts["lung_left"]
    assert result.abnormal["lung_left"] is False and result.abnormal["lung_upper_lobe_left"] is False
    assert result.abnormal["lung_right"] and result.abnormal["lung_upper_lobe_right"]
    assert result.abnormal["lung_lower_lobe_right"] is False  # the nodule is in the upper lobe
    assert result.abnormal["heart"] is False and "normal in size" in result.texts["heart"]
    assert result.texts["liver"] == NORMAL_TEMPLATE.format(anatomy="Liver")
    assert is_normal_statement("There is no pericardial effusion.")
    assert is_normal_statement("Lungs are clear.")
    assert not is_normal_statement("Heart size is normal with a small pericardial effusion.")
    mixed = decompose_report("Findings.", "fine", impression="No effusion, but there is a nodule in the LLL.")
    assert mixed.abnormal["lung_lower_lobe_left"] and not mixed.abnormal["lung_right"]


def test_findings_only_texts_keep_what_is_abnormal_and_template_the_rest(phantoms):
    report = ("FINDINGS: No pleural effusion. The heart is normal in size. There is a 5 mm nodule in the RUL. "
              "No effusion, but there is consolidation in the LLL.\n"
              "IMPRESSION: 1. Nodule in the right upper lobe.\n2. Consolidation in the left lower lobe.")
    kept = decompose_report(report, "fine", decomposer="lexicon-findings")
    full = decompose_report(report, "fine")
    assert kept.abnormal == full.abnormal  # flags come from the impression either way
    assert kept.texts["lung_upper_lobe_right"] == "There is a 5 mm nodule in the RUL."
    assert kept.texts["lung_lower_lobe_left"] == "No effusion, but there is consolidation in the LLL."
    assert kept.texts["heart"] == NORMAL_TEMPLATE.format(anatomy="Heart")
    assert kept.texts["lung_lower_lobe_right"] == NORMAL_TEMPLATE.format(anatomy="Right lower lobe")
    assert "No pleural effusion." in full.texts["lung_lower_lobe_right"]
    for phantom in phantoms:  # every anatomy the report calls abnormal keeps a text of its own
        result = decompose_report(phantom.report, "fine", decomposer="lexicon-findings")
        for name, abnormal in result.abnormal.items():
            templated = result.texts[name].endswith("shows no significant abnormalities.")
            assert templated != abnormal, (phantom.seed, name, result.texts[name])


def test_sections_and_sentences():
    findings, impression = split_sections("FINDINGS: A. B 2.5 cm.\n\nIMPRESSION:\n1. One.\n2. Two.")
    assert findings == "A. B 2.5 cm." and impression.split() == ["1.", "One.", "2.", "Two."]
    assert split_sentences(impression) == ["One.", "Two."]
    assert split_sentences("A 2.5 cm mass. Second one") == ["A 2.5 cm mass.", "Second one"]


def test_decomposer_hook_is_used_by_name():
    def everything_abnormal(findings, impression, groups):
        return Decomposition({g.name: findings for g in groups}, {g.name: True for g in groups})

    register_decomposer("test-all-abnormal", everything_abnormal)
    result = decompose_report("FINDINGS: Text.", "ct-rate", decomposer="test-all-abnormal")
    assert result.texts == {"lung": "Text.", "heart": "Text.", "esophagus": "Text.", "aorta": "Text."}
    assert all(result.abnormal.values())
    with pytest.raises(FvlmInputError, match="Unknown report decomposition"):
        decompose_report("x", "fine", decomposer="no-such")
