"""Probability heatmaps and free-text grounding of an encoded CT.

A map's value at a place is that place's zero-shot probability for the text against its negative
prompt: the softmax over the (positive, negative) pair that scores an anatomy, applied to the
place's own dense embedding (pooling.py explains why those are the right ones). Every map is on
the same fixed [0, 1] scale, never rescaled: an absent finding leaves it dark. A focal model's
maps are per voxel of the prepared input grid (`fine_probabilities`), others per token; both are
confined to the anatomies (0 outside, ``inside`` says where). Maps stay on their own grid (napari
scales them on the GPU); only exports are resampled to the CT grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..anatomy.catalog import resolve_query_anatomies
from ..errors import FvlmInputError
from ..geometry import voxel_to_world
from .encoding import EncodedCT

MAX_QUERY_CHARACTERS = 2000


@dataclass
class Heatmap:
    """Zero-shot probabilities in [0, 1] on a grid (0 outside the anatomies), with its affine."""

    name: str
    values: np.ndarray  # (Z, Y, X) float32
    affine: np.ndarray  # grid (i, j, k) -> RAS mm
    inside: np.ndarray  # (Z, Y, X) bool: the anatomies the map covers
    calibrated: bool = False
    threshold: float | None = None  # the finding's threshold on the map's scale (None: unknown)
    anatomies: tuple[str, ...] = ()  # the anatomies the map covers

    def peak(self) -> tuple[int, int, int]:
        """The grid index of the highest value inside the anatomies (the one peak rule)."""
        return peak_index(self.values, self.inside)


@dataclass
class Grounding:
    """Where the model places a free-text query."""

    text: str
    heatmap: Heatmap
    peak_world_mm: list[float]  # RAS [x, y, z]
    peak_anatomy: str
    anatomy_scores: list[tuple[str, float]] = field(default_factory=list)  # best first: the map's peak in each
    searched: list[str] = field(default_factory=list)  # anatomies the query was restricted to

    @property
    def peak_probability(self) -> float:
        return float(self.heatmap.values[self.heatmap.peak()])


def peak_index(values: np.ndarray, inside: np.ndarray) -> tuple[int, int, int]:
    """Index of the largest value where ``inside`` (the first one on ties)."""
    if not inside.any():
        raise FvlmInputError("The map covers no anatomy: nothing to point at.")
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(inside, values, -np.inf))), values.shape))


def check_query(text: str) -> str:
    """The query stripped; refuses empty and absurdly long text, and statements of normality or
    absence, with a clear message."""
    if not isinstance(text, str) or not text.strip():
        raise FvlmInputError("Type a finding to ground, e.g. 'nodule in the left lower lobe'.")
    if len(text) > MAX_QUERY_CHARACTERS:
        raise FvlmInputError(f"The query has {len(text)} characters; findings are short phrases "
                             f"(at most {MAX_QUERY_CHARACTERS}).")
    text = " ".join(text.split())
    if states_normality(text):
        raise FvlmInputError(
            f"'{text}' states normality or an absence. A map shows where the model sees a finding, "
            "scored against its own statement of normality, so it has nothing to show for this one: "
            "type the finding itself (e.g. 'pleural effusion'), or read the findings table.")
    return text


# A query that opens with a negation ("no ...", "without ...") or with "normal"/"unremarkable",
# or ends with one of those or "clear". Qualifiers inside a finding ("non-calcified nodule",
# "nodule, not calcified", "abnormal opacity") are findings and pass.
_NEGATED = re.compile(r"^(there (is|are) )?(no|without|negative for|absence of|absent|free of|nothing)\b", re.I)
_NORMAL = re.compile(r"^(normal|unremarkable|within normal limits)\b"
                     r"|\b(normal|unremarkable|clear|within normal limits)[.!]?$", re.I)


def states_normality(text: str) -> bool:
    """Whether a query states normality or an absence rather than naming a finding. The zero-shot
    rule scores a text against the model's statement of normality ("... shows no significant
    abnormalities."): for such a text that compares two ways to say the same thing, and with the
    first focal demo weights 59% of such maps on held-out phantoms lit up somewhere."""
    return bool(_NEGATED.search(text) or _NORMAL.search(text))


_SIDE = r"(left|right|both|bilateral)"
_PLACE_NOUN = r"(lung|lungs|lobe|lobes|hemithorax|side)"
_PREPOSITION = r"(in|of|within|at|on|involving)\s+(the\s+)?"
_LOCATION = re.compile(
    rf"\b({_PREPOSITION})?({_SIDE}\s+((upper|middle|lower)\s+)?|(upper|middle|lower)\s+){_PLACE_NOUN}\b"
    rf"|\b{_PREPOSITION}{_PLACE_NOUN}\b|\b{_SIDE}(-sided)?\b", re.I)


def without_location(text: str) -> str:
    """The query without the words that place it ("in the left lower lobe", "right"), or the
    query itself when nothing else is left."""
    rest = " ".join(_LOCATION.sub(" ", text).replace(" ,", ",").split()).strip(" ,;")
    return rest or text


def _pair_probability(cos_positive: torch.Tensor, cos_negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax over (positive, negative) / temperature, positive share: the anatomy score's rule."""
    return torch.sigmoid((cos_positive - cos_negative) / temperature)


