"""Official fVLM weights give the reference evaluation's answers (reference_fixtures.py).

The expected numbers in tests/data/reference/ were computed by the reference code itself (its
data scripts and eval.py, CPU, float32) for the seeded weights, text configs and CT made by
reference_fixtures.py; see the README there.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from napari_fvlm.cli import main
from napari_fvlm.core.errors import FvlmInputError
from napari_fvlm.core.inference.analyzer import Analyzer
from napari_fvlm.core.inference.reference_protocol import prepare_reference
from napari_fvlm.core.model import load_checkpoint, read_checkpoint_config
from napari_fvlm.core.model.config import ModelConfig
from napari_fvlm.core.model.convert_official import convert_official

import reference_fixtures as rf

pytestmark = pytest.mark.slow  # the reference model and protocol, end to end

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{variant: converted checkpoint folder}, each made with `fvlm convert-official`."""
    root = tmp_path_factory.mktemp("official")
    folders = {}
    for variant in rf.TEXT_VARIANTS:
        text = rf.write_text_folder(root / f"text-{variant}", variant)
        pth = rf.save_reference_checkpoint(root / f"{variant}.pth", variant)
        config = root / f"{variant}.json"
        config.write_text(json.dumps(rf.tiny_model_config(variant)), encoding="utf-8")
        out = root / f"converted-{variant}"
        assert main(["convert-official", str(pth), str(out), "--config", str(config),
                     "--text-encoder", str(text)]) == 0
        pth.unlink()
        folders[variant] = out
    return folders


@pytest.fixture(scope="module")
def volumes():
    from napari_fvlm.core.io.read import read_volume

    return read_volume(str(rf.DATA / "ct.nii.gz")), read_volume(str(rf.DATA / "total.nii.gz"))


def _check_scores(scores: dict, variant: str) -> float:
    """The largest |ours - reference| over every anatomy x finding the reference scores."""
    expected = rf.expected()["variants"][variant]["probabilities"]
    assert len(expected) == 16
    worst = 0.0
    for key, probability in expected.items():
        organ, label = key.split("/")
        ours = scores[organ][label.lower()]
        assert abs(ours - probability) <= TOLERANCE, (variant, key, ours, probability)
        worst = max(worst, abs(ours - probability))
    return worst


def test_text_embeddings_equal_the_reference(converted):
    expected = np.load(rf.DATA / "text_embeddings.npz")
    prompts = rf.expected()["prompts"]
    assert len(prompts) == 32
    for variant, folder in converted.items():
        model = load_checkpoint(folder)
        with torch.inference_mode():
            ours = model.encode_text(prompts).numpy()
        assert np.abs(ours - expected[variant]).max() < 1e-5, variant


def test_converted_config_says_how_the_reference_answers(converted):
    config, extra = read_checkpoint_config(converted["cross-attention"])
    assert config.inference_protocol == "reference" and config.totalseg_fast is False
    assert config.prompts_for("atelectasis") == ("Atelectatic.", "Not Atelectatic.")
    assert config.prompts_for("lung nodule") == ("Nodule.", "Not Nodule.")
    assert config.prompts_for("pleural effusion") == ("Pleural effusion.", "Not Pleural effusion.")
    assert len(config.finding_prompts) == 16
    assert any("cross-attention" in note for note in extra["conversion_notes"])
    text_config = json.loads((converted["cross-attention"] / "text_encoder" / "config.json").read_text())
    assert text_config["add_cross_attention"] is False
    model = load_checkpoint(converted["types-on"])
    assert torch.count_nonzero(model.text.model.embeddings.token_type_embeddings.weight) == 0
    assert model.temperature.item() == pytest.approx(0.07)
    # the config round-trips through JSON, and configs written before these keys still load
    assert ModelConfig.from_json(config.to_json()) == config
    old = config.to_dict()
    for key in ("finding_prompts", "inference_protocol", "totalseg_fast"):
        old.pop(key)
    assert ModelConfig.from_dict(old).inference_protocol == "single-pass"


def test_fvlm_analyze_gives_the_reference_probabilities(converted, tmp_path):
    """Sharp temperature (0.002): a dropped atrial appendage or a one-patch shift shows here."""
    out = tmp_path / "out"
    assert main(["analyze", str(rf.DATA / "ct.nii.gz"), "--masks", str(rf.DATA / "total.nii.gz"),
                 "--model", str(converted["types-off"]), "--device", "cpu", "--out", str(out)]) == 0
    document = json.loads((out / "findings.json").read_text())
    scores = {a: v["findings"] for a, v in document["anatomies"].items()}
    assert _check_scores(scores, "types-off") < TOLERANCE


