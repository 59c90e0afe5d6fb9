"""Stand-in TotalSegmentator weights, so tests run TotalSegmentator's real code without downloads.

Writes, into a temporary TOTALSEG_HOME_DIR, a tiny nnU-Net model for each dataset the `total`
task needs: dataset.json (the 117 classes), plans.json (a two-stage PlainConvUNet at the fast
model's 3 mm) and fold_0/checkpoint_final.pth (this file's own tensors). The weights are set,
not trained: the network passes the normalised intensity straight through and labels every
voxel brighter than the image's mean as one class, so a test knows the right answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_fvlm.core.anatomy.totalseg import required_models
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS, TOTAL_CLASSES
from napari_fvlm.core.volume import Volume

STANDIN_PATCH_ZYX = (48, 64, 64)  # one tile covers the test CT, so instance norm sees all of it
STANDIN_FEATURES = (4, 8)
BRIGHT_CLASS = "liver"


def _architecture() -> dict:
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 2, "features_per_stage": list(STANDIN_FEATURES),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
            "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _plans(dataset_name: str) -> dict:
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": list(STANDIN_PATCH_ZYX),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3000.0, "mean": 0.0, "median": 0.0, "min": -1024.0,
            "percentile_00_5": -1024.0, "percentile_99_5": 1500.0, "std": 500.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(STANDIN_PATCH_ZYX),
            "median_image_size_in_voxels": list(STANDIN_PATCH_ZYX), "spacing": [3.0, 3.0, 3.0],
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": resampling, "resampling_fn_seg": resampling,
            "resampling_fn_probabilities": resampling,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": _architecture(), "batch_dice": True,
        }},
    }


def _threshold_weights(bright_class: int) -> dict:
    """PlainConvUNet weights: intensity -> (encoder stage 0, skip, decoder) -> `bright_class` logit."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    kwargs = dict(_architecture()["arch_kwargs"])
    kwargs.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
    network = PlainConvUNet(input_channels=1, num_classes=len(TOTAL_CLASSES) + 1, deep_supervision=False,
                            **kwargs)
    weights = network.state_dict()
    for name, tensor in weights.items():
        if ".conv." in name or "transpconvs" in name or "seg_layers" in name:
            tensor.zero_()
    centre = (1, 1, 1)
    weights["encoder.stages.0.0.convs.0.conv.weight"][(0, 0, *centre)] = 1.0  # input -> feature 0
    skip_channel = STANDIN_FEATURES[0]  # decoder input = [upsampled, skip]; skip feature 0 follows
    weights["decoder.stages.0.convs.0.conv.weight"][(0, skip_channel, *centre)] = 1.0
    weights["decoder.seg_layers.0.weight"][bright_class, 0] = 10.0
    return weights


def write_standin_models(home: Path, bright_class: str = BRIGHT_CLASS, fast: bool = True,
                         roi_subset=None) -> list[Path]:
    """Write stand-in models for every dataset the `total` task needs into ``home``'s weights folder."""
    import torch

    results = Path(home) / "nnunet" / "results"
    labels = {"background": 0, **{name: idx for idx, name in TOTAL_CLASSES.items()}}
    written = []
    for model in required_models(fast, roi_subset):
        folder = results / model
        (folder / "fold_0").mkdir(parents=True, exist_ok=True)
        dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
        (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
        (folder / "plans.json").write_text(json.dumps(_plans(model.parts[0]), indent=1))
        trainer = model.parts[1].split("__")[0]
        checkpoint = {"network_weights": _threshold_weights(TOTAL_CLASS_IDS[bright_class]),
                      "init_args": {"plans": None, "configuration": "3d_fullres", "fold": 0,
                                    "dataset_json": dataset},
                      "trainer_name": trainer, "inference_allowed_mirroring_axes": None}
        torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
        written.append(folder)
    return written


def bright_sphere_ct(shape=STANDIN_PATCH_ZYX, spacing=3.0, centre=(20, 24, 40), radius=12,
                     seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A small soft-tissue CT (canonical LPS, ``spacing`` mm) with one bright sphere off centre."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    sphere = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
    array = (-100 + 3 * rng.standard_normal(shape)).astype(np.int16)
    array[sphere] = 300
    affine = np.diag([-spacing, -spacing, spacing, 1.0])  # i -> Left, j -> Posterior, k -> Superior
    affine[:3, 3] = (90.0, 120.0, -40.0)
    return Volume(array, affine), sphere


@pytest.fixture
def standin_totalseg_home(tmp_path, monkeypatch) -> Path:
    """A TOTALSEG_HOME_DIR holding stand-in weights for the fast `total` task."""
    home = tmp_path / "totalseg-home"
    write_standin_models(home)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    return home


@pytest.fixture
def empty_totalseg_home(tmp_path, monkeypatch) -> Path:
    """A TOTALSEG_HOME_DIR without any weights."""
    home = tmp_path / "empty-totalseg-home"
    home.mkdir()
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    return home