def token_probabilities(model, encoded: EncodedCT, anatomy: str, positive, negative) -> np.ndarray:
    """(Zt, Yt, Xt) probabilities of one anatomy's tokens (0 outside it)."""
    dense = encoded.dense[anatomy]  # (N, D), unit rows
    with torch.inference_mode():
        pair = torch.stack([positive, negative]).to(dense.device).float()
        cosines = dense @ pair.t()
        values = _pair_probability(cosines[:, 0], cosines[:, 1], float(model.temperature.detach()))
    values = values.cpu().numpy().reshape(encoded.grid)
    return np.where(encoded.token_masks[anatomy], values, 0.0).astype(np.float32)


def fine_probabilities(model, encoded: EncodedCT, anatomy: str, positive, negative) -> np.ndarray:
    """Per-voxel probabilities of one anatomy on the input grid (0 outside it), for a focal model.

    A voxel's value is the anatomy's own score were its extremes at that voxel: the anatomy's
    projection of [its attention-pooled tokens; its mean focal features; the voxel's features in
    the soft-maximum (and soft-minimum) slots]. A map is then on its anatomy score's scale (a
    place that does not move the pooled extremes scores like an anatomy without them) and varies
    where the focal features do. (The voxel alone in every slot, and its token's own value path,
    put single places far above the score: a clear lung's nodule map peaked at 0.96 with a score
    of 0.03.) The projection is split by linearity and each voxel's norm does not depend on the
    text, so a query costs a dot product of length F per voxel.
    """
    fine = encoded.fine
    constant, focal_weight, features, norm = _fine_parts(model, fine, anatomy)
    with torch.inference_mode():
        cosines = []
        for text in (positive, negative):
            text = text.to(constant.device).float()
            cosines.append((constant @ text + features @ (focal_weight.t() @ text)) / norm)
        values = _pair_probability(*cosines, float(model.temperature.detach())).cpu().numpy()
    out = np.zeros(int(np.prod(fine.shape)), np.float32)
    out[fine.index[fine.masks[anatomy]]] = values
    return out.reshape(fine.shape)


def _fine_parts(model, fine, anatomy: str) -> tuple:
    """(constant part (D,), extreme slots' weight (D, F), features (M, F), norms (M,)) of an
    anatomy's voxels: computed at its first map, kept with the encoding."""
    if anatomy in fine.parts:
        return fine.parts[anatomy]
    chosen = fine.masks[anatomy]
    projection = model.pooling.projections[model.pooling.anatomy_index(anatomy)]
    pooled = fine.pooled[anatomy]
    width, count = pooled.shape[0], fine.features.shape[1]
    with torch.inference_mode():
        weight = projection.weight.float()
        features = fine.features[torch.from_numpy(chosen).to(fine.features.device)]  # (M, F)
        blocks = weight[:, width:].reshape(weight.shape[0], -1, count)  # (D, statistics, F): mean first
        constant = projection.bias.float() + weight[:, :width] @ pooled + blocks[:, 0] @ features.mean(0)
        focal_weight = blocks[:, 1:].sum(1)  # (D, F): the voxel fills every extreme slot
        norm2 = ((constant ** 2).sum() + 2 * features @ (focal_weight.t() @ constant)
                 + ((features @ (focal_weight.t() @ focal_weight)) * features).sum(1))
        parts = (constant, focal_weight, features, norm2.clamp(min=1e-12).sqrt())
    fine.parts[anatomy] = parts
    return parts


