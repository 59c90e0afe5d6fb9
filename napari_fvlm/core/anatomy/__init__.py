"""Anatomy: TotalSegmentator classes grouped into the anatomies a model scores, and the providers
that make those masks (TotalSegmentator in a worker process, mask files, masks in memory).

Names are imported on first use: the TotalSegmentator worker lives in this package, and nnU-Net's
helper processes import it again, so the package itself must cost nothing to import.
"""

from importlib import import_module

_EXPORTS = {
    "align": ("align_labels",),
    "catalog": ("AnatomyGroup", "GROUP_SETS", "group_set", "group_masks", "groups_for_class",
                "lateral_groups", "resolve_query_anatomies"),
    "providers": ("SegmentationProvider", "MaskFileProvider", "VolumeProvider",
                  "to_total_ids"),
    "totalseg": ("TotalSegmentatorProvider", "missing_models", "totalseg_weights_dir"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
