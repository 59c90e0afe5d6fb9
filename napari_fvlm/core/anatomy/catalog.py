"""Anatomy groups: which TotalSegmentator `total` classes make up each anatomy the model scores.

A group set is the list of anatomies one model was trained on: ``ct-rate`` follows the reference
fVLM model (lung, heart, esophagus, aorta); ``fine`` splits the lungs by side and lobe and adds
airway and upper-abdominal organs. Sides are the patient's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import FvlmInputError
from .totalseg_classes import TOTAL_CLASS_IDS

_MAX_COMPARED_CLASSES = 16  # beyond this a lookup-table gather beats one compare per class
LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
              "lung_middle_lobe_right", "lung_lower_lobe_right")


@dataclass(frozen=True)
class AnatomyGroup:
    """One anatomy: a union of `total` classes, its side (patient's) and the words to show."""

    name: str
    class_ids: tuple[int, ...]
    side: str | None = None
    display: str = ""

    def __post_init__(self) -> None:
        if self.side not in (None, "left", "right"):
            raise ValueError(f"side is 'left', 'right' or None, got {self.side!r}")
        if not self.display:
            object.__setattr__(self, "display", self.name.replace("_", " "))

    @property
    def sentence_start(self) -> str:
        """The display name opening a sentence ("Right lower lobe"), as report templates use it."""
        return self.display[:1].upper() + self.display[1:]


def _group(name: str, classes: tuple[str, ...], side: str | None = None, display: str = "") -> AnatomyGroup:
    return AnatomyGroup(name, tuple(TOTAL_CLASS_IDS[c] for c in classes), side, display)


def _lobe(name: str) -> AnatomyGroup:
    _, level, _, side = name.split("_")  # lung_<level>_lobe_<side>
    return _group(name, (name,), side, f"{side} {level} lobe")


_HEART, _AORTA, _ESOPHAGUS = (_group(n, (n,)) for n in ("heart", "aorta", "esophagus"))

GROUP_SETS: dict[str, tuple[AnatomyGroup, ...]] = {
    "ct-rate": (  # as the reference merges `total` classes: its heart holds the left atrial appendage
        _group("lung", LUNG_LOBES),
        _group("heart", ("heart", "atrial_appendage_left")),
        _ESOPHAGUS,
        _AORTA,
    ),
    "fine": (
        _group("lung_left", LUNG_LOBES[:2], "left", "left lung"),
        _group("lung_right", LUNG_LOBES[2:], "right", "right lung"),
        *(_lobe(name) for name in LUNG_LOBES),
        _HEART,
        _AORTA,
        _ESOPHAGUS,
        _group("trachea", ("trachea",)),
        _group("liver", ("liver",)),
        _group("spleen", ("spleen",)),
        _group("kidneys", ("kidney_left", "kidney_right")),
        _group("stomach", ("stomach",)),
    ),
}


def group_set(name: str) -> tuple[AnatomyGroup, ...]:
    """The groups of a named group set."""
    try:
        return GROUP_SETS[name]
    except KeyError:
        raise FvlmInputError(f"unknown anatomy group set {name!r}; choose one of: "
                             f"{', '.join(GROUP_SETS)}.") from None


def _groups(groups) -> tuple[AnatomyGroup, ...]:
    return group_set(groups) if isinstance(groups, str) else tuple(groups)


def labels_in(labelmap: np.ndarray, ids) -> np.ndarray:
    """Whether each voxel's label is one of ``ids``: one lookup-table gather (``np.isin`` for
    negative or non-integer labels)."""
    labelmap = np.asarray(labelmap)
    ids = sorted({int(i) for i in ids})
    if not np.issubdtype(labelmap.dtype, np.integer) or labelmap.min(initial=0) < 0:
        return np.isin(labelmap, ids)
    lut = np.zeros(max(max(ids, default=0), int(labelmap.max(initial=0))) + 1, dtype=bool)
    lut[ids] = True
    return lut[labelmap]


def group_masks(labelmap: np.ndarray, groups) -> dict[str, np.ndarray]:
    """{group name: bool mask} from a `total` label map.

    One vectorised comparison per distinct class, shared by the groups that hold it (a lobe and
    its lung); groups of many classes use one lookup-table gather instead. On a 512x512x150 map
    this measured 3-4x faster than one bit-field lookup table for all groups, and 3-10x faster
    than `np.isin` per group: SIMD compares beat gathers.
    """
    groups = _groups(groups)
    labelmap = np.asarray(labelmap)
    if not np.issubdtype(labelmap.dtype, np.integer):
        raise FvlmInputError(f"a label map holds integers, got {labelmap.dtype}.")
    class_masks: dict[int, np.ndarray] = {}
    handed_out: set[int] = set()
    masks: dict[str, np.ndarray] = {}
    for group in groups:
        ids = sorted(set(group.class_ids))
        if len(ids) > _MAX_COMPARED_CLASSES:
            masks[group.name] = labels_in(labelmap, ids)
            continue
        for class_id in ids:
            if class_id not in class_masks:
                class_masks[class_id] = labelmap == class_id
        if len(ids) == 1 and ids[0] not in handed_out:
            masks[group.name] = class_masks[ids[0]]
            handed_out.add(ids[0])
            continue
        mask = class_masks[ids[0]].copy() if len(ids) == 1 else class_masks[ids[0]] | class_masks[ids[1]]
        for class_id in ids[2:]:
            mask |= class_masks[class_id]
        masks[group.name] = mask
    return masks


def groups_for_class(class_name: str, group_set) -> list[str]:
    """Names of the groups of a set that contain one `total` class (a lobe: its lung and itself)."""
    if class_name not in TOTAL_CLASS_IDS:
        raise FvlmInputError(f"{class_name!r} is not a TotalSegmentator `total` class name.")
    class_id = TOTAL_CLASS_IDS[class_name]
    return [g.name for g in _groups(group_set) if class_id in g.class_ids]


def lateral_groups(group_set, side: str) -> list[str]:
    """Names of the groups on one side of the patient ("left" or "right")."""
    if side not in ("left", "right"):
        raise FvlmInputError(f"side is 'left' or 'right' (the patient's), got {side!r}.")
    return [g.name for g in _groups(group_set) if g.side == side]


def resolve_query_anatomies(text: str, group_set) -> list[str]:
    """The groups of a set that a free-text query names, in the order it names them; [] if none."""
    by_name = {g.name: g for g in _groups(group_set)}
    found: list[str] = []
    for organ, sides, lobe in named_anatomies(text):
        for name in _closest_groups(organ, sides, lobe, by_name):
            if name not in found:
                found.append(name)
    return found


def _closest_groups(organ: str, sides: tuple[str, ...], lobe: str | None,
                    by_name: dict[str, AnatomyGroup]) -> list[str]:
    """The most specific groups of the set for one mention, falling back to the whole organ."""
    if organ != "lung":
        return [organ] if organ in by_name else []
    if lobe is not None:
        lobe_sides = sides or (("right",) if lobe == "middle" else ("left", "right"))
        lobes = [f"lung_{lobe}_lobe_{side}" for side in lobe_sides]
        if all(name in by_name for name in lobes):
            return lobes
        sides = lobe_sides
    lungs = [f"lung_{side}" for side in (sides or ("left", "right"))]
    if "lung" in by_name and (len(lungs) == 2 or not all(name in by_name for name in lungs)):
        return ["lung"]
    return [name for name in lungs if name in by_name]


# --- Query words ------------------------------------------------------------------------------
# Words that name an organ (exact) or start a word about it (stems); findings that imply an organ
# without naming it ("emphysema") are left to the finding table, not guessed here.
_ORGAN_WORDS = {
    "lung": {"lung", "lungs", "pulmonary", "pleura", "pleurae", "pleural", "hemithorax", "lingula",
             "lingular", "lobe", "lobes", "lobar", "perihilar", "pneumothorax", "pneumonia"},
    "heart": {"heart", "pericardial", "pericardium", "epicardial", "coronary", "atrial", "atrium",
              "ventricle", "ventricular", "myocardium", "myocardial"},
    "aorta": {"aorta", "aortic"},
    "esophagus": {"esophagus", "oesophagus", "esophageal", "oesophageal", "hiatal", "hiatus"},
    "trachea": {"trachea", "tracheal"},
    "liver": {"liver", "hepatic"},
    "spleen": {"spleen", "splenic"},
    "kidneys": {"kidney", "kidneys", "renal"},
    "stomach": {"stomach", "gastric"},
}
_ORGAN_STEMS = (("bronch", "lung"), ("cardi", "heart"), ("aort", "aorta"), ("esophag", "esophagus"),
                ("oesophag", "esophagus"), ("hepat", "liver"), ("splen", "spleen"),
                ("nephr", "kidneys"), ("gastr", "stomach"))
_SIDE_WORDS = {"left": ("left",), "right": ("right",), "bilateral": ("left", "right"),
               "bilaterally": ("left", "right"), "both": ("left", "right")}
_LOBE_ABBREVIATIONS = {"lul": ("upper", "left"), "lll": ("lower", "left"), "rul": ("upper", "right"),
                       "rml": ("middle", "right"), "rll": ("lower", "right")}
_LOBE_LEVELS = {"upper", "middle", "lower"}
_QUALIFIER_WORDS = {"of", "the", "in"}
_LOOK_AHEAD = 4


@dataclass
class _Mention:
    start: int
    end: int
    organ: str
    lobe: str | None = None
    sides: tuple[str, ...] = ()


def _organ_of(word: str) -> str | None:
    for organ, words in _ORGAN_WORDS.items():
        if word in words:
            return organ
    return next((organ for stem, organ in _ORGAN_STEMS if word.startswith(stem)), None)


def _mentions(words: list[str]) -> list[_Mention]:
    """Anatomy mentions of one clause, each with the side words just before it."""
    found: list[_Mention] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _LOBE_ABBREVIATIONS:
            level, side = _LOBE_ABBREVIATIONS[word]
            found.append(_Mention(i, i + 1, "lung", level, (side,)))
        elif word in _LOBE_LEVELS:  # "upper lobe", "upper and lower lobes"
            j = i
            while j < len(words) and words[j] in _LOBE_LEVELS | {"and", "or"}:
                j += 1
            if j < len(words) and words[j] in ("lobe", "lobes"):
                found += [_Mention(i, j + 1, "lung", w) for w in words[i:j] if w in _LOBE_LEVELS]
                i = j
        elif word in ("lingula", "lingular"):
            found.append(_Mention(i, i + 1, "lung", "upper", ("left",)))
        elif (organ := _organ_of(word)) is not None:
            found.append(_Mention(i, i + 1, organ))
        i += 1
    previous_end = 0
    for mention in found:
        if not mention.sides:
            mention.sides = _sides(words[previous_end:mention.start])
        previous_end = max(previous_end, mention.end)
    return found


def _sides(words: list[str]) -> tuple[str, ...]:
    sides = {s for w in words for s in _SIDE_WORDS.get(w, ())}
    return tuple(s for s in ("left", "right") if s in sides)


def _merge_qualifiers(found: list[_Mention], words: list[str]) -> list[_Mention]:
    """ "lower lobe of the left lung": the lung only qualifies the lobe, and gives it its side."""
    merged: list[_Mention] = []
    for mention in found:
        last = merged[-1] if merged else None
        gap = words[last.end:mention.start] if last else []
        if (last is not None and last.lobe and mention.organ == "lung" and mention.lobe is None
                and "of" in gap and set(gap) <= _QUALIFIER_WORDS | set(_SIDE_WORDS)):
            last.sides = last.sides or mention.sides
            continue
        merged.append(mention)
    if merged and not merged[-1].sides:  # "effusion on the right": side words after the last one
        merged[-1].sides = _sides(words[merged[-1].end:merged[-1].end + _LOOK_AHEAD])
    return merged


def named_anatomies(text: str) -> list[tuple[str, tuple[str, ...], str | None]]:
    """(organ, patient sides, lobe level or None) for each anatomy a text names, in order."""
    named = []
    for clause in re.split(r"[,.;:!?()\[\]\n]+", text.lower()):
        words = re.findall(r"[a-z]+", clause)
        named += [(m.organ, m.sides, m.lobe) for m in _merge_qualifiers(_mentions(words), words)]
    return named