@pytest.fixture(scope="module")
def dicom_head_first(tmp_path_factory):
    """The reference CT in another orientation: a DICOM series stored head first, its masks as a
    RAS NIfTI (the reference's files are LPS, feet first)."""
    from napari_fvlm.core.io.read import read_volume

    from dicom_fixtures import SeriesGeometry, write_ct_series

    folder = tmp_path_factory.mktemp("dicom-head-first")
    hu, _, affine = rf.make_chest_ct(0)
    spacing = rf.CT_SPACING_XYZ
    origin_lps = (-affine[0, 3], -affine[1, 3], affine[2, 3])
    top = len(hu) - 1
    geometry = SeriesGeometry(origin_lps=origin_lps, pixel_spacing=(spacing[1], spacing[0]),
                              slice_offsets=[(top - k) * spacing[2] for k in range(len(hu))])
    write_ct_series(folder / "dicom", hu[::-1], geometry, intercept=-2048.0)
    ct = read_volume(str(folder / "dicom"))
    labels = read_volume(str(rf.reoriented_copy(rf.DATA / "total.nii.gz", folder / "total.nii.gz",
                                                ("R", "A", "S"))))
    return ct, labels


@pytest.fixture(scope="module")
def encoded(converted, dicom_head_first):
    """The CT in another orientation (`dicom_head_first`) encoded once with the reference protocol,
    through the analyzer's own alignment of the masks (vision weights are the same in every variant)."""
    return Analyzer(load_checkpoint(converted["types-off"])).encode(*dicom_head_first)


def test_every_text_variant_and_temperature_matches_in_another_orientation(converted, encoded):
    """Sharp temperature (0.002: types-off, cross-attention) and the default (0.07: types-on)."""
    vision = load_checkpoint(converted["types-off"]).vision.state_dict()
    for variant in rf.TEXT_VARIANTS:
        model = load_checkpoint(converted[variant])
        assert all(torch.equal(vision[k], v) for k, v in model.vision.state_dict().items())
        _check_scores(Analyzer(model).scores(encoded), variant)


def test_prepared_input_matches_the_reference(converted, volumes):
    """Resize, organ merging (heart + atrial appendage), margins, padding and crops as the reference's."""
    processed = rf.expected()["processed"]
    prepared = prepare_reference(*volumes, read_checkpoint_config(converted["types-off"])[0])
    assert list(prepared.image.shape) == processed["shape"]
    # the reference's sums are float32 sums of about 10 million voxels
    assert float(prepared.image.sum(dtype=np.float64)) == pytest.approx(processed["image_sum"], rel=1e-5)
    counts = {str(n): int((prepared.organs == n).sum()) for n in (1, 2, 3, 4)}
    assert counts == processed["organ_voxels"]
    for organ, (start, stop) in prepared.crops.items():
        crop = prepared.image[tuple(slice(a, b) for a, b in zip(start, stop))]
        assert list(crop.shape) == processed["crops"][organ]["shape"]
        assert float(crop.sum(dtype=np.float64)) == pytest.approx(processed["crops"][organ]["sum"], rel=1e-5)


def test_the_resize_is_monai_resized_as_the_reference_calls_it(volumes):
    """The reference merges the organs, then resizes with MONAI's `Resized` (trilinear for the CT,
    nearest for the organs) on the file's (x, y, z) voxel array; the protocol computes the same on
    (z, y, x) without importing MONAI. Checked on the reference's upsampling target and on a
    shrink (real CTs' sub-millimetre pixels), which takes the organ map's gather-first branch."""
    import nibabel as nib
    from monai.transforms import Resize, Resized  # 13-19 s to import: never on the plugin's paths

    from napari_fvlm.core.inference.reference_protocol import resize_box, resized_organs, target_shape

    ct, labels = volumes
    stored_ct = np.asarray(nib.load(rf.DATA / "ct.nii.gz").dataobj).astype(np.float32)
    stored_total = np.asarray(nib.load(rf.DATA / "total.nii.gz").dataobj)
    merged = np.zeros(stored_total.shape, np.float32)  # the reference's organ numbers 1..4
    lobes = [n for n in rf.TOTAL if n.startswith("lung_")]
    for organ, names in enumerate((lobes, ("heart", "atrial_appendage_left"), ("esophagus",), ("aorta",)), 1):
        merged[np.isin(stored_total, [rf.TOTAL[n] for n in names])] = organ
    np.testing.assert_array_equal(stored_ct.T, ct.array)  # the file's voxel order is ours transposed
    for shape in (target_shape(ct, (3.0, 1.0, 1.0)), (40, 50, 61)):
        whole = tuple(slice(0, s) for s in shape)
        resize = Resized(keys=["image", "label"], spatial_size=shape[::-1], mode=("trilinear", "nearest"))
        theirs = resize({"image": torch.from_numpy(stored_ct)[None], "label": torch.from_numpy(merged)[None]})
        ours = resize_box(ct.array, shape, whole)
        # the same interpolation: bit for bit in our axis order; in the reference's order the three
        # axes' weights are summed in another order, float32 rounding apart (values up to ~1000 HU)
        assert np.array_equal(ours, Resize(spatial_size=shape, mode="trilinear")(torch.from_numpy(
            ct.array.astype(np.float32))[None])[0].numpy())
        assert np.abs(ours - theirs["image"][0].numpy().T).max() < 1e-3
        np.testing.assert_array_equal(resized_organs(np.asarray(labels.array), shape),
                                      theirs["label"][0].numpy().T)


