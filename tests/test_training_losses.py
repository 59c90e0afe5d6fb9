"""Losses on cases small enough to compute by hand."""

import math

import torch

from training.losses import (
    anatomy_contrastive_loss,
    global_clip_loss,
    global_image_embedding,
    soft_cross_entropy,
    soft_targets,
)

E = math.e
ONE = torch.tensor(1.0)


def _basis(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def _flags(*values):
    return torch.tensor(values, dtype=torch.bool)


def test_soft_targets_identity_normal_pairs_identical_texts():
    normal = _flags(True, True, False, False)
    ids = torch.tensor([1, 2, 3, 3])
    targets = soft_targets(normal, ids)
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    assert torch.equal(targets, expected)
    assert torch.equal(soft_targets(normal, ids, calibration=False), torch.eye(4))
    mixed = soft_targets(_flags(True, True, True), torch.tensor([5, 6, 5]))
    assert torch.allclose(mixed, torch.full((3, 3), 1 / 3))


def test_identity_targets_on_orthonormal_pairs():
    # two samples, image = text = e_i, temperature 1: logits = I, each row -log(e / (e + 1))
    image = {"heart": _basis([1, 0], [0, 1])}
    loss, values = anatomy_contrastive_loss(image, image, {"heart": _flags(True, True)},
                                            {"heart": _flags(False, False)}, {"heart": torch.tensor([1, 2])}, ONE)
    assert math.isclose(float(loss), math.log(1 + 1 / E), rel_tol=1e-6)
    assert set(values) == {"heart"}


def test_calibration_makes_two_normal_samples_positives():
    image = {"lung": _basis([1, 0], [0, 1])}
    args = ({"lung": _flags(True, True)}, {"lung": _flags(True, True)}, {"lung": torch.tensor([1, 2])}, ONE)
    calibrated, _ = anatomy_contrastive_loss(image, image, *args)
    plain, _ = anatomy_contrastive_loss(image, image, *args, calibration=False)
    # targets (0.5, 0.5): -0.5 * (1 - log(e + 1)) - 0.5 * (0 - log(e + 1)) = log(e + 1) - 0.5
    assert math.isclose(float(calibrated), math.log(E + 1) - 0.5, rel_tol=1e-6)
    assert math.isclose(float(plain), math.log(1 + 1 / E), rel_tol=1e-6)


def test_excluded_samples_leave_loss_and_get_no_gradient():
    base = _basis([1, 0, 0], [0, 1, 0])
    noise = torch.tensor([[0.3, -0.2, 0.9]])
    image = torch.cat([base, noise]).requires_grad_(True)
    text = torch.cat([base, -noise])
    include = _flags(True, True, False)
    loss, _ = anatomy_contrastive_loss({"aorta": image}, {"aorta": text}, {"aorta": include},
                                       {"aorta": _flags(False, False, False)}, {"aorta": torch.tensor([1, 2, 3])}, ONE)
    loss.backward()
    assert math.isclose(float(loss.detach()), math.log(1 + 1 / E), rel_tol=1e-6)
    assert torch.equal(image.grad[2], torch.zeros(3)) and image.grad[:2].abs().sum() > 0


def test_sum_or_mean_over_anatomies_and_single_samples_skipped():
    pair = _basis([1, 0], [0, 1])
    features = {"heart": pair, "lung": pair, "liver": pair}
    include = {"heart": _flags(True, True), "lung": _flags(True, True), "liver": _flags(True, False)}
    normal = {k: _flags(False, False) for k in features}
    ids = {k: torch.tensor([1, 2]) for k in features}
    total, values = anatomy_contrastive_loss(features, features, include, normal, ids, ONE)
    mean, _ = anatomy_contrastive_loss(features, features, include, normal, ids, ONE, reduction="mean")
    assert set(values) == {"heart", "lung"}  # one included liver sample: no negatives, no term
    assert math.isclose(float(total), 2 * math.log(1 + 1 / E), rel_tol=1e-6)
    assert math.isclose(float(mean), math.log(1 + 1 / E), rel_tol=1e-6)


def test_temperature_scales_logits():
    image = {"heart": _basis([1, 0], [0, 1])}
    args = ({"heart": _flags(True, True)}, {"heart": _flags(False, False)}, {"heart": torch.tensor([1, 2])})
    loss, _ = anatomy_contrastive_loss(image, image, *args, torch.tensor(0.5))
    assert math.isclose(float(loss), math.log(1 + math.exp(-2)), rel_tol=1e-6)


def test_co_teaching_mixes_peer_similarities_into_targets():
    image = {"heart": _basis([1, 0], [0, 1])}
    peer = {"heart": torch.tensor([[0.0, 0.0], [0.0, 0.0]])}  # the peer cannot tell the pair apart
    loss, _ = anatomy_contrastive_loss(image, image, {"heart": _flags(True, True)}, {"heart": _flags(False, False)},
                                       {"heart": torch.tensor([1, 2])}, ONE, peer_logits=peer, alpha=0.5)
    # targets per row: 0.5 * (1, 0) + 0.5 * (0.5, 0.5) = (0.75, 0.25)
    p_same, p_other = E / (E + 1), 1 / (E + 1)
    expected = -(0.75 * math.log(p_same) + 0.25 * math.log(p_other))
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    manual = soft_cross_entropy(torch.eye(2), torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    assert math.isclose(float(loss), float(manual), rel_tol=1e-6)


def test_global_clip_uses_mean_of_included_anatomies():
    image = {"heart": _basis([1, 0], [0, 1]), "lung": _basis([1, 0], [1, 0])}
    include = {"heart": _flags(True, True), "lung": _flags(True, False)}
    pooled, keep = global_image_embedding(image, include)
    assert torch.allclose(pooled, _basis([1, 0], [0, 1])) and keep.all()
    loss = global_clip_loss(image, include, _basis([1, 0], [0, 1]), ONE)
    assert math.isclose(float(loss), math.log(1 + 1 / E), rel_tol=1e-6)
    none = {"heart": _flags(False, False), "lung": _flags(False, False)}
    assert float(global_clip_loss(image, none, _basis([1, 0], [0, 1]), ONE)) == 0.0
