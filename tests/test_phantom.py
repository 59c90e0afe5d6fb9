"""The synthetic chest CT phantom: anatomy, geometry, findings, report and files."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS, TOTAL_CLASSES
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.phantom import FINDINGS, FindingRequest, generate_phantom, write_phantom

SMALL = {"shape": (64, 128, 128), "spacing_zyx": (5.0, 3.0, 3.0)}  # same field of view, 8x fewer voxels
LEFT_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left")
RIGHT_LOBES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")
NEGATION = re.compile(r"^(No |There is no )")


@pytest.fixture(scope="module")
def normal():
    return generate_phantom(3, findings=[])


@pytest.fixture(scope="module")
def every():
    """One instance of every finding kind in one body, at full resolution."""
    return generate_phantom(5, findings=list(FINDINGS))


def _ids(names) -> list[int]:
    return [TOTAL_CLASS_IDS[n] for n in names]


def _world_centroid(phantom, names) -> np.ndarray:
    voxels = np.argwhere(np.isin(phantom.anatomy.array, _ids(names)))
    assert len(voxels), names
    return phantom.anatomy.to_world(voxels.mean(axis=0))


def _paragraphs(report: str) -> tuple[str, str]:
    findings, impression = report.split("IMPRESSION:")
    assert findings.startswith("FINDINGS:")
    return findings, impression


def test_same_seed_gives_identical_phantom():
    a, b = generate_phantom(11, **SMALL), generate_phantom(11, **SMALL)
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.anatomy.array, b.anatomy.array)
    assert np.array_equal(a.lesions.array, b.lesions.array)
    assert np.array_equal(a.ct.affine, b.ct.affine)
    assert a.report == b.report and a.findings == b.findings


def test_different_seeds_differ():
    phantoms = [generate_phantom(seed, **SMALL) for seed in (1, 2, 3)]
    assert not np.array_equal(phantoms[0].ct.array, phantoms[1].ct.array)
    body_sizes = {int((p.ct.array > -500).sum()) for p in phantoms}
    assert len(body_sizes) == 3
    assert len({p.report for p in phantoms}) == 3


def test_grid_and_affine_follow_the_canonical_lps_order(normal):
    assert normal.ct.shape == (128, 256, 256) and normal.ct.array.dtype == np.int16
    assert np.allclose(normal.ct.spacing, (2.5, 1.5, 1.5))
    diagonal = np.diag(normal.ct.affine)[:3]
    assert diagonal[0] < 0 and diagonal[1] < 0 and diagonal[2] > 0  # x to the left, y posterior
    assert normal.anatomy.same_grid(normal.ct) and normal.lesions.same_grid(normal.ct)
    body = np.argwhere(normal.ct.array > -500).mean(axis=0)
    assert np.all(np.abs(normal.ct.to_world(body)[:2]) < 40)  # roughly centred on the world axis


def test_laterality_in_world_coordinates(normal):
    """RAS: +x is the patient's right, +y anterior, +z superior."""
    left_lung, right_lung = _world_centroid(normal, LEFT_LOBES), _world_centroid(normal, RIGHT_LOBES)
    assert left_lung[0] < -40 and right_lung[0] > 40
    for name, expect_left in (("liver", False), ("spleen", True), ("stomach", True),
                              ("kidney_left", True), ("kidney_right", False)):
        x = _world_centroid(normal, [name])[0]
        assert (x < 0) == expect_left, (name, x)
    heart = _world_centroid(normal, ["heart"])
    spine = _world_centroid(normal, [f"vertebrae_T{n}" for n in range(1, 13)])
    assert -60 < heart[0] < 0  # slightly left of the midline
    assert heart[1] > spine[1] + 50  # well in front of the spine
    aorta = np.argwhere(normal.anatomy.array == TOTAL_CLASS_IDS["aorta"])
    below_arch = normal.anatomy.to_world(aorta[aorta[:, 0] < np.percentile(aorta[:, 0], 50)])
    assert below_arch[:, 0].mean() < 0 and below_arch[:, 1].mean() < heart[1]  # descending: left, behind
    for side in ("left", "right"):
        upper = _world_centroid(normal, [f"lung_upper_lobe_{side}"])
        lower = _world_centroid(normal, [f"lung_lower_lobe_{side}"])
        assert upper[2] > lower[2] + 30
    # on screen (x index = columns) the patient's right lung is at small x, the heart towards small y
    left_index = np.argwhere(np.isin(normal.anatomy.array, _ids(LEFT_LOBES)))[:, 2].mean()
    right_index = np.argwhere(np.isin(normal.anatomy.array, _ids(RIGHT_LOBES)))[:, 2].mean()
    assert right_index < 128 < left_index


