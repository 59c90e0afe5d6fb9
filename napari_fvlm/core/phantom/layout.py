"""Where every organ of one phantom lies: a nominal adult chest, resized and jittered per seed.

All positions are patient mm (z superior from the bottom of the modelled 320 mm, y posterior,
x to the patient's left; see shapes.py). Nominal numbers describe a 320 x 230 mm chest; lateral
positions scale with the body's width and antero-posterior ones with its depth, organ sizes get
their own +-10 % jitter. Findings that change anatomy (an enlarged heart, fluid around it, a
hiatal hernia) are applied here, before anything is painted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes import Z_SPAN_MM, Ellipsoid

VERTEBRAE = tuple(f"T{n}" for n in range(1, 13)) + ("L1",)
VERTEBRA_HEIGHT_MM = Z_SPAN_MM / len(VERTEBRAE)


@dataclass
class Tube:
    points: np.ndarray  # (n, 3) mm
    radii: np.ndarray  # (n,) mm


@dataclass
class Layout:
    body_semi_yx: tuple[float, float]
    fat_mm: float
    muscle_mm: float
    dome_top: dict[str, float]  # highest point of each hemidiaphragm, z mm
    lungs: dict[str, tuple[np.ndarray, np.ndarray]]  # side -> (centre yx, semi yx)
    apex_z: float
    oblique_fissure: dict[str, tuple[float, float]]  # side -> (z at y = 0, dz/dy)
    horizontal_fissure_z: float
    heart: Ellipsoid
    aorta: Tube
    trachea: Tube
    bronchi: list[Tube]
    esophagus: Tube
    esophagus_air: list[tuple[float, float]]  # fractions of the esophagus length holding air
    liver: Ellipsoid
    spleen: Ellipsoid
    stomach: Ellipsoid
    stomach_air_fraction: float
    kidneys: dict[str, Ellipsoid]
    spine_y: float
    pericardial_rim_mm: float = 0.0
    heart_scale: float = 1.0
    hernia: Ellipsoid | None = None

    def body_scale(self, z) -> np.ndarray:
        """Cross-section scale per height: the thoracic inlet is narrower than the lower chest."""
        return 1.0 - 0.1 * np.clip((np.asarray(z, dtype=np.float32) - 230.0) / 90.0, 0.0, 1.0)

    def cavity_fraction(self) -> float:
        return 1.0 - (self.fat_mm + self.muscle_mm) / self.body_semi_yx[0]

    def body_radius(self, y, x) -> np.ndarray:
        """Normalised body radius (1 on the skin): an ellipse in front, flatter at the back."""
        b, a = self.body_semi_yx
        y, x = np.asarray(y, np.float32), np.asarray(x, np.float32)
        front = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        back = np.cbrt(np.abs(x / a) ** 3 + np.abs(y / b) ** 3)
        return np.where(y < 0, front, back).astype(np.float32)

    def diaphragm_z(self, y, x) -> np.ndarray:
        """Height of the lung floor: two domes, the right one higher, deepest at the back."""
        b, a = self.body_semi_yx
        y, x = np.asarray(y, np.float32), np.asarray(x, np.float32)
        depth_y = np.where(y < 0, np.float32(0.9 * b), np.float32(0.7 * b))
        out = None
        for side, sign in (("right", -1.0), ("left", 1.0)):
            spread = ((x - sign * 0.36 * a) / (0.55 * a)) ** 2 + (y / depth_y) ** 2
            dome = self.dome_top[side] - 60.0 * spread
            out = dome if out is None else np.maximum(out, dome)
        return out.astype(np.float32)


def sample_layout(rng: np.random.Generator) -> Layout:
    """A random, anatomically ordered adult chest and upper abdomen."""
    b, a = rng.uniform(105, 125), rng.uniform(148, 175)
    sy, sx = b / 115.0, a / 160.0

    def at(z, y, x):
        return np.array([z, y * sy, x * sx], dtype=float)

    def jit(*semi):
        return np.asarray(semi, float) * rng.uniform(0.9, 1.1)

    def tube(points, radii, scale=1.0):
        return Tube(np.array([at(*p) for p in points]), np.asarray(radii, float) * scale)

    dome_right = rng.uniform(130, 146)
    lungs = {"right": (np.array([8 * sy, -72 * sx]), np.array([92 * sy, 60 * sx])),
             "left": (np.array([10 * sy, 74 * sx]), np.array([90 * sy, 56 * sx]))}
    vessel_scale = rng.uniform(0.9, 1.1)
    layout = Layout(
        body_semi_yx=(b, a),
        fat_mm=rng.uniform(8, 28),
        muscle_mm=rng.uniform(9, 14),
        dome_top={"right": dome_right, "left": dome_right - rng.uniform(6, 16)},
        lungs=lungs,
        apex_z=rng.uniform(296, 310),
        oblique_fissure={side: (rng.uniform(176, 190), rng.uniform(0.55, 0.68))
                         for side in ("right", "left")},
        horizontal_fissure_z=rng.uniform(192, 204),
        heart=Ellipsoid(at(0.0, -30, 18), jit(48, 62, 45),
                        rng.uniform(-1.05, -0.8)),
        aorta=tube([(188, -14, -4), (232, -24, -8), (254, -18, -4), (266, -12, 16),
                    (260, 10, 26), (242, 32, 26), (180, 40, 28), (120, 38, 24),
                    (60, 32, 16), (-20, 28, 10)],
                   [14, 15, 14, 12.5, 12, 12, 12, 11, 10.5, 10], vessel_scale),
        trachea=tube([(335, 2, 0), (270, 4, 0), (228, 8, 0)], [9.5, 9.5, 9.5], vessel_scale),
        bronchi=[tube([(230, 8, 0), (214, 13, -26), (202, 18, -46)], [7.5, 6.5, 5.0], vessel_scale),
                 tube([(230, 8, 0), (220, 11, 22), (206, 16, 44)], [7.0, 6.0, 4.5], vessel_scale)],
        esophagus=tube([(335, 24, 2), (250, 28, 4), (190, 30, 8), (145, 24, 16), (118, 12, 34),
                        (104, 4, 46)], [8.0] * 6, rng.uniform(0.9, 1.1)),
        esophagus_air=[tuple(sorted(rng.uniform(0.05, 0.8, 2))) for _ in range(rng.integers(0, 3))],
        liver=Ellipsoid(at(rng.uniform(84, 96), -5, -45), jit(80, 88, 100), rng.uniform(0.1, 0.3)),
        spleen=Ellipsoid(at(rng.uniform(88, 100), 52, 88), jit(40, 46, 20), rng.uniform(-1.0, -0.75)),
        stomach=Ellipsoid(at(rng.uniform(86, 98), -8, 58), jit(40, 42, 36), rng.uniform(0.2, 0.6)),
        stomach_air_fraction=rng.uniform(0.1, 0.5),
        kidneys={"right": Ellipsoid(at(rng.uniform(8, 24), 55, -62), jit(50, 28, 24), 0.5),
                 "left": Ellipsoid(at(rng.uniform(18, 34), 55, 62), jit(50, 28, 24), -0.5)},
        spine_y=55.0 * sy,
    )
    heart = layout.heart  # resting on the diaphragm
    floor = float(layout.diaphragm_z(heart.center[1], heart.center[2]))
    heart.center[0] = floor + rng.uniform(0.7, 0.85) * heart.semi[0]
    return layout


def apply_anatomy_findings(layout: Layout, rng: np.random.Generator, cardiomegaly: bool,
                           pericardial_effusion: bool, hiatal_hernia: bool) -> None:
    """Enlarge the heart, add a pericardial rim and a herniated stomach where requested."""
    if cardiomegaly:
        scale = rng.uniform(1.3, 1.45)  # of each semi-axis; the heart grows forwards and leftwards
        heart = layout.heart
        center = heart.center + np.array([-4.0, -10.0, 16.0]) * (scale - 1.0) / 0.4
        layout.heart = Ellipsoid(center, heart.semi * scale, heart.angle)
        layout.heart_scale = scale
    if pericardial_effusion:
        layout.pericardial_rim_mm = float(rng.uniform(5, 16))
    if hiatal_hernia:
        size = rng.uniform(15, 30)
        y, x = 22.0 * layout.body_semi_yx[0] / 115.0, 12.0 * layout.body_semi_yx[1] / 160.0
        floor = float(layout.diaphragm_z(y, x))  # behind the heart, at the esophageal hiatus
        layout.hernia = Ellipsoid((floor + 0.6 * size, y, x), (size, 0.9 * size, 1.2 * size),
                                  rng.uniform(-0.3, 0.3))
