"""Which patient direction each screen edge of a view faces, and where its slice lies in mm.

Qt-free. napari's world here is LPS millimetres in (z, y, x) order (core/geometry.py): world
axis 0 grows to the patient's Superior, axis 1 to Posterior, axis 2 to Left, whatever the
file's storage order (every file is brought to that frame on reading). A view shows two world
axes: the first as screen rows, the second as columns, each either way round (napari's camera
``orientation2d``: rows "down" or "up", columns "right" or "left").
"""

from __future__ import annotations

from ..core.geometry import DISPLAY_AXES_RAS


def camera_of(viewer):
    """A viewer's (or viewer model's) camera: ``scene.camera`` since napari 0.9, ``camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


# world axis -> (letter where the axis grows, letter where it shrinks)
AXIS_LETTERS = {0: ("S", "I"), 1: ("P", "A"), 2: ("L", "R")}
# world axis -> (the RAS coordinate's name, the sign from napari world to RAS)
AXIS_RAS = {axis: ("xyz"[coordinate], sign) for axis, (coordinate, sign) in enumerate(DISPLAY_AXES_RAS)}
# the plane whose slices step along a world axis
PLANE_OF_AXIS = {0: "axial", 1: "coronal", 2: "sagittal"}
# radiological display: dims order and camera orientation (rows, columns) per plane
PLANES = {
    "axial": ((0, 1, 2), ("down", "right")),  # anterior up, the patient's right on screen left
    "coronal": ((1, 0, 2), ("up", "right")),  # superior up, the patient's right on screen left
    "sagittal": ((2, 0, 1), ("up", "right")),  # superior up, anterior on screen left
}


def edge_letters(displayed: tuple[int, int], orientation2d: tuple[str, str]) -> dict[str, str]:
    """{"top", "bottom", "left", "right"} -> patient letter for a view of world axes ``displayed``."""
    rows, columns = displayed
    rows_grow_down = _name(orientation2d[0]) == "down"
    columns_grow_right = _name(orientation2d[1]) == "right"
    row_grow, row_shrink = AXIS_LETTERS[rows]
    col_grow, col_shrink = AXIS_LETTERS[columns]
    return {
        "top": row_shrink if rows_grow_down else row_grow,
        "bottom": row_grow if rows_grow_down else row_shrink,
        "left": col_shrink if columns_grow_right else col_grow,
        "right": col_grow if columns_grow_right else col_shrink,
    }


def slice_text(axis: int, world_value: float) -> str:
    """"axial  z = +42.0 mm": the plane and its RAS coordinate in mm (not a slider index)."""
    name, sign = AXIS_RAS[axis]
    return f"{PLANE_OF_AXIS[axis]}  {name} = {sign * float(world_value):+.1f} mm"


def _name(direction) -> str:
    """'down' for napari's orientation enums and for plain strings alike."""
    return str(getattr(direction, "value", direction))