def probability_map(model, encoded: EncodedCT, name: str, pairs: dict[str, tuple], calibration=None,
                    finding: str | None = None) -> Heatmap:
    """One map over several anatomies: ``pairs`` {anatomy: (positive, negative) embeddings}; each
    place takes the highest probability of the anatomies that hold it. With a ``calibration``
    (calibration.py) the values are calibrated by the maps' own fits for ``finding`` (None: a
    free-text query, the fit pooled over every finding), and the map carries their threshold
    (None where the anatomies' thresholds differ)."""
    calibrate, threshold = None, None
    maps = None if calibration is None else calibration.for_maps()
    if maps is not None and all(maps.lookup(a, finding) is not None for a in pairs):
        calibrate = lambda anatomy, raw: maps.calibrate(anatomy, finding, raw)  # noqa: E731
        thresholds = {maps.threshold(a, finding) for a in pairs}
        threshold = thresholds.pop() if len(thresholds) == 1 else None
    fine = encoded.fine is not None
    per_anatomy = fine_probabilities if fine else token_probabilities
    values, inside = None, None
    for anatomy, (positive, negative) in pairs.items():
        probabilities = per_anatomy(model, encoded, anatomy, positive, negative)
        mask = _anatomy_mask(encoded, anatomy)
        if calibrate is not None:
            probabilities = np.where(mask, calibrate(anatomy, probabilities), 0.0).astype(np.float32)
        values = probabilities if values is None else np.maximum(values, probabilities)
        inside = mask if inside is None else inside | mask
    affine = encoded.fine.affine if fine else encoded.token_affine
    return Heatmap(name, values, affine, inside, calibrated=calibrate is not None, threshold=threshold,
                   anatomies=tuple(pairs))


def _anatomy_mask(encoded: EncodedCT, anatomy: str) -> np.ndarray:
    if encoded.fine is None:
        return encoded.token_masks[anatomy]
    fine = encoded.fine
    out = np.zeros(int(np.prod(fine.shape)), bool)
    out[fine.index[fine.masks[anatomy]]] = True
    return out.reshape(fine.shape)


def anatomy_peaks(heatmap_of, anatomies) -> list[tuple[str, float]]:
    """Each anatomy's highest map value, best first (smaller anatomies first on ties)."""
    rows = []
    for anatomy in anatomies:
        values, mask = heatmap_of(anatomy)
        rows.append((anatomy, float(values[mask].max()) if mask.any() else 0.0, int(mask.sum())))
    return [(a, round(v, 4)) for a, v, _ in sorted(rows, key=lambda r: (-r[1], r[2]))]


def ground_query(model, encoded: EncodedCT, query: str, text_embeddings, group_set: str,
                 calibration=None) -> Grounding:
    """Probability map, anatomy ranking and peak (RAS mm) of a free-text query.

    The query is scored against the model's negative prompt, like a finding. Anatomy words in the
    query ("left lower lobe", "heart") restrict the search to those anatomies, laterality meaning
    the patient's side, and the place words are then left out of the scored text ("nodule in the
    left lung" scores "nodule" in the left lung), as training reads each anatomy's findings
    without them; otherwise every anatomy is searched with the whole text. One rule ranks the
    anatomies and finds the peak: each anatomy's highest map value, so the first anatomy holds it.
    """
    from .findings import anatomy_displays, prompt_pair

    text = check_query(query)
    named = [a for a in resolve_query_anatomies(text, group_set) if a in encoded.embeddings]
    searched = named or list(encoded.embeddings)
    scored = without_location(text) if named else text
    displays = anatomy_displays(model.config.anatomy_group_set)
    negatives = {a: prompt_pair(scored, model.config.prompt_positive, model.config.prompt_negative,
                                displays.get(a, a))[1] for a in searched}
    texts = [scored, *sorted(set(negatives.values()))]
    embedded = text_embeddings(texts)
    row = {t: i for i, t in enumerate(texts)}
    pairs = {a: (embedded[0], embedded[row[negatives[a]]]) for a in searched}
    heatmap = probability_map(model, encoded, text, pairs, calibration)
    masks = {a: _anatomy_mask(encoded, a) for a in searched}
    ranked = anatomy_peaks(lambda a: (heatmap.values, masks[a]), searched)
    peak = heatmap.peak()
    at_peak = [a for a, _ in ranked if masks[a][peak]]
    world = voxel_to_world(heatmap.affine, np.asarray(peak, float))
    return Grounding(text, heatmap, [round(float(v), 2) for v in world], at_peak[0] if at_peak else ranked[0][0],
                     ranked, searched)


def finding_heatmap(model, encoded: EncodedCT, anatomy: str, finding: str, text_embeddings,
                    calibration=None) -> Heatmap:
    """The probability map of one scored finding inside one anatomy (its score's prompt pair)."""
    from .findings import finding_prompts

    positive, negative = text_embeddings(list(finding_prompts(model.config, anatomy, finding)))
    return probability_map(model, encoded, f"{finding} ({anatomy})", {anatomy: (positive, negative)},
                           calibration, finding)