def test_every_label_is_a_total_class_with_its_name(normal):
    present = set(np.unique(normal.anatomy.array).tolist()) - {0}
    assert normal.anatomy.labels == {i: TOTAL_CLASSES[i] for i in present}
    expected = {"heart", "aorta", "esophagus", "trachea", "liver", "spleen", "stomach", "kidney_left",
                "kidney_right", "sternum", "vertebrae_T6", "rib_left_5", "rib_right_5", *LEFT_LOBES,
                *RIGHT_LOBES}
    assert expected <= set(normal.anatomy.labels.values())


def test_hu_of_each_organ_is_plausible(normal):
    ranges = {"lung_upper_lobe_left": (-920, -780), "lung_lower_lobe_right": (-920, -780),
              "heart": (20, 60), "aorta": (25, 65), "liver": (40, 85), "spleen": (30, 70),
              "kidney_left": (15, 55), "esophagus": (10, 60), "vertebrae_T8": (250, 550),
              "rib_right_6": (450, 950), "sternum": (300, 650)}
    ct, labels = normal.ct.array, normal.anatomy.array
    for name, (low, high) in ranges.items():
        median = np.median(ct[labels == TOTAL_CLASS_IDS[name]])
        assert low <= median <= high, (name, median)
    assert np.median(ct[labels == TOTAL_CLASS_IDS["trachea"]]) < -300  # mostly air
    corner = ct[:, :10, :10].astype(float)
    assert np.median(corner) < -950 and 5 < corner.std() < 30  # air outside, with scanner noise


def test_every_requested_finding_has_its_own_lesion_in_its_anatomy(every):
    assert sorted(f.name for f in every.findings) == sorted(FINDINGS)
    lesions, anatomy = every.lesions.array, every.anatomy.array
    assert sorted(f.lesion_label for f in every.findings) == sorted(set(np.unique(lesions)) - {0})
    for finding in every.findings:
        kind = FINDINGS[finding.name]
        mask = lesions == finding.lesion_label
        assert mask.sum() > 0, finding.name
        assert finding.anatomy in kind.anatomies
        allowed = kind.anatomies
        if finding.side is not None:
            allowed = LEFT_LOBES if finding.side == "left" else RIGHT_LOBES
            assert (finding.center_world_mm[0] < 0) == (finding.side == "left"), finding
        assert np.isin(anatomy[mask], _ids(allowed)).all(), finding.name
    hernia = lesions == next(f.lesion_label for f in every.findings if f.name == "hiatal hernia")
    near_hernia = ndimage.binary_dilation(hernia, iterations=2)
    assert (anatomy[near_hernia] == TOTAL_CLASS_IDS["esophagus"]).any()  # beside the esophagus


def test_findings_are_visible_in_hu(every, normal):
    ct, lesions = every.ct.array, every.lesions.array
    hu = {f.name: ct[lesions == f.lesion_label] for f in every.findings}
    assert np.median(hu["lung nodule"]) > -200
    assert np.median(hu["consolidation"]) > -300
    assert -750 < np.median(hu["ground-glass opacity"]) < -400
    assert np.median(hu["emphysema"]) < -930
    assert -20 < np.median(hu["pleural effusion"]) < 40
    assert hu["coronary artery calcification"].max() > 300
    assert hu["arterial wall calcification"].max() > 300
    liver = ct[(every.anatomy.array == TOTAL_CLASS_IDS["liver"]) & (lesions == 0)]
    assert np.median(hu["liver lesion"]) < np.median(liver) - 20
    heart_id = TOTAL_CLASS_IDS["heart"]
    assert (every.anatomy.array == heart_id).sum() > 1.8 * (normal.anatomy.array == heart_id).sum()


def test_findings_do_not_move_the_rest_of_the_body():
    plain = generate_phantom(21, findings=[], **SMALL)
    sick = generate_phantom(21, findings=["cardiomegaly", "lung nodule"], **SMALL)
    spine = _ids([f"vertebrae_T{n}" for n in range(1, 13)])
    assert np.array_equal(np.isin(plain.anatomy.array, spine), np.isin(sick.anatomy.array, spine))


def test_report_names_every_finding(every):
    findings, impression = _paragraphs(every.report)
    for finding in every.findings:
        assert finding.sentence in findings
        assert (finding.sentence, finding.key) in every.sentences
        terms = FINDINGS[finding.name].terms
        assert any(term in finding.impression.lower() for term in terms), finding.impression
        assert finding.impression in impression
    keys = {key for _, key in every.sentences}
    assert {"trachea", "spleen", "kidney"} <= keys  # organs without findings still get a sentence
    effusion_side = next(f.side for f in every.findings if f.name == "pleural effusion")
    other = "right" if effusion_side == "left" else "left"
    assert (f"No {other} pleural effusion.", f"lung_{other}") in every.sentences


