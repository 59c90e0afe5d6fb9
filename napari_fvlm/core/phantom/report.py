"""Radiology report text for a phantom: varied wording, one anatomy per sentence.

Wording varies with the seed (synonyms, lobe names written out or abbreviated, sentence
templates) but stays parseable: each finding sentence holds one of its kind's `terms`, a lobe
phrase from `LOBE_PHRASES` or a side, and sizes as whole millimetres ("12 mm"). No sentence
holds an inner full stop, so splitting on ". " recovers the sentences.
"""

from __future__ import annotations

import numpy as np

LOBE_PHRASES: dict[str, tuple[str, ...]] = {
    "lung_upper_lobe_left": ("left upper lobe", "LUL", "upper lobe of the left lung"),
    "lung_lower_lobe_left": ("left lower lobe", "LLL", "lower lobe of the left lung"),
    "lung_upper_lobe_right": ("right upper lobe", "RUL", "upper lobe of the right lung"),
    "lung_middle_lobe_right": ("right middle lobe", "RML", "middle lobe of the right lung"),
    "lung_lower_lobe_right": ("right lower lobe", "RLL", "lower lobe of the right lung"),
}
SENTENCE_KEYS = ("lung", "lung_left", "lung_right", "heart", "aorta", "esophagus", "trachea",
                 "liver", "spleen", "kidney", "stomach")

