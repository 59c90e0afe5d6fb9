"""Zero-shot abnormality probabilities: per anatomy, a softmax over a (finding, no finding) prompt pair."""

from __future__ import annotations

import torch

from .encoding import EncodedCT
from .findings import anatomy_displays, finding_prompt_pair, findings_for


def zero_shot_scores(model, encoded: EncodedCT, text_embeddings, finding_set: str = "ct-rate"
                     ) -> dict[str, dict[str, float]]:
    """{anatomy: {finding: probability}} for every anatomy of the CT the model could pool.

    ``text_embeddings`` maps a list of texts to (T, D) normalised embeddings (cached by the caller).
    """
    wanted = {name: findings_for(name, finding_set) for name in encoded.anatomies}
    displays = anatomy_displays(model.config.anatomy_group_set)
    pair = {(a, f): finding_prompt_pair(model.config, f, displays.get(a, a)) for a, findings in wanted.items()
            for f in findings}
    prompts = sorted({p for both in pair.values() for p in both})
    if not prompts:
        return {}
    text = text_embeddings(prompts)
    row = {p: i for i, p in enumerate(prompts)}
    scale = 1.0 / float(model.temperature.detach())
    scores: dict[str, dict[str, float]] = {}
    for anatomy, findings in wanted.items():
        if not findings:
            continue
        image = encoded.embeddings[anatomy].to(text.device)
        pairs = torch.tensor([[row[p] for p in pair[anatomy, f]] for f in findings], device=text.device)
        logits = (text[pairs] @ image) * scale  # (F, 2)
        probability = torch.softmax(logits.float(), dim=-1)[:, 0]
        scores[anatomy] = {f: round(float(p), 6) for f, p in zip(findings, probability)}
    return scores
