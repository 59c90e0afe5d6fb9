"""The finding kinds the phantom can show, and how a request for one is checked and placed.

A request names a kind and, optionally, where: a side ("left", "right"), a `total` class name
("lung_lower_lobe_left") or a lobe as a radiologist writes it ("left lower lobe", "LLL").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FvlmInputError
from .tissue import LOBES, LOBES_LEFT, LOBES_RIGHT

LOBE_ABBREVIATIONS = {"lul": "lung_upper_lobe_left", "lll": "lung_lower_lobe_left",
                      "rul": "lung_upper_lobe_right", "rml": "lung_middle_lobe_right",
                      "rll": "lung_lower_lobe_right"}


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding.

    ``anatomies``: `total` classes its lesion voxels lie in; ``focal``: a small lesion one can
    point at; ``sides``: laterality options (None: not lateral); ``report_key``: the anatomy its
    report sentences concern ("lung" is made "lung_left"/"lung_right" by the side); ``terms``:
    words that name it in reports (lower case); ``preferred``: classes random placement favours.
    """

    name: str
    anatomies: tuple[str, ...]
    focal: bool
    sides: tuple[str | None, ...]
    report_key: str
    terms: tuple[str, ...]
    preferred: tuple[str, ...] = ()
    once: bool = False
    probability: float = 0.3


def _lung(name, focal, terms, preferred=(), probability=0.3):
    return FindingKind(name, LOBES, focal, ("left", "right"), "lung", terms, preferred,
                       probability=probability)


_KINDS = (
    _lung("pleural effusion", False, ("pleural effusion", "pleural fluid"),
          ("lung_lower_lobe_left", "lung_lower_lobe_right")),
    _lung("atelectasis", False, ("atelectasis", "atelectatic"),
          ("lung_lower_lobe_left", "lung_lower_lobe_right", "lung_middle_lobe_right")),
    _lung("consolidation", True, ("consolidation",)),
    _lung("bronchiectasis", False, ("bronchiectasis", "bronchiectatic"),
          ("lung_lower_lobe_left", "lung_lower_lobe_right"), probability=0.15),
    _lung("ground-glass opacity", True, ("ground-glass", "ground glass")),
    _lung("lung opacity", True, ("ill-defined opacity", "patchy opacity", "parenchymal opacity",
                                 "lung opacity"), probability=0.15),
    _lung("emphysema", False, ("emphysema", "emphysematous"),
          ("lung_upper_lobe_left", "lung_upper_lobe_right")),
    _lung("lung nodule", True, ("nodule", "nodular opacity")),
    FindingKind("cardiomegaly", ("heart",), False, (None,), "heart",
                ("cardiomegaly", "heart is enlarged", "enlarged heart", "cardiac enlargement"),
                once=True),
    FindingKind("pericardial effusion", ("heart",), False, (None,), "heart",
                ("pericardial effusion", "pericardial fluid"), once=True),
    FindingKind("coronary artery calcification", ("heart",), False, (None,), "heart",
                ("coronary artery calcification", "coronary calcification",
                 "calcification of the coronary arteries", "calcified coronary"), once=True),
    FindingKind("arterial wall calcification", ("aorta",), False, (None,), "aorta",
                ("aortic wall calcification", "calcification of the aortic wall",
                 "aortic calcification", "calcified aortic plaque"), once=True),
    FindingKind("hiatal hernia", ("stomach",), False, (None,), "esophagus",
                ("hiatal hernia", "hiatus hernia"), once=True),
    FindingKind("liver lesion", ("liver",), True, (None,), "liver",
                ("liver lesion", "hepatic lesion", "hypodense lesion", "hypoattenuating lesion")),
)

FINDINGS: dict[str, FindingKind] = {kind.name: kind for kind in _KINDS}
_ALIASES = {"nodule": "lung nodule", "pulmonary nodule": "lung nodule",
            "ground glass opacity": "ground-glass opacity", "ggo": "ground-glass opacity",
            "coronary artery wall calcification": "coronary artery calcification",
            "hiatus hernia": "hiatal hernia", "effusion": "pleural effusion"}
# large regions first so small lesions go where nothing else is; specks before the heart they sit on
PAINT_ORDER = ("pleural effusion", "atelectasis", "consolidation", "bronchiectasis",
               "ground-glass opacity", "lung opacity", "emphysema", "lung nodule",
               "pericardial effusion", "coronary artery calcification", "cardiomegaly",
               "arterial wall calcification", "hiatal hernia", "liver lesion")


