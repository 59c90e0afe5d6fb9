"""Report decomposition: a free-text CT report -> one text and one abnormal flag per anatomy.

The paper used an LLM for this step; here a lexicon does it, built on the anatomy catalog's own
reading of anatomy words (organ words, lobes, abbreviations such as LLL, laterality), so the
training texts and the plugin's free-text queries understand anatomy the same way. Rules:

- A sentence goes to the most specific anatomies it names ("nodule in the LLL" -> the left lower
  lobe), then up and down the group hierarchy: a lobe's sentence is also about its lung, a
  lung's sentence also about each of its lobes. Bare organ words ("bronchiectatic airways") are
  dropped when the sentence also names a side or lobe of that organ.
- Sentences naming no anatomy are placed by their finding words ("emphysema" -> lung).
- "No pleural effusion." is a normal statement about the lung: it goes to the lung's text but
  never makes the lung abnormal. An anatomy is abnormal when a non-negated impression sentence
  (findings, when there is no impression) is about it.
- An anatomy with no sentence gets the template "{display} shows no significant abnormalities.".
- "lexicon-findings" (the demo model's choice) keeps only the sentences that state something
  abnormal; an anatomy without one gets the template. A frozen sentence encoder embeds "No
  nodule." next to "Nodule.": with every negated sentence kept, a normal lung's text and the
  same text plus "A 12 mm nodule in the RUL." are 0.96 apart (MiniLM cosine), and the contrast
  has almost nothing to learn from. A text encoder trained with the model (fVLM-B's CXR-BERT)
  can learn negation, so "lexicon" keeps them.

`Decomposer` is the hook for another decomposition (an LLM): register one with
`register_decomposer` and name it in the training config's ``decomposition``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from napari_fvlm.core.anatomy.catalog import AnatomyGroup, group_set, named_anatomies, resolve_query_anatomies
from napari_fvlm.core.anatomy.totalseg_classes import TOTAL_CLASS_IDS
from napari_fvlm.core.errors import FvlmInputError

NORMAL_TEMPLATE = "{anatomy} shows no significant abnormalities."

_SECTION = re.compile(r"^\s*(findings|impressions?|conclusions?)\s*:\s*", re.IGNORECASE | re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n+")
_NUMBERING = re.compile(r"^\s*(\d+[.)]|[-*\u2022])\s+")
_CONTRAST = re.compile(r";|\s(?:but|however|whereas|although)\s|,\s*(?:and\s+)?(?:with|there is|there are)\s",
                       re.IGNORECASE)
# phrases whose words the catalog would read as another organ ("main bronchi" is the airway)
_AIRWAY_PHRASES = re.compile(r"\b(main(?:\s*stem)? bronch\w*|central airways?|mainstem bronch\w*)\b",
                             re.IGNORECASE)
_FINDING_ORGANS = (  # finding words that imply an organ when the sentence names none
    ("lung", ("emphysema", "emphysematous", "atelecta", "consolidat", "nodul", "opacit", "ground-glass",
              "ground glass", "bronchiectasis", "bronchiectatic", "mosaic attenuation", "septal thickening",
              "fibrotic", "fibrosis", "pneumothorax", "infiltrat", "air trapping", "bulla", "honeycomb",
              "tree-in-bud", "parenchym", "effusion", "interstitial", "reticula", "cavitation")),
    ("heart", ("cardiomegaly",)),
    ("esophagus", ("hernia",)),
)
_NEGATION = re.compile(r"^\W*(no|not|without|negative for|absence of|free of|none|there (?:is|are|was|were) no"
                       r"|no evidence of|no sign of|nor)\b", re.IGNORECASE)
_NORMAL_WORDS = re.compile(r"\b(unremarkable|normal|clear|patent|intact|preserved|within normal limits"
                           r"|well aerated|no significant)\b", re.IGNORECASE)
_ABNORMAL_WORDS = re.compile(r"\b(effusion|nodul\w*|mass|lesion|opacit\w*|consolidat\w*|atelecta\w*|emphysem\w*"
                             r"|enlarge\w*|cardiomegaly|calcif\w*|hernia|thicken\w*|dilat\w*|fibro\w*|bronchiect\w*"
                             r"|ground.glass|plaque\w*|aneurysm\w*|fluid|lymphadenopathy|pneumothorax)\b",
                             re.IGNORECASE)


@dataclass
class Decomposition:
    """Per anatomy (a group set's names): its text, its sentences and whether it is abnormal."""

    texts: dict[str, str]
    abnormal: dict[str, bool]
    sentences: dict[str, list[str]] = field(default_factory=dict)
    unassigned: list[str] = field(default_factory=list)


Decomposer = Callable[[str, str, Sequence[AnatomyGroup]], Decomposition]
"""(findings text, impression text, the model's anatomy groups) -> Decomposition.

An LLM decomposition is a function of this type; it must return an entry for every group.
"""

_DECOMPOSERS: dict[str, Decomposer] = {}


def register_decomposer(name: str, decomposer: Decomposer) -> None:
    """Make ``decomposer`` usable as ``decomposition: <name>`` in a training config."""
    _DECOMPOSERS[name] = decomposer


def get_decomposer(name: str) -> Decomposer:
    if name not in _DECOMPOSERS:
        raise FvlmInputError(f"Unknown report decomposition '{name}'; registered: {sorted(_DECOMPOSERS)}.")
    return _DECOMPOSERS[name]


def split_sections(report: str) -> tuple[str, str]:
    """(findings, impression) of a report with 'FINDINGS:' / 'IMPRESSION:' headings (else all findings)."""
    parts = _SECTION.split(report)
    if len(parts) == 1:
        return report.strip(), ""
    findings, impression = [parts[0]], []
    for heading, body in zip(parts[1::2], parts[2::2]):
        (findings if heading.lower().startswith("finding") else impression).append(body)
    return " ".join(t.strip() for t in findings if t.strip()), " ".join(t.strip() for t in impression if t.strip())


def split_sentences(text: str) -> list[str]:
    """Sentences of a report section; list numbering ('1.', '-') is removed."""
    out = []
    for line in re.split(r"\n+", text or ""):
        for piece in _SENTENCE_END.split(_NUMBERING.sub("", line.strip())):
            piece = _NUMBERING.sub("", piece).strip()
            if re.search(r"[A-Za-z]", piece):
                out.append(piece)
    return out


def _phrase(organ: str, sides: tuple[str, ...], lobe: str | None) -> str:
    if organ != "lung":
        return organ
    if lobe is None:
        return " and ".join(f"{s} lung" for s in sides) if sides else "lungs"
    return ", ".join(f"{s} {lobe} lobe" for s in sides) if sides else f"{lobe} lobe"


def _hierarchy(found: list[str], groups: Sequence[AnatomyGroup]) -> list[str]:
    """``found`` plus every group of the set that contains one of them or is contained in one."""
    ids = {g.name: set(g.class_ids) for g in groups}
    keep = set()
    for name in found:
        keep |= {other for other, members in ids.items() if members <= ids[name] or ids[name] <= members}
    return [g.name for g in groups if g.name in keep]


def sentence_anatomies(sentence: str, groups: Sequence[AnatomyGroup]) -> list[str]:
    """Names of the groups one sentence is about (see the module rules), in group-set order."""
    text = _AIRWAY_PHRASES.sub("trachea", sentence)
    mentions = named_anatomies(text)
    specific = {organ for organ, sides, lobe in mentions if sides or lobe}
    mentions = [m for m in mentions if m[0] not in specific or m[1] or m[2]]
    if not mentions:
        lowered = text.lower()
        mentions = [(organ, (), None) for organ, words in _FINDING_ORGANS if any(w in lowered for w in words)]
    found: list[str] = []
    for organ, sides, lobe in mentions:
        for name in resolve_query_anatomies(_phrase(organ, sides, lobe), groups):
            if name not in found:
                found.append(name)
    return _hierarchy(found, groups)


def is_normal_statement(sentence: str) -> bool:
    """True for a negated finding or a normal statement ("No effusion.", "The heart is normal.")."""
    if _NEGATION.search(sentence):
        return True
    return bool(_NORMAL_WORDS.search(sentence)) and not _ABNORMAL_WORDS.search(sentence)


def _abnormal_parts(sentence: str) -> list[str]:
    """The clauses of a sentence that state something abnormal ("No effusion, but a nodule ...")."""
    return [part for part in _CONTRAST.split(sentence) if part.strip() and not is_normal_statement(part)]


def lexicon_decomposition(findings: str, impression: str, groups: Sequence[AnatomyGroup],
                          findings_only: bool = False) -> Decomposition:
    """The rule-based `Decomposer` (named 'lexicon'; 'lexicon-findings' with ``findings_only``:
    sentences that state nothing abnormal are left out of the texts)."""
    groups = tuple(groups)
    per_anatomy: dict[str, list[str]] = {g.name: [] for g in groups}
    unassigned = []
    for sentence in split_sentences(findings):
        if findings_only and not _abnormal_parts(sentence):
            continue
        names = sentence_anatomies(sentence, groups)
        for name in names:
            per_anatomy[name].append(sentence)
        if not names:
            unassigned.append(sentence)
    abnormal = {g.name: False for g in groups}
    for sentence in split_sentences(impression or findings):
        for part in _abnormal_parts(sentence):
            for name in sentence_anatomies(part, groups) or sentence_anatomies(sentence, groups):
                abnormal[name] = True
    texts = {g.name: " ".join(per_anatomy[g.name]) or NORMAL_TEMPLATE.format(anatomy=g.sentence_start)
             for g in groups}
    return Decomposition(texts, abnormal, per_anatomy, unassigned)


register_decomposer("lexicon", lexicon_decomposition)
register_decomposer("lexicon-findings", functools.partial(lexicon_decomposition, findings_only=True))


def decompose_report(report: str, group_set_name: str, impression: str | None = None,
                     decomposer: str = "lexicon") -> Decomposition:
    """Decompose a report; ``impression`` given separately (CT-RATE) or found under its heading."""
    findings, found_impression = split_sections(report) if impression is None else (report, impression)
    return get_decomposer(decomposer)(findings, found_impression, group_set(group_set_name))


# --- measuring the decomposition against the phantom's ground truth ------------------------------
_KEY_CLASSES = {
    "lung": ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
             "lung_middle_lobe_right", "lung_lower_lobe_right"),
    "lung_left": ("lung_upper_lobe_left", "lung_lower_lobe_left"),
    "lung_right": ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
    "kidney": ("kidney_left", "kidney_right"),
}


