"""Qt-free core of napari-fvlm: volumes, anatomy, phantom, model and inference.

Nothing under ``napari_fvlm.core`` imports Qt or napari.
"""
