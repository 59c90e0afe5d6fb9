"""Layer wiring: volumes out of napari layers, heatmap and anatomy layers into the viewer.

napari's world is LPS millimetres in (z, y, x) order (core/geometry.py), so a RAS point
[x, y, z] sits at world (z, -y, -x). Heatmaps are shown at about their own resolution with a
scale and translate, on a grid whose extent is the CT's (`jobs.shown_map`, made in a worker) so
the sliders never move when one is added; napari interpolates them on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._layers import (
    AFFINE_KEY,
    HEATMAP_KEY,
    LABEL_COLORMAP_KEY,
    LINKED_PRIOR_KEY,
    SOURCE_PATH_KEY,
    layer_volume,
    volume_layer_data,
)
from ..core.errors import FvlmInputError
from ..core.geometry import display_scale_translate, ras_to_display
from ..core.volume import Volume
from .jobs import AnalysisRequest, AnatomyChoice

HEATMAP_COLORMAP = "inferno"
HEATMAP_OPACITY = 0.7
HIDDEN = np.zeros(4, np.float32)


def _attributes(layer) -> dict:
    """A snapshot of the layer state `layer_volume` reads (safe to hand to a worker)."""
    features = getattr(layer, "features", None)
    return {"metadata": dict(layer.metadata), "scale": np.array(layer.scale), "translate": np.array(layer.translate),
            "features": features.copy() if features is not None else None}


class LayerWiring:
    """Everything the panel does to the viewer's layers and dims."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer

    # --- reading layers -------------------------------------------------------------------------
    def ct_candidates(self) -> list:
        """Image layers a CT could be in: not the heatmaps or the linked prior made here."""
        from napari.layers import Image

        made_here = (HEATMAP_KEY, LINKED_PRIOR_KEY)
        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and not any(key in layer.metadata for key in made_here)]

    def labels_candidates(self) -> list:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def labels_beside(self, name: str | None) -> str | None:
        """The Labels layer read from the folder the layer ``name`` was read from (a study's or a
        phantom's masks beside its CT), or None."""
        def folder(layer):
            path = layer.metadata.get(SOURCE_PATH_KEY) if layer is not None else None
            return str(Path(path).resolve().parent) if path else None

        home = folder(self.find(name))
        return next((layer.name for layer in self.labels_candidates() if home and folder(layer) == home), None)

    def find(self, name: str | None):
        """The layer called ``name``, or None."""
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def ct_volume(self, layer) -> Volume:
        """The CT a layer shows, refused with a clear message when it cannot be one."""
        if layer is None:
            raise FvlmInputError("Open a CT first (drag a NIfTI file or DICOM folder onto napari), "
                                 "then choose it as the CT.")
        self._check_volume_layer(layer, "CT")
        if layer.rgb:
            raise FvlmInputError(f"'{layer.name}' is a colour image; the analysis needs a CT in HU.")
        return layer_volume(np.asarray(layer.data), _attributes(layer))

    def labels_state(self, layer) -> tuple[np.ndarray, dict]:
        """A Labels layer's array and attributes, checked; the worker names its labels (a full scan)."""
        if layer is None:
            raise FvlmInputError("Choose the Labels layer that holds the anatomy masks, "
                                 "or another anatomy source.")
        self._check_volume_layer(layer, "mask")
        return np.asarray(layer.data), _attributes(layer)

    def analysis_request(self, choices) -> AnalysisRequest:
        """The analysis request for the form's choices (`InputChoices`); refuses unusable inputs."""
        ct_layer = self.find(choices.ct_layer)
        ct = self.ct_volume(ct_layer)
        if choices.anatomy_kind == "labels":
            layer = self.find(choices.labels_layer)
            anatomy = AnatomyChoice("labels", layer_state=self.labels_state(layer),
                                    description=f"Labels layer '{layer.name}'", layer=layer.name)
        elif choices.anatomy_kind == "file":
            if not choices.mask_path:
                raise FvlmInputError("Choose the mask file (Anatomy → Mask file → Browse…).")
            anatomy = AnatomyChoice("file", path=choices.mask_path, description=choices.mask_path)
        else:
            anatomy = AnatomyChoice("totalseg")
        if not choices.model_source:
            raise FvlmInputError("Choose the checkpoint folder (Model → Checkpoint folder → Browse…).")
        return AnalysisRequest(ct, ct_layer.name, anatomy, choices.model_source, choices.device)

    @staticmethod
    def _check_volume_layer(layer, role: str) -> None:
        if layer.multiscale:
            raise FvlmInputError(f"'{layer.name}' is a multiscale (pyramid) layer; open the {role} "
                                 "volume itself.")
        if layer.ndim != 3:
            raise FvlmInputError(f"'{layer.name}' is {layer.ndim}D; the analysis needs a 3D {role} volume.")
        if not np.allclose(layer.affine.affine_matrix, np.eye(4)) or not np.allclose(layer.rotate, np.eye(3)):
            raise FvlmInputError(f"'{layer.name}' is rotated or sheared in napari; reset its transform "
                                 "so its geometry is the file's.")

    # --- showing results ------------------------------------------------------------------------
    def heatmap_layers(self) -> list:
        return [layer for layer in self.viewer.layers if HEATMAP_KEY in layer.metadata]

    def show_heatmap(self, shown, kind: str, threshold: float, keep_previous: bool):
        """Show a `jobs.ShownMap` as an additive Image layer, reusing the layer of the same name.

        Without ``keep_previous`` the one heatmap layer is refilled and renamed rather than
        replaced: removing a layer makes napari collect garbage on the GUI thread (~0.5 s).
        """
        name = shown.name
        scale, translate = display_scale_translate(shown.affine)
        layer = self.find(name)
        if not keep_previous:
            others = [other for other in self.heatmap_layers() if other.name != name]
            if layer is None and others:
                layer = others.pop(0)
                layer.name = name
            for other in others:
                self.viewer.layers.remove(other)
        limits = (min(float(threshold), 0.99), 1.0)
        if layer is not None and HEATMAP_KEY in layer.metadata:
            # maps of one CT share their grid: set only what changed, each change redraws every view
            if not (np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate)):
                layer.scale, layer.translate = scale, translate
            layer.data = shown.values
            if not np.allclose(layer.contrast_limits, limits):
                layer.contrast_limits = limits
            layer.metadata[HEATMAP_KEY] = kind
            layer.metadata[AFFINE_KEY] = np.asarray(shown.affine, float).copy()
            if not layer.visible:
                layer.visible = True
            return layer
        layer = self.viewer.add_image(
            shown.values, name=name, scale=scale, translate=translate, colormap=HEATMAP_COLORMAP,
            blending="additive", opacity=HEATMAP_OPACITY, contrast_limits=limits, interpolation2d="linear",
            metadata={HEATMAP_KEY: kind, AFFINE_KEY: np.asarray(shown.affine, float).copy()})
        return layer  # its colour bar is painted by the canvas overlay (cheap), not napari's

    def set_heatmap_threshold(self, threshold: float) -> None:
        for layer in self.heatmap_layers():
            layer.contrast_limits = (min(float(threshold), 0.99), 1.0)

    def show_anatomy(self, labels: Volume, name: str):
        """Add (or refill) a Labels layer with the analysed masks; names show under the cursor."""
        data, kwargs, _kind = volume_layer_data(labels, name)
        layer = self.find(name)
        if layer is None:
            return self.viewer.add_labels(data, **kwargs)
        layer.data, layer.features = data, kwargs["features"]
        return layer

    def set_labels_visible(self, layer, visible_ids, all_ids) -> None:
        """Show only the labels in ``visible_ids`` of ``all_ids``, keeping each label's own colour.

        The ids come from the anatomy list (named when the masks were read): no scan of the volume.
        """
        from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap

        original = layer.metadata.get(LABEL_COLORMAP_KEY)
        if original is None:
            original = layer.colormap
            if not isinstance(original, (CyclicLabelColormap, DirectLabelColormap)):
                return
            layer.metadata[LABEL_COLORMAP_KEY] = original
        ids = [int(i) for i in all_ids]
        colors = original.map(np.asarray(ids, dtype=layer.data.dtype)) if ids else []
        shown = {int(i) for i in visible_ids}
        color_dict = {None: HIDDEN, 0: HIDDEN}
        color_dict.update({i: (c if i in shown else HIDDEN) for i, c in zip(ids, colors)})
        layer.colormap = DirectLabelColormap(color_dict=color_dict)

    def jump_to(self, ras_xyz) -> float:
        """Move the axial slider to a RAS point's slice; returns the napari world z."""
        z = float(ras_to_display(ras_xyz)[0])
        self.viewer.dims.set_point(0, z)
        return z

    # --- cursor ---------------------------------------------------------------------------------
    def cursor_readout(self, ct_layer, anatomy_layer) -> str:
        """"HU -850 | lung_upper_lobe_left" for the voxel under the cursor ('' outside the CT)."""
        position = np.asarray(self.viewer.cursor.position, float)
        value = _value_at(ct_layer, position)
        if value is None:
            return ""
        text = f"HU {value:.0f}"
        label = _value_at(anatomy_layer, position)
        if label:
            names = anatomy_layer.features
            match = names["name"][names["index"] == label] if "index" in names and "name" in names else []
            text += f" | {match.iloc[0] if len(match) else f'label {int(label)}'}"
        return text


def _value_at(layer, world) -> float | None:
    """The layer's value at a napari world position, None outside it (or with no layer)."""
    if layer is None or layer.ndim != len(world) or layer.multiscale:
        return None
    index = np.rint(layer.world_to_data(world)).astype(int)
    if np.any(index < 0) or np.any(index >= np.asarray(layer.data.shape)):
        return None
    return float(layer.data[tuple(index)])
