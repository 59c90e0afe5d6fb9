"""`generate_phantom`: one synthetic chest CT with anatomy labels, lesion labels and a report.

Independent random streams (anatomy, texture, finding choice, finding placement, noise, report
wording) come from one seed, so the same seed always gives the same body whatever findings are
asked for, and identical arrays and text when asked the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy.totalseg_classes import TOTAL_CLASSES
from ..errors import FvlmInputError
from ..io.labels import present_values
from ..volume import Volume
from . import findings as lung_painters
from . import findings_mediastinum as mediastinum_painters
from .body import paint_ribs, paint_spine, paint_sternum, paint_wall
from .catalog import PAINT_ORDER, Placement, check_requests, place, random_requests
from .findings import Scene
from .layout import apply_anatomy_findings, sample_layout
from .organs import paint_abdomen, paint_lungs, paint_mediastinum
from .report import compose, describe, normal_sentences
from .shapes import Frame
from .texture import add_noise_and_blur, paint_lung_texture, to_int16
from .tissue import LABEL_OF_CODE, Canvas, hu_table

MIN_FIELD_OF_VIEW_MM = (200.0, 300.0, 300.0)  # z, y, x
NOISE_HU = 15.0


@dataclass
class PlacedFinding:
    """One finding instance as placed: where, how big, and the words the report used for it."""

    name: str
    anatomy: str  # `total` class holding most of its lesion voxels
    side: str | None  # patient's side, for lung findings
    lesion_label: int
    center_zyx: tuple[float, float, float]  # lesion centroid, voxel indices
    center_world_mm: tuple[float, float, float]  # the same point, RAS mm
    size_mm: float  # diameter (nodules, liver lesions), depth (effusions), rim, speck or extent
    sentence: str  # its sentence in FINDINGS
    impression: str  # its line in IMPRESSION
    key: str  # the anatomy its sentences concern (see report.SENTENCE_KEYS)


@dataclass
class Phantom:
    ct: Volume
    anatomy: Volume
    lesions: Volume
    report: str
    findings: list[PlacedFinding]
    seed: int
    sentences: list[tuple[str, str]]  # FINDINGS sentences with the anatomy key each concerns
    impression: list[tuple[str, str]]  # IMPRESSION lines with their key ("" for a normal study)


def _painter(name: str):
    attribute = name.replace("-", "_").replace(" ", "_")
    return getattr(lung_painters, attribute, None) or getattr(mediastinum_painters, attribute)


def _check_grid(seed, shape, spacing) -> tuple[tuple[int, int, int], np.ndarray]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FvlmInputError(f"the phantom seed must be a whole number >= 0, got {seed!r}.")
    try:
        shape = tuple(int(n) for n in shape)
        spacing = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        raise FvlmInputError("shape and spacing_zyx must each be three numbers (z, y, x).") from None
    if len(shape) != 3 or spacing.shape != (3,) or min(shape) < 16 or not np.all(spacing > 0):
        raise FvlmInputError(f"shape {shape} / spacing {tuple(spacing)} is not usable: give three sizes "
                             f">= 16 voxels and three positive spacings in mm, (z, y, x).")
    fov = np.asarray(shape) * spacing
    if np.any(fov < MIN_FIELD_OF_VIEW_MM):
        raise FvlmInputError(f"the field of view {tuple(np.round(fov))} mm (shape x spacing, z y x) is too "
                             f"small for a chest; it needs at least {MIN_FIELD_OF_VIEW_MM} mm.")
    return shape, spacing


def _placements(requests, rng: np.random.Generator) -> list[Placement]:
    """Checked placements in paint order; of two effusions on one side, an unplaced one moves
    to the other side."""
    placed = [place(r, rng) for r in requests]
    effusions = [i for i, p in enumerate(placed) if p.kind.name == "pleural effusion"]
    if len(effusions) == 2 and placed[effusions[0]].side == placed[effusions[1]].side:
        movable = [i for i in effusions if requests[i].where is None]
        if not movable:
            raise FvlmInputError("pleural effusion was requested twice on one side; ask once per side.")
        i, other = movable[-1], "right" if placed[effusions[0]].side == "left" else "left"
        placed[i] = Placement(placed[i].kind, f"lung_lower_lobe_{other}", other)
    return sorted(placed, key=lambda p: PAINT_ORDER.index(p.kind.name))


def generate_phantom(seed: int, shape=(128, 256, 256), spacing_zyx=(2.5, 1.5, 1.5),
                     findings=None) -> Phantom:
    """A synthetic chest CT. ``findings``: None for random ones (each kind with probability
    about 0.3), or a list of `FindingRequest` / 'name[:where]' strings ([] for a normal study)."""
    shape, spacing = _check_grid(seed, shape, spacing_zyx)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
    anatomy_rng, texture_rng, choice_rng, finding_rng, noise_rng, report_rng = streams
    requests = random_requests(choice_rng) if findings is None else check_requests(findings)
    placements = _placements(requests, choice_rng)

    layout = sample_layout(anatomy_rng)
    names = {p.kind.name for p in placements}
    apply_anatomy_findings(layout, finding_rng, "cardiomegaly" in names, "pericardial effusion" in names,
                           "hiatal hernia" in names)
    shift = anatomy_rng.uniform(-1.0, 1.0, 3) * (10.0, 8.0, 10.0) / spacing
    frame = Frame(shape, spacing, (np.asarray(shape) - 1) / 2 + shift)
    canvas = Canvas(shape)
    for paint in (paint_wall, paint_lungs, paint_abdomen, paint_mediastinum, paint_spine, paint_ribs,
                  paint_sternum):
        paint(canvas, frame, layout)
    anatomy = LABEL_OF_CODE[canvas.material]
    hu = hu_table(anatomy_rng)[canvas.material]
    paint_lung_texture(hu, canvas, frame, layout, texture_rng)

    lesion_dtype = np.uint8 if len(placements) < 255 else np.uint16
    scene = Scene(frame, layout, canvas, anatomy, hu, np.zeros(shape, lesion_dtype), finding_rng)
    done = []
    for placement in placements:
        label = len(done) + 1
        painted = _painter(placement.kind.name)(scene, placement, label)
        if painted is None:
            if findings is not None:
                raise FvlmInputError(f"no room for a {placement.kind.name} in {placement.anatomy} in phantom "
                                     f"{seed}; try another place or seed.")
            continue
        done.append((placement, label, painted))
    add_noise_and_blur(hu, noise_rng, NOISE_HU)
    affine = frame.affine
    ct = Volume(to_int16(hu), affine)

    placed, finding_sentences, impression_lines = [], [], []
    for placement, label, painted in done:
        kind, side = placement.kind, placement.side
        key = f"lung_{side}" if kind.report_key == "lung" else kind.report_key
        sentence, line = describe(kind.name, painted.anatomy, side, painted.size_mm, painted.details,
                                  report_rng)
        zyx = np.argwhere(scene.lesions[painted.box] == label).mean(axis=0) + [s.start for s in painted.box]
        world = ct.to_world(zyx)
        placed.append(PlacedFinding(kind.name, painted.anatomy, side, label,
                                    tuple(float(v) for v in zyx), tuple(float(v) for v in world),
                                    float(painted.size_mm), sentence, line, key))
        finding_sentences.append((sentence, key))
        impression_lines.append((line, key))
    normals = normal_sentences([(p.name, p.side) for p in placed], report_rng)
    report, sentences, impression = compose(finding_sentences, impression_lines, normals, report_rng)

    anatomy_labels = {int(i): TOTAL_CLASSES[int(i)] for i in present_values(anatomy)}
    lesion_labels = {p.lesion_label: p.name for p in placed}
    return Phantom(ct, Volume(anatomy, affine.copy(), labels=anatomy_labels),
                   Volume(scene.lesions, affine.copy(), labels=lesion_labels), report, placed, int(seed),
                   sentences, impression)
