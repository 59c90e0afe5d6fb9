"""DICOM Segmentations of an analysis: anatomy masks and finding regions (BINARY), probability
maps (FRACTIONAL, PROBABILITY), each frame tied to its source slice.

Arrays come in canonical (z, y, x) order on the CT grid and go out in the series' own frame order
(`SourceSeries.frames`), so the frames carry the source slices' own positions, whatever the
series' orientation and slice order. Segments may overlap (a lobe lies in its lung).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.sr.coding import Code

from ..anatomy.catalog import AnatomyGroup, group_masks, group_set
from ..errors import FvlmInputError
from ..volume import Volume
from .codes import ANATOMY_CATEGORY, FINDING_CATEGORY, anatomy_code, finding_code, side_code
from .series import SourceSeries

PROBABILITY_LEVELS = 255  # FRACTIONAL values are stored as 0..255 (as the NIfTI heatmaps)
MANUFACTURER = "napari-fvlm"
MODEL_NAME = "fVLM"


@dataclass
class Segment:
    """One segment to write: what it is (coded), on which side, and its values on the CT grid."""

    label: str
    category: Code
    kind: Code
    side: Code | None
    values: np.ndarray  # canonical (z, y, x): bool for BINARY, probabilities in [0, 1] for FRACTIONAL
    tracking_id: str


def anatomy_segments(labels: Volume, group_set_name: str, anatomies) -> list[Segment]:
    """One segment per anatomy of the model found in the label map (empty ones are left out)."""
    groups = [g for g in group_set(group_set_name) if g.name in set(anatomies)]
    masks = group_masks(labels.array, groups)
    return [Segment(g.display, ANATOMY_CATEGORY, anatomy_code(g), side_code(g), masks[g.name], f"anatomy {g.name}")
            for g in groups if masks[g.name].any()]


def _group(group_set_name: str, anatomy: str) -> AnatomyGroup:
    return next(g for g in group_set(group_set_name) if g.name == anatomy)


def finding_segments(maps, group_set_name: str, regions: bool) -> list[Segment]:
    """Segments of finding maps, ``maps`` = [(anatomy, finding, probabilities on the CT grid,
    threshold)]: the region at or above the threshold (``regions``, BINARY) or the probabilities."""
    out = []
    for anatomy, finding, values, threshold in maps:
        group = _group(group_set_name, anatomy)
        shown = values >= threshold if regions else np.clip(values, 0.0, 1.0)
        what = "region" if regions else "probability"
        out.append(Segment(f"{finding} {what}, {group.display}"[:64], FINDING_CATEGORY, finding_code(finding),
                           side_code(group), shown, f"{finding} in {anatomy}"))
    return out


def _description(number: int, segment: Segment, algorithm):
    import highdicom as hd

    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=segment.label, segmented_property_category=segment.category,
        segmented_property_type=segment.kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_id=segment.tracking_id, tracking_uid=hd.UID(),
    )
    if segment.side is not None:  # laterality is a modifier of the property type (DICOM PS3.3 C.8.20.2)
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(segment.side)]
    return description


def algorithm_identification(model_name: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from ... import __version__

    return hd.AlgorithmIdentificationSequence(name=f"fVLM {model_name}"[:64],
                                              family=codes.DCM.ArtificialIntelligence, version=__version__)


def build_segmentation(series: SourceSeries, segments: list[Segment], *, fractional: bool, description: str,
                       series_number: int, model_name: str):
    """A highdicom Segmentation of ``segments`` referencing the source series."""
    import highdicom as hd

    from ... import __version__

    if not segments:
        raise FvlmInputError(f"Nothing to write in the {description} segmentation: no segment is non-empty.")
    stacked = np.stack([series.frames(s.values) for s in segments], axis=-1)
    if fractional:
        stacked = stacked.astype(np.float32)
    algorithm = algorithm_identification(model_name)
    kind = hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY
    extra = {"fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
             "max_fractional_value": PROBABILITY_LEVELS} if fractional else {}
    return hd.seg.Segmentation(
        source_images=series.datasets, pixel_array=stacked, segmentation_type=kind,
        segment_descriptions=[_description(n, s, algorithm) for n, s in enumerate(segments, start=1)],
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions=__version__,
        device_serial_number="0", series_description=description[:64], content_label="FVLM",
        content_description=f"{description} (research use only; not for diagnosis)"[:64], **extra,
    )
