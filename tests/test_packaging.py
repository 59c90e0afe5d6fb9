"""Packaging: the napari manifest validates and is what napari discovers; the `fvlm` command exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import napari_fvlm


def test_manifest_validates_and_declares_every_contribution():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(napari_fvlm.__file__).parent / "napari.yaml")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert contributions.readers and {w.layer_types[0] for w in contributions.writers} == {"image", "labels"}
    assert [s.display_name for s in contributions.sample_data] == ["Synthetic chest CT"]
    assert {"CT window presets"} <= {w.display_name for w in contributions.widgets}


def test_napari_finds_the_plugin_through_its_entry_point():
    names = [ep.name for ep in entry_points(group="napari.manifest")]
    assert "napari-fvlm" in names


def test_console_command_is_installed():
    fvlm = shutil.which("fvlm", path=str(Path(sys.executable).parent))
    assert fvlm is not None
    result = subprocess.run([fvlm, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("phantom", "analyze", "demo", "convert-official"):
        assert command in result.stdout
