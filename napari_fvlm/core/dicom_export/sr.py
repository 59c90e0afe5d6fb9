"""The per-anatomy findings as a DICOM Comprehensive 3D SR: a TID 1500 Measurement Report.

One TID 1411 volumetric ROI group per anatomy x finding, its region the anatomy's segment of the
anatomy Segmentation (so viewers outline it), its finding type the finding, its site the anatomy
with the patient's side; it holds the model's probability (TID 300 measurement, unit "no units")
and, for a calibrated model, whether the score is above the finding's threshold (a qualitative
evaluation Present / Absent). A machine-made report: never marked complete or verified.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes

from ..anatomy.catalog import group_set
from ..inference.export import RESEARCH_NOTICE
from ..report.table import FindingsTable
from .codes import anatomy_code, finding_code, local_code, side_code
from .seg import MANUFACTURER
from .series import SourceSeries

CALIBRATED_METHOD = local_code("platt-calibrated zero-shot probability")
RAW_METHOD = local_code("raw zero-shot probability, uncalibrated")


def _segment_numbers(anatomy_seg) -> dict[str, int]:
    """{anatomy: segment number} from the anatomy Segmentation's tracking ids ("anatomy <name>")."""
    return {str(item.TrackingID).removeprefix("anatomy "): int(item.SegmentNumber)
            for item in anatomy_seg.SegmentSequence}


def _group(table: FindingsTable, anatomy: str, finding: str, segment, algorithm, group):
    import highdicom as hd

    scored = table.score(anatomy, finding)
    value = scored.probability if scored is not None else table.scores[anatomy][finding]
    measurement = hd.sr.Measurement(name=codes.DCM.Probability, value=round(float(value), 6),
                                    unit=codes.UCUM.NoUnits, algorithm_id=algorithm,
                                    method=CALIBRATED_METHOD if scored is not None else RAW_METHOD)
    evaluations = []
    if scored is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(finding_code(finding),
                                                       codes.SCT.Present if scored.above else codes.SCT.Absent))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{finding} in {anatomy}"[:64]),
        referenced_segment=segment, finding_type=finding_code(finding),
        finding_sites=[hd.sr.FindingSite(anatomy_code(group), laterality=side_code(group))],
        measurements=[measurement], qualitative_evaluations=evaluations or None,
    )


def findings_report(series: SourceSeries, table: FindingsTable, anatomy_seg, *, series_number: int):
    """A highdicom Comprehensive3DSR of ``table``, referencing the CT series and ``anatomy_seg``
    (anatomies without a segment there were not found in the masks and are left out)."""
    import highdicom as hd

    from ... import __version__

    numbers = _segment_numbers(anatomy_seg)
    groups = {g.name: g for g in group_set(table.group_set)}
    calibration = "calibrated (platt, roc-corner threshold)" if table.is_calibrated else "uncalibrated"
    algorithm = hd.sr.AlgorithmIdentification(name=f"fVLM {table.model_name}"[:64], version=__version__,
                                              parameters=[calibration])
    measurement_groups = []
    for anatomy, findings in table.scores.items():
        if anatomy not in numbers:
            continue
        segment = hd.sr.ReferencedSegment.from_segmentation(anatomy_seg, segment_number=numbers[anatomy])
        measurement_groups += [_group(table, anatomy, f, segment, algorithm, groups[anatomy]) for f in findings]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=f"fVLM {table.model_name}"[:64], manufacturer_name=MANUFACTURER))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ComputedTomography, imaging_measurements=measurement_groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*series.datasets, anatomy_seg], content=report[0], series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=False, is_final=False, is_verified=False,
        series_description=f"fVLM findings ({RESEARCH_NOTICE.rstrip('.').lower()})"[:64],
    )