_NODULE = ("nodule", "pulmonary nodule", "solid nodule", "nodular opacity", "lung nodule")
_FINDING = {  # kind: (findings sentence templates, impression line templates)
    "lung nodule": (
        ("{A} {size} mm {nodule} is seen in the {lobe}.", "There is {a} {size} mm {nodule} in the {lobe}.",
         "In the {lobe} there is a {nodule} measuring {size} mm."),
        ("{size} mm {nodule} in the {lobe}.", "{Nodule} in the {lobe} ({size} mm).")),
    "pleural effusion": (
        ("There is a {severity} {side} pleural effusion.", "{Severity} {side}-sided pleural effusion.",
         "A {severity} amount of {side} pleural fluid is present."),
        ("{Severity} {side} pleural effusion.", "{Side} pleural effusion.")),
    "consolidation": (
        ("There is consolidation in the {lobe}.", "An area of consolidation is present in the {lobe}.",
         "Airspace consolidation is noted in the {lobe}, measuring {size} mm."),
        ("Consolidation in the {lobe}.", "{Lobe} consolidation.")),
    "atelectasis": (
        ("Atelectasis is noted in the {lobe}.", "Subsegmental atelectasis in the {lobe}.",
         "There are atelectatic changes in the {lobe}."),
        ("Atelectasis in the {lobe}.", "{Lobe} atelectasis.")),
    "emphysema": (
        ("Centrilobular emphysema in the {lobe}.", "Emphysematous changes are seen in the {lobe}.",
         "There is {grade} emphysema in the {lobe}."),
        ("{Grade} emphysema, {lobe}.", "Emphysema in the {lobe}.")),
    "ground-glass opacity": (
        ("{A} {size} mm ground-glass opacity is seen in the {lobe}.",
         "Hazy ground glass opacity in the {lobe}.",
         "There is an area of ground-glass attenuation in the {lobe}."),
        ("Ground-glass opacity in the {lobe}.", "{Lobe} ground glass opacity.")),
    "lung opacity": (
        ("An ill-defined opacity is present in the {lobe}.", "Patchy opacity in the {lobe}.",
         "There is a parenchymal opacity in the {lobe} measuring {size} mm."),
        ("Ill-defined opacity in the {lobe}.", "Patchy opacity, {lobe}.")),
    "bronchiectasis": (
        ("Cylindrical bronchiectasis is seen in the {lobe}.",
         "Bronchiectatic airways are noted in the {lobe}.",
         "There is bronchiectasis in the {lobe} with thick-walled dilated bronchi."),
        ("Bronchiectasis in the {lobe}.", "{Lobe} bronchiectasis.")),
    "cardiomegaly": (
        ("The heart is enlarged.", "There is cardiomegaly.", "Cardiomegaly is present."),
        ("Cardiomegaly.", "Enlarged heart (cardiomegaly).")),
    "pericardial effusion": (
        ("There is a {severity} pericardial effusion.", "{Severity} amount of pericardial fluid.",
         "A {severity} pericardial effusion measuring up to {size} mm is present."),
        ("{Severity} pericardial effusion.", "Pericardial effusion.")),
    "coronary artery calcification": (
        ("Coronary artery calcifications are present in the {vessels}.",
         "There is calcification of the coronary arteries.",
         "Calcified coronary plaque is noted in the {vessels}."),
        ("Coronary artery calcification.", "Coronary calcification ({vessels}).")),
    "arterial wall calcification": (
        ("Aortic wall calcifications are present in the {segments}.",
         "There is atherosclerotic calcification of the aortic wall.",
         "Calcified aortic plaques are noted along the {segments}."),
        ("Aortic wall calcification.", "Atherosclerotic aortic calcification.")),
    "hiatal hernia": (
        ("There is a {severity} hiatal hernia.", "A {severity} sliding hiatal hernia is present.",
         "A {severity} hiatus hernia is noted."),
        ("{Severity} hiatal hernia.", "Hiatal hernia.")),
    "liver lesion": (
        ("{A} {size} mm hypodense lesion is seen in the liver.",
         "There is {a} {size} mm hypoattenuating lesion in the liver.",
         "Focal hypodense liver lesion measuring {size} mm."),
        ("{size} mm hypodense liver lesion.", "Hypodense hepatic lesion ({size} mm).")),
}
_NORMAL = {  # wordings of the normal statement of each group
    "pleura": ("No pleural effusion.", "No pleural effusion or pneumothorax.", "There is no pleural fluid."),
    "heart_size": ("The heart is normal in size.", "Heart size is normal.", "Normal heart size."),
    "pericardium": ("No pericardial effusion.", "There is no pericardial effusion."),
    "aorta": ("The thoracic aorta is normal in caliber.", "Normal caliber of the thoracic aorta.",
              "The aorta is unremarkable."),
    "trachea": ("The trachea and main bronchi are patent.", "The central airways are patent."),
    "esophagus": ("The esophagus is unremarkable.", "No hiatal hernia.",
                  "The esophagus is normal in caliber."),
    "liver": ("The liver is unremarkable.", "No focal liver lesion.",
              "The liver is normal in size and attenuation."),
    "spleen": ("The spleen is unremarkable.", "The spleen is normal in size."),
    "kidney": ("The visualized kidneys are unremarkable.",
               "The imaged portions of both kidneys are unremarkable."),
    "stomach": ("The stomach is unremarkable.", "The stomach is partially distended and unremarkable."),
}
_LUNG_CLEAR = ("The lungs are clear.", "Both lungs are clear.", "The lungs are well aerated and clear.")
_LUNG_NEGATIONS = {"lung nodule": "suspicious pulmonary nodule", "consolidation": "focal consolidation",
                   "ground-glass opacity": "ground-glass opacity", "emphysema": "emphysema"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _severity(name: str, size: float) -> str:
    limits = {"pleural effusion": (20, 35), "pericardial effusion": (8, 13), "hiatal hernia": (45, 60)}
    low, high = limits.get(name, (20, 35))
    return "small" if size < low else "moderate" if size < high else "large"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(name: str, anatomy: str, side: str | None, size_mm: float, details: dict,
             rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression line) for one finding."""
    count = details.get("count", 0)
    size = f"{round(size_mm):d}"
    article = "an" if size.startswith("8") or size in ("11", "18") else "a"
    fields = {"size": size, "a": article, "nodule": _pick(rng, _NODULE),
              "lobe": _pick(rng, LOBE_PHRASES[anatomy]) if anatomy in LOBE_PHRASES else anatomy,
              "side": side or "", "severity": _severity(name, size_mm),
              "grade": "mild" if count < 12 else "moderate" if count < 20 else "severe",
              "vessels": _join(details.get("vessels", ["coronary arteries"])),
              "segments": _join(details.get("segments", ["thoracic aorta"]))}
    fields.update({k.capitalize(): v[:1].upper() + v[1:] for k, v in fields.items()})
    sentences, lines = _FINDING[name]
    if name == "atelectasis" and details.get("passive"):
        sentences = ("Passive atelectasis of the {lobe}.", "Compressive atelectasis in the {lobe}.")
    sentence, line = _pick(rng, sentences).format(**fields), _pick(rng, lines).format(**fields)
    return sentence[:1].upper() + sentence[1:], line[:1].upper() + line[1:]


def normal_sentences(present: list[tuple[str, str | None]],
                     rng: np.random.Generator) -> list[tuple[str, str]]:
    """Normal statements and negations, with their keys, for what has no finding.
    ``present``: (finding name, side) of every finding in the phantom."""
    names = {name for name, _ in present}
    lung_sides = {side for name, side in present if side}
    out: list[tuple[str, str]] = []
    if not lung_sides:
        out.append((_pick(rng, _LUNG_CLEAR), "lung"))
    elif len(lung_sides) == 1:
        other = "right" if "left" in lung_sides else "left"
        out.append((f"The {other} lung is clear.", f"lung_{other}"))
    absent = [words for kind, words in _LUNG_NEGATIONS.items() if kind not in names]
    if absent:
        chosen = [absent[i] for i in sorted(rng.choice(len(absent), min(2, len(absent)), replace=False))]
        out.append((f"No {' or '.join(chosen)}.", "lung"))
    effusion_sides = {side for name, side in present if name == "pleural effusion"}
    if not effusion_sides:
        out.append((_pick(rng, _NORMAL["pleura"]), "lung"))
    elif len(effusion_sides) == 1:
        other = "right" if "left" in effusion_sides else "left"
        out.append((f"No {other} pleural effusion.", f"lung_{other}"))
    for group, key, kinds in (("heart_size", "heart", ("cardiomegaly",)),
                              ("pericardium", "heart", ("pericardial effusion",)),
                              ("aorta", "aorta", ("arterial wall calcification",)),
                              ("trachea", "trachea", ()), ("esophagus", "esophagus", ("hiatal hernia",)),
                              ("liver", "liver", ("liver lesion",)), ("spleen", "spleen", ()),
                              ("kidney", "kidney", ()), ("stomach", "stomach", ("hiatal hernia",))):
        if not names.intersection(kinds):
            out.append((_pick(rng, _NORMAL[group]), key))
    return out


_ORDER = {key: i for i, key in enumerate(("lung", "lung_right", "lung_left", "heart", "aorta", "trachea",
                                          "esophagus", "liver", "spleen", "kidney", "stomach"))}


def compose(findings: list[tuple[str, str]], impressions: list[tuple[str, str]],
            normals: list[tuple[str, str]], rng: np.random.Generator) -> tuple[str, list, list]:
    """The report text, its findings sentences and its impression lines, each with its key.
    Sentences are ordered by anatomy, as a radiologist reads a chest CT."""
    sentences = sorted(findings + normals, key=lambda item: _ORDER[item[1]])
    numbered = False
    if impressions:
        numbered = len(impressions) > 1 and rng.random() < 0.5
        lines = [(f"{i}. {text}" if numbered else text, key)
                 for i, (text, key) in enumerate(impressions, 1)]
    else:
        lines = [(_pick(rng, ("No acute abnormality.", "No acute cardiopulmonary abnormality.")), "")]
    separator = "\n" if numbered else " "
    text = ("FINDINGS: " + " ".join(s for s, _ in sentences) + "\n\nIMPRESSION:" + separator
            + separator.join(s for s, _ in lines) + "\n")
    return text, sentences, lines
