"""Synthetic chest CT phantom: CT, TotalSegmentator-style anatomy labels, lesion labels and a
radiology report, with ground truth for every finding. Used where no real data can be had:
napari sample data, `fvlm phantom`, tests and training a small model."""

from .catalog import FINDINGS, FindingKind, FindingRequest
from .generate import Phantom, PlacedFinding, generate_phantom
from .io import write_phantom

__all__ = ["FINDINGS", "FindingKind", "FindingRequest", "Phantom", "PlacedFinding", "generate_phantom",
           "write_phantom"]