@dataclass(frozen=True)
class FindingRequest:
    """Ask for one finding: ``name`` from `FINDINGS`, ``where`` a side, class or lobe (or None)."""

    name: str
    where: str | None = None

    @classmethod
    def parse(cls, text: str) -> FindingRequest:
        """'lung nodule:left lower lobe' -> FindingRequest('lung nodule', 'left lower lobe')."""
        name, _, where = text.partition(":")
        return cls(name.strip(), where.strip() or None)


@dataclass(frozen=True)
class Placement:
    """A checked request: its kind and the class (and side) it goes into."""

    kind: FindingKind
    anatomy: str
    side: str | None


def _normal(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").split())


def finding_kind(name: str) -> FindingKind:
    key = _normal(name)
    key = _ALIASES.get(key, key)
    if key not in FINDINGS:
        raise FvlmInputError(f"unknown finding {name!r}; valid findings are: {', '.join(FINDINGS)}.")
    return FINDINGS[key]


def _lobe_of(where: str) -> str | None:
    """A lobe class from 'lung_lower_lobe_left', 'left lower lobe' or 'LLL'."""
    key = _normal(where)
    if key in LOBE_ABBREVIATIONS:
        return LOBE_ABBREVIATIONS[key]
    for lobe in LOBES:
        _, level, _, side = lobe.split("_")
        if key in (_normal(lobe), f"{side} {level} lobe"):
            return lobe
    return None


def _side_of(anatomy: str) -> str | None:
    return "left" if anatomy.endswith("_left") else "right" if anatomy.endswith("_right") else None


def place(request: FindingRequest, rng: np.random.Generator) -> Placement:
    """Check a request and choose its class: random among the allowed ones where not given."""
    kind = finding_kind(request.name)
    choices = kind.preferred or kind.anatomies
    if request.where is not None:
        key = _normal(request.where)
        lobe = _lobe_of(key)
        if key in ("left", "right") and key in kind.sides:
            side_lobes = LOBES_LEFT if key == "left" else LOBES_RIGHT
            choices = [c for c in choices if c in side_lobes] or [c for c in kind.anatomies
                                                                  if c in side_lobes]
        elif lobe is not None and lobe in kind.anatomies:
            choices = [lobe]
        elif key.replace(" ", "_") in kind.anatomies:
            choices = [key.replace(" ", "_")]
        else:
            places = [s for s in kind.sides if s] + list(kind.anatomies)
            raise FvlmInputError(f"a {kind.name} cannot be placed at {request.where!r}; valid places "
                                 f"are: {', '.join(places)} (or none, for a random place).")
    anatomy = str(choices[rng.integers(len(choices))])
    return Placement(kind, anatomy, _side_of(anatomy) if kind.sides != (None,) else None)


def check_requests(requests) -> list[FindingRequest]:
    """Requests as `FindingRequest` (strings 'name[:where]' are parsed); kinds that exist once
    per body (or once per side, for pleural effusion) may not repeat."""
    out = []
    for item in requests:
        if isinstance(item, str):
            item = FindingRequest.parse(item)
        elif not isinstance(item, FindingRequest):
            raise FvlmInputError(f"a finding request is a FindingRequest or 'name[:where]' text, "
                                 f"got {type(item).__name__}.")
        out.append(item)
    counts: dict[str, int] = {}
    for item in out:
        kind = finding_kind(item.name)
        counts[kind.name] = counts.get(kind.name, 0) + 1
        limit = 2 if kind.name == "pleural effusion" else 1
        if (kind.once or kind.name == "pleural effusion") and counts[kind.name] > limit:
            raise FvlmInputError(f"{kind.name} can be requested {'once' if limit == 1 else 'once per side'}"
                                 f"; remove the repeated request.")
    return out


def random_requests(rng: np.random.Generator) -> list[FindingRequest]:
    """Each kind with its probability (about 0.3); a nodule or an effusion sometimes twice."""
    out = []
    for kind in _KINDS:
        if rng.random() >= kind.probability:
            continue
        if kind.name == "pleural effusion":
            sides = ["left", "right"] if rng.random() < 0.35 else [("left", "right")[rng.integers(2)]]
            out.extend(FindingRequest(kind.name, side) for side in sides)
            continue
        out.append(FindingRequest(kind.name))
        if kind.name == "lung nodule" and rng.random() < 0.3:
            out.append(FindingRequest(kind.name))
    return out
