"""Heatmaps and free-text grounding on the token grid of an encoded CT.

A token's value is the cosine similarity between the text embedding and the token's dense
embedding in an anatomy's space (pooling.py explains why those dense embeddings are the right
ones), kept inside that anatomy. Maps stay at token resolution (napari scales them on the GPU);
only exports are resampled to the CT grid.
"""

from __future__ import annotations

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
    """Values on the token grid in [0, 1] (0 outside the anatomies), with the grid's affine."""

    name: str
    values: np.ndarray  # (Zt, Yt, Xt) float32
    affine: np.ndarray  # token (i, j, k) -> RAS mm
    similarity_range: tuple[float, float]  # raw cosine similarities mapped to 0 and 1


@dataclass
class Grounding:
    """Where the model places a free-text query."""

    text: str
    heatmap: Heatmap
    peak_world_mm: list[float]  # RAS [x, y, z]
    peak_anatomy: str
    anatomy_scores: list[tuple[str, float]] = field(default_factory=list)  # best first
    searched: list[str] = field(default_factory=list)  # anatomies the query was restricted to


def check_query(text: str) -> str:
    """The query stripped; refuses empty and absurdly long text with a clear message."""
    if not isinstance(text, str) or not text.strip():
        raise FvlmInputError("Type a finding to ground, e.g. 'nodule in the left lower lobe'.")
    if len(text) > MAX_QUERY_CHARACTERS:
        raise FvlmInputError(f"The query has {len(text)} characters; findings are short phrases "
                             f"(at most {MAX_QUERY_CHARACTERS}).")
    return " ".join(text.split())


def similarity_maps(encoded: EncodedCT, text: torch.Tensor, anatomies) -> dict[str, np.ndarray]:
    """{anatomy: (Zt, Yt, Xt) cosine similarity, NaN outside the anatomy} for one text embedding."""
    maps = {}
    with torch.inference_mode():
        for anatomy in anatomies:
            dense = encoded.dense[anatomy]  # (N, D), computed once at encoding
            values = (dense @ text.to(dense.device).float()).cpu().numpy().reshape(encoded.grid)
            maps[anatomy] = np.where(encoded.token_masks[anatomy], values, np.nan).astype(np.float32)
    return maps


def combine(name: str, maps: dict[str, np.ndarray], affine: np.ndarray) -> Heatmap:
    """One map: the best anatomy's value per token, rescaled to [0, 1] inside the anatomies."""
    stacked = np.stack(list(maps.values()))
    inside = ~np.isnan(stacked).all(axis=0)
    best = np.where(inside, np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0), np.nan)
    low, high = float(np.nanmin(best)), float(np.nanmax(best))
    values = np.zeros(best.shape, np.float32)
    values[inside] = (best[inside] - low) / (high - low) if high > low else 1.0
    return Heatmap(name, values, affine, (low, high))


def ground_query(model, encoded: EncodedCT, query: str, text_embeddings, group_set: str) -> Grounding:
    """Heatmap, anatomy ranking and peak (RAS mm) of a free-text query.

    Anatomy words in the query ("left lower lobe", "heart") restrict the search to those
    anatomies, laterality meaning the patient's side; otherwise every anatomy is searched.
    """
    text = check_query(query)
    embedding = text_embeddings([text])[0]
    ranked = sorted(((a, float(e.to(embedding.device) @ embedding)) for a, e in encoded.embeddings.items()),
                    key=lambda item: -item[1])
    named = [a for a in resolve_query_anatomies(text, group_set) if a in encoded.embeddings]
    searched = named or [a for a, _ in ranked]
    maps = similarity_maps(encoded, embedding, searched)
    heatmap = combine(text, maps, encoded.token_affine)
    peak = np.unravel_index(int(np.argmax(np.where(heatmap.values > 0, heatmap.values, -1))), encoded.grid)
    order = {a: i for i, (a, _) in enumerate(ranked)}
    at_peak = [a for a in searched if encoded.token_masks[a][peak]]
    peak_anatomy = min(at_peak, key=lambda a: (np.count_nonzero(encoded.token_masks[a]), order[a]))
    world = voxel_to_world(encoded.token_affine, np.asarray(peak, float))
    return Grounding(text, heatmap, [round(float(v), 2) for v in world], peak_anatomy,
                     [(a, round(s, 4)) for a, s in ranked], searched)


def finding_heatmap(model, encoded: EncodedCT, anatomy: str, finding: str, text_embeddings) -> Heatmap:
    """The map of one scored finding inside one anatomy."""
    from .findings import anatomy_displays, finding_prompt_pair

    display = anatomy_displays(model.config.anatomy_group_set).get(anatomy, anatomy)
    positive = finding_prompt_pair(model.config, finding, display)[0]
    embedding = text_embeddings([positive])[0]
    maps = similarity_maps(encoded, embedding, [anatomy])
    return combine(f"{finding} ({anatomy})", maps, encoded.token_affine)