def test_normal_study_has_normal_statements_only(normal):
    findings, impression = _paragraphs(normal.report)
    assert "no acute" in impression.lower() and normal.findings == []
    keys = {key for _, key in normal.sentences}
    assert {"lung", "heart", "aorta", "esophagus", "trachea", "liver", "spleen", "kidney", "stomach"} <= keys
    all_terms = [t for kind in FINDINGS.values() for t in kind.terms]
    for sentence, _ in normal.sentences:
        assert sentence in findings
        mentions = [t for t in all_terms if t in sentence.lower()]
        assert not mentions or NEGATION.match(sentence), sentence


@pytest.mark.parametrize("where, lobes", [("left", LEFT_LOBES), ("LLL", ("lung_lower_lobe_left",)),
                                          ("right middle lobe", ("lung_middle_lobe_right",)),
                                          ("lung_upper_lobe_right", ("lung_upper_lobe_right",))])
def test_a_nodule_goes_where_it_is_asked(where, lobes):
    phantom = generate_phantom(7, findings=[f"lung nodule:{where}"], **SMALL)
    (nodule,) = phantom.findings
    assert nodule.anatomy in lobes
    mask = phantom.lesions.array == nodule.lesion_label
    assert np.isin(phantom.anatomy.array[mask], _ids(lobes)).all()
    assert (nodule.center_world_mm[0] < 0) == (nodule.side == "left")
    assert f"{nodule.size_mm:.0f} mm" in nodule.sentence


@pytest.mark.parametrize("request_, words", [
    (["lung tumour"], "lung nodule"),
    ([FindingRequest("liver lesion", "left")], "liver"),
    ([FindingRequest("lung nodule", "heart")], "lung_upper_lobe_left"),
    (["cardiomegaly", "cardiomegaly"], "once"),
    (["pleural effusion:left", "pleural effusion:left"], "once per side"),
])
def test_bad_requests_are_refused_with_the_valid_choices(request_, words):
    with pytest.raises(FvlmInputError, match=words):
        generate_phantom(0, findings=request_, **SMALL)


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 0, "shape": (16, 16, 16)},
                                    {"seed": 0, "spacing_zyx": (0, 1, 1)}])
def test_bad_grids_and_seeds_are_refused(kwargs):
    with pytest.raises(FvlmInputError):
        generate_phantom(**kwargs)


def test_random_findings_vary_and_the_report_wording_varies():
    phantoms = [generate_phantom(seed, **SMALL) for seed in range(10)]
    counts = [len(p.findings) for p in phantoms]
    assert np.mean(counts) >= 2 and len({f.name for p in phantoms for f in p.findings}) >= 10
    for p in phantoms:
        assert [f.lesion_label for f in p.findings] == list(range(1, len(p.findings) + 1))
        assert all(f.sentence in p.report for f in p.findings)
    wordings = {re.sub(r"\d+", "N", text) for p in phantoms for text, key in p.sentences if key == "heart"}
    assert len(wordings) >= 3


def test_written_files_reload_to_the_same_arrays(every, tmp_path):
    out = write_phantom(every, tmp_path / "case")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ct.nii.gz", "anatomy.nii.gz", "lesions.nii.gz", "report.txt", "labels.json"])
    for name, volume in (("ct", every.ct), ("anatomy", every.anatomy), ("lesions", every.lesions)):
        image = nib.load(out / f"{name}.nii.gz")
        assert np.allclose(image.affine, volume.affine)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
        assert np.array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.array)
    assert nib.load(out / "ct.nii.gz").get_data_dtype() == np.int16
    assert (out / "report.txt").read_text() == every.report
    labels = json.loads((out / "labels.json").read_text())
    assert labels["seed"] == 5 and labels["shape_zyx"] == [128, 256, 256]
    written = sorted(f["lesion_label"] for f in labels["findings"])
    assert written == sorted(set(np.unique(every.lesions.array).tolist()) - {0})
    assert {int(k): v for k, v in labels["anatomy_labels"].items()} == every.anatomy.labels
    first = labels["findings"][0]
    assert set(first) == {"name", "anatomy", "side", "lesion_label", "center_world_mm", "size_mm", "sentence"}
    write_phantom(every, out)  # writing again replaces the files and leaves nothing else behind
    assert len(list(out.iterdir())) == 5


def test_write_refuses_a_file_as_folder(normal, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(FvlmInputError, match="file"):
        write_phantom(normal, target)


def test_written_files_open_with_the_plugin_reader_despite_labels_json(normal, tmp_path):
    """The phantom's labels.json describes findings; the reader must not take it for label names."""
    from napari_fvlm._reader import read_volume

    write_phantom(normal, tmp_path)
    ct, anatomy = read_volume(str(tmp_path / "ct.nii.gz")), read_volume(str(tmp_path / "anatomy.nii.gz"))
    assert not ct.is_labels and np.array_equal(ct.array, normal.ct.array)
    assert anatomy.labels == {i: n for i, n in normal.anatomy.labels.items() if i in np.unique(normal.anatomy.array)}