def test_protocol_slips_move_sharp_scores(converted, dicom_head_first, encoded, monkeypatch):
    """The test has teeth: the heart's crop 16 voxels off in x moves its sharp-temperature scores."""
    from napari_fvlm.core.anatomy.align import align_labels
    from napari_fvlm.core.inference import reference_protocol

    centred = reference_protocol._centre_crop

    def shifted(first, last, shape):
        start, stop = centred(first, last, shape)
        return start - (0, 0, 16), stop - (0, 0, 16)

    monkeypatch.setattr(reference_protocol, "_centre_crop", shifted)
    analyzer = Analyzer(load_checkpoint(converted["types-off"]))
    ct, labels = dicom_head_first
    slipped = analyzer.scores(reference_protocol.encode_reference(analyzer.model, ct, align_labels(ct, labels),
                                                                  organs=("heart",)))
    scores = analyzer.scores(encoded)
    assert max(abs(slipped["heart"][f] - scores["heart"][f]) for f in scores["heart"]) > 10 * TOLERANCE


def _prepared_arrays(ct, labels, config):
    prepared = prepare_reference(ct, labels, config)
    return prepared.image, prepared.organs, prepared.crops


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("S", "L", "A"), ("P", "I", "R")])
def test_any_nifti_orientation_gives_the_same_model_input(converted, volumes, tmp_path, axcodes):
    from napari_fvlm.core.anatomy.align import align_labels
    from napari_fvlm.core.io.read import read_volume

    config = read_checkpoint_config(converted["types-off"])[0]
    reference = _prepared_arrays(*volumes, config)
    ct = read_volume(str(rf.reoriented_copy(rf.DATA / "ct.nii.gz", tmp_path / "ct.nii.gz", axcodes)))
    labels = read_volume(str(rf.reoriented_copy(rf.DATA / "total.nii.gz", tmp_path / "total.nii.gz", axcodes)))
    image, organs, crops = _prepared_arrays(ct, align_labels(ct, labels), config)
    np.testing.assert_array_equal(image, reference[0])
    np.testing.assert_array_equal(organs, reference[1])
    assert {k: [list(a), list(b)] for k, (a, b) in crops.items()} == \
        {k: [list(a), list(b)] for k, (a, b) in reference[2].items()}


def test_reoriented_files_and_dicom_give_the_reference_model_input(converted, volumes, dicom_head_first):
    """The CT as a DICOM series stored head first, its masks as a RAS NIfTI: the same image, organs
    and crops (and, in test_every_text_variant_..., the reference's probabilities)."""
    from napari_fvlm.core.anatomy.align import align_labels

    ct, labels = dicom_head_first
    config = read_checkpoint_config(converted["types-off"])[0]
    image, organs, crops = _prepared_arrays(ct, align_labels(ct, labels), config)
    reference = _prepared_arrays(*volumes, config)
    assert np.abs(image - reference[0]).max() < 1e-6
    np.testing.assert_array_equal(organs, reference[1])
    assert {k: [list(a), list(b)] for k, (a, b) in crops.items()} == \
        {k: [list(a), list(b)] for k, (a, b) in reference[2].items()}