def key_class_ids(key: str) -> set[int]:
    """`total` class ids of a phantom sentence key ("lung_left", "heart", "kidney", ...)."""
    return {TOTAL_CLASS_IDS[c] for c in _KEY_CLASSES.get(key, (key,))}


def assignment_is_correct(assigned: Sequence[str], key: str, groups: Sequence[AnatomyGroup]) -> bool:
    """Right anatomy: every assigned group overlaps the key's anatomy, and together they cover the
    part of it the group set models (a set without that organ must assign nothing)."""
    by_name = {g.name: set(g.class_ids) for g in groups}
    wanted = key_class_ids(key) & set().union(*by_name.values())
    covered = set().union(*(by_name[a] for a in assigned)) if assigned else set()
    return all(by_name[a] & wanted for a in assigned) and wanted <= covered


def sentence_accuracy(pairs: Sequence[tuple[str, str]], group_set_name: str) -> tuple[float, list]:
    """(fraction of sentences assigned to the right anatomy, the wrong ones with what was assigned)."""
    groups = group_set(group_set_name)
    wrong = []
    for sentence, key in pairs:
        assigned = sentence_anatomies(sentence, groups)
        if not assignment_is_correct(assigned, key, groups):
            wrong.append((sentence, key, assigned))
    return (1.0 - len(wrong) / len(pairs) if pairs else 1.0), wrong
