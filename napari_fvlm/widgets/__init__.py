"""napari dock widgets: thin, Qt-facing; the science lives in napari_fvlm.core."""