def test_bad_checkpoints_are_refused_with_one_line(converted, tmp_path, capsys):
    variant = "types-off"
    text = rf.write_text_folder(tmp_path / "text", variant)
    config = ModelConfig.from_dict(rf.tiny_model_config(variant))

    def refused(state, match, text_folder=text):
        path = rf.save_reference_checkpoint(tmp_path / "bad.pth", variant, state)
        with pytest.raises(FvlmInputError, match=match) as error:
            convert_official(path, tmp_path / "out", config=config, text_encoder=text_folder)
        assert "\n" not in str(error.value)
        assert not (tmp_path / "out").exists()

    state = rf.reference_state_dict(variant)
    state["query_tokens"] = torch.zeros(5, rf.WIDTH)
    refused(state, r"wrong shape \['pooling.queries \(5, 768\) != \(4, 768\)'\]")
    state = rf.reference_state_dict(variant)
    del state["text_encoder.encoder.layer.1.output.dense.weight"]
    refused(state, r"missing \['text.model.encoder.layer.1.output.dense.weight'\]")
    state = rf.reference_state_dict(variant)
    del state["temp"]
    refused(state, "no temperature")
    state = rf.reference_state_dict(variant)
    state["text_encoder.embeddings.token_type_embeddings.weight"] = torch.zeros(2, 65)
    refused(state, "wrong shape")
    for key, value, match in [("position_embedding_type", "relative_key", "position embeddings 'relative_key'"),
                              ("fusion_layer", 1, "fusion_layer 1 < 2 layers"),
                              ("model_type", "roberta", "model type 'roberta'")]:
        other = tmp_path / f"text-{key}"
        shutil.copytree(text, other)
        data = json.loads((other / "config.json").read_text())
        data[key] = value
        (other / "config.json").write_text(json.dumps(data))
        refused(rf.reference_state_dict(variant), f"not one the fVLM reference runs: {match}", other)
    # and through the command: one line on stderr, exit status 2
    path = rf.save_reference_checkpoint(tmp_path / "bad.pth", variant, {"temp": torch.tensor(0.07)})
    assert main(["convert-official", str(path), str(tmp_path / "out"), "--text-encoder", str(text)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_temperature_outside_the_clamp_range_is_kept(tmp_path):
    variant = "types-off"
    text = rf.write_text_folder(tmp_path / "text", variant)
    state = rf.reference_state_dict(variant)
    state["temp"] = torch.tensor(0.00093)  # the reference clamps before each step, not after
    path = rf.save_reference_checkpoint(tmp_path / "low.pth", variant, state)
    config = dataclasses.replace(ModelConfig.from_dict(rf.tiny_model_config(variant)))
    folder, notes = convert_official(path, tmp_path / "out", config=config, text_encoder=text)
    assert load_checkpoint(folder).temperature.item() == pytest.approx(0.00093, rel=1e-6)
    assert any("0.00093" in note for note in notes)


def test_training_evaluate_on_a_ct_rate_layout_uses_the_reference_protocol(converted, tmp_path, capsys):
    """`python -m training evaluate --ct-rate ROOT`: the fixture CT as a CT-RATE volume gets the
    reference's probabilities, and the CT-CLIP tables are written."""
    import csv

    from training.__main__ import main as training_main
    from training.ctrate import LABEL_COLUMNS

    root = tmp_path / "ctrate"
    name = "train_1_a_1.nii.gz"
    folder = root / "dataset" / "train" / "train_1" / "train_1_a"
    folder.mkdir(parents=True)
    shutil.copy(rf.DATA / "ct.nii.gz", folder / name)
    (root / "masks").mkdir()
    shutil.copy(rf.DATA / "total.nii.gz", root / "masks" / name)
    for file, row in (("reports.csv", {"VolumeName": name, "Findings_EN": "Emphysema.", "Impressions_EN": ""}),
                      ("labels.csv", {"VolumeName": name, **{c: int(c == "Emphysema") for c in LABEL_COLUMNS}})):
        with open(root / file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(row))
            writer.writeheader()
            writer.writerow(row)
    out = tmp_path / "evaluation"
    assert training_main(["evaluate", "--model", str(converted["types-off"]), "--ct-rate", str(root),
                          "--split", "val", "--val-fraction", "0.999", "--bootstrap", "10", "--out", str(out)]) == 0
    assert '"protocol": "reference"' in capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    assert result["summary"]["protocol"] == "reference" and result["summary"]["samples"] == 1
    _check_scores(result["samples"][0]["scores"], "types-off")
    assert result["samples"][0]["study_labels"]["emphysema"] == 1
    assert (out / "evaluation.md").is_file()
