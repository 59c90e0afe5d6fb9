"""CT window presets (level/width in HU) as radiologists name them."""

WINDOW_PRESETS: dict[str, tuple[float, float]] = {  # name: (level, width)
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "abdomen": (40.0, 400.0),
    "brain": (40.0, 80.0),
}
DEFAULT_WINDOW = "mediastinum"


def contrast_limits(preset: str) -> tuple[float, float]:
    """(low, high) HU shown from black to white for a preset name."""
    try:
        level, width = WINDOW_PRESETS[preset]
    except KeyError:
        raise KeyError(f"unknown window {preset!r}; choose one of {', '.join(WINDOW_PRESETS)}") from None
    return level - width / 2, level + width / 2
