"""napari sample data: the synthetic chest CT phantom with its anatomy and lesion masks."""

from __future__ import annotations

from ._layers import volume_layer_data


def chest_ct_phantom(seed: int = 0) -> list[tuple]:
    """CT, TotalSegmentator-style anatomy labels and lesion labels of phantom ``seed``."""
    from .core.phantom import generate_phantom

    phantom = generate_phantom(seed)
    ct = volume_layer_data(phantom.ct, f"phantom {seed} CT")
    anatomy = volume_layer_data(phantom.anatomy, f"phantom {seed} anatomy")
    lesions = volume_layer_data(phantom.lesions, f"phantom {seed} lesions")
    anatomy[1]["visible"] = False
    ct[1]["metadata"]["report"] = phantom.report
    return [ct, anatomy, lesions]
