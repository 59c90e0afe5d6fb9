"""Which findings are scored for which anatomy, and the zero-shot prompt pair for each.

The CT-RATE findings (docs/method.md, 16 of its 18 labels) plus those of the synthetic phantom.
A fine anatomy (a lobe, the left lung) is scored for its organ's findings.
"""

from __future__ import annotations

CT_RATE_FINDINGS: dict[str, tuple[str, ...]] = {
    "lung": ("emphysema", "atelectasis", "lung nodule", "lung opacity", "pulmonary fibrotic sequela",
             "pleural effusion", "mosaic attenuation pattern", "peribronchial thickening", "consolidation",
             "bronchiectasis", "interlobular septal thickening"),
    "heart": ("cardiomegaly", "pericardial effusion", "coronary artery wall calcification"),
    "esophagus": ("hiatal hernia",),
    "aorta": ("arterial wall calcification",),
}

PHANTOM_FINDINGS: dict[str, tuple[str, ...]] = {
    "lung": ("lung nodule", "pleural effusion", "consolidation", "atelectasis", "emphysema",
             "ground-glass opacity"),
    "heart": ("cardiomegaly", "pericardial effusion", "coronary artery calcification"),
    "aorta": ("arterial wall calcification",),
    "esophagus": ("hiatal hernia",),
    "liver": ("liver lesion",),
}

FINDING_SETS = {"ct-rate": CT_RATE_FINDINGS, "phantom": PHANTOM_FINDINGS}

# The official fVLM evaluation's (positive, negative) sentences per CT-RATE finding, word for word
# (its eval.py): four are worded differently from the label, and "Not" keeps the label's capital.
REFERENCE_PROMPTS: dict[str, tuple[str, str]] = {
    "emphysema": ("Emphysema.", "Not Emphysema."),
    "atelectasis": ("Atelectatic.", "Not Atelectatic."),
    "lung nodule": ("Nodule.", "Not Nodule."),
    "lung opacity": ("Opacity.", "Not Opacity."),
    "pulmonary fibrotic sequela": ("Pulmonary fibrotic.", "Not Pulmonary fibrotic."),
    "pleural effusion": ("Pleural effusion.", "Not Pleural effusion."),
    "mosaic attenuation pattern": ("Mosaic attenuation pattern.", "Not Mosaic attenuation pattern."),
    "peribronchial thickening": ("Peribronchial thickening.", "Not Peribronchial thickening."),
    "consolidation": ("Consolidation.", "Not Consolidation."),
    "bronchiectasis": ("Bronchiectasis.", "Not Bronchiectasis."),
    "interlobular septal thickening": ("Interlobular septal thickening.", "Not Interlobular septal thickening."),
    "cardiomegaly": ("Cardiomegaly.", "Not Cardiomegaly."),
    "pericardial effusion": ("Pericardial effusion.", "Not Pericardial effusion."),
    "coronary artery wall calcification": ("Coronary artery wall calcification.",
                                           "Not Coronary artery wall calcification."),
    "hiatal hernia": ("Hiatal hernia.", "Not Hiatal hernia."),
    "arterial wall calcification": ("Arterial wall calcification.", "Not Arterial wall calcification."),
}

def organ_of(anatomy: str) -> str:
    """The organ whose findings an anatomy group is scored for (lobes and sides -> lung)."""
    if anatomy.startswith("lung"):
        return "lung"
    return {"kidneys": "kidney"}.get(anatomy, anatomy)


def findings_for(anatomy: str, finding_set: str = "ct-rate") -> tuple[str, ...]:
    """Findings scored for ``anatomy`` in a finding set ("ct-rate", "phantom" or "all")."""
    if finding_set == "all":
        merged = []
        for table in FINDING_SETS.values():
            merged += [f for f in table.get(organ_of(anatomy), ()) if f not in merged]
        return tuple(merged)
    return FINDING_SETS[finding_set].get(organ_of(anatomy), ())


def anatomy_displays(group_set_name: str) -> dict[str, str]:
    """{anatomy: display name, capitalised} of a group set, the words the normal template uses."""
    from ..anatomy.catalog import group_set

    return {g.name: g.sentence_start for g in group_set(group_set_name)}


def prompt_pair(finding: str, positive: str, negative: str, anatomy: str = "") -> tuple[str, str]:
    """(positive, negative) prompt texts from the model config's templates, capitalised like
    report sentences. Templates may name ``{finding}`` and ``{anatomy}`` (the anatomy's display
    name, as in the training texts' normal template "{anatomy} shows no significant abnormalities.")."""
    def fill(template: str) -> str:
        text = template.format(finding=finding, anatomy=anatomy)
        return text[:1].upper() + text[1:]
    return fill(positive), fill(negative)


def finding_prompts(config, anatomy: str, finding: str) -> tuple[str, str]:
    """The (positive, negative) prompts a model config scores ``finding`` on ``anatomy`` with: its
    stored sentences when its config has them (`ModelConfig.finding_prompts`, e.g. the official
    checkpoint's), else its templates. The one rule for scores, heatmaps and training's labels."""
    stored = config.prompts_for(finding)
    if stored:
        return stored
    display = anatomy_displays(config.anatomy_group_set).get(anatomy, anatomy)
    return prompt_pair(finding, config.prompt_positive, config.prompt_negative, display)


def label_slots(config, finding_set: str) -> list[tuple[str, str]]:
    """Every (anatomy, finding) a model config scores in a finding set, in anatomy order."""
    return [(a, f) for a in config.anatomies for f in findings_for(a, finding_set)]
