"""Packaging: the napari manifest validates and is what napari discovers; the `fvlm` command exists;
a wheel of the tree works from a fresh venv; `__version__`; no Qt binding forced on users."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import napari_fvlm


def test_the_manifest_at_the_top_level_is_the_one_the_package_ships():
    root = Path(napari_fvlm.__file__).resolve().parent.parent
    shipped = Path(napari_fvlm.__file__).parent / "napari.yaml"
    assert (root / "napari.yaml").is_file() and shipped.resolve() == (root / "napari.yaml").resolve()
    result = subprocess.run([str(Path(sys.executable).parent / "npe2"), "validate", "napari-fvlm"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "valid" in result.stdout.lower(), result.stdout + result.stderr


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


def test_version_comes_from_the_installed_metadata_else_from_pyproject(monkeypatch):
    import importlib.metadata as metadata

    import tomllib

    napari_fvlm._version.cache_clear()
    assert napari_fvlm.__version__ == metadata.version("napari-fvlm")

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    napari_fvlm._version.cache_clear()
    try:
        pyproject = Path(napari_fvlm.__file__).resolve().parent.parent / "pyproject.toml"
        expected = tomllib.loads(pyproject.read_text())["project"]["version"] if pyproject.is_file() else "0+unknown"
        assert napari_fvlm.__version__ == expected
    finally:
        napari_fvlm._version.cache_clear()


WHEEL_CHECK = """
import sys
from importlib.metadata import entry_points
from pathlib import Path

import nibabel as nib
import npe2
import numpy as np

from importlib.metadata import requires, version

import napari_fvlm

prefix = Path(sys.prefix).resolve()
assert napari_fvlm.__version__ == version("napari-fvlm")
qt = ("pyqt5", "pyqt6", "pyside2", "pyside6")
requirements = [r.lower().replace(" ", "") for r in requires("napari-fvlm")]
assert not [r for r in requirements if r.startswith(qt) and "extra==" not in r], requirements  # no hard Qt binding
assert [r for r in requirements if r.startswith(qt) and 'extra=="all"' in r], requirements
assert Path(napari_fvlm.__file__).resolve().is_relative_to(prefix), napari_fvlm.__file__
manifest = Path(napari_fvlm.__file__).parent / "napari.yaml"
assert manifest.is_file() and not manifest.is_symlink(), manifest  # the wheel holds the manifest itself
npe2.PluginManifest.from_distribution("napari-fvlm").validate_imports()  # what `npe2 validate` checks
ours = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-fvlm"]
assert len(ours) == 1 and Path(ours[0].dist.locate_file("")).resolve().is_relative_to(prefix), ours
ct = np.full((10, 12, 14), -1000, np.int16)
ct[3:7, 4:8, 5:9] = np.arange(4 * 4 * 4, dtype=np.int16).reshape(4, 4, 4) * 20 - 600
nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 2.5, 1.0])), "ct.nii.gz")
npe2.PluginManager.instance().discover()  # what napari does when it starts
(data, meta, kind), = npe2.read(["ct.nii.gz"], stack=False, plugin_name="napari-fvlm")
assert kind == "image" and data.shape == (14, 12, 10), (kind, data.shape)
assert np.allclose(meta["scale"], [2.5, 0.8, 0.8]), meta["scale"]
assert data.min() == -1000 and data.max() == ct.max(), (data.min(), data.max())

from napari.components import ViewerModel

layers = ViewerModel().open("ct.nii.gz", plugin="napari-fvlm")
assert [layer.name for layer in layers] == ["ct"] and layers[0].data.shape == (14, 12, 10)
print("opened", napari_fvlm.__version__, napari_fvlm.__file__)
"""


@pytest.mark.slow  # builds a wheel and a fresh venv
def test_a_wheel_installed_in_a_fresh_venv_opens_a_nifti_through_the_plugin(tmp_path):
    """Build a wheel from this tree, install it (not editable) in a new venv and open a NIfTI file
    through napari's plugin discovery. The venv reuses this environment's dependencies through a
    path entry (not its .pth files, so an editable install of this project stays invisible)."""
    import sysconfig

    root = Path(napari_fvlm.__file__).resolve().parent.parent
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("napari_fvlm", "training"):
        shutil.copytree(root / name, source / name, ignore=ignore, symlinks=True)  # the manifest's link as is
    for name in ("pyproject.toml", "README.md", "napari.yaml"):
        shutil.copy2(root / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("napari_fvlm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert (venv / "bin" / "fvlm").is_file()
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", WHEEL_CHECK], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("opened ") and str(venv) in result.stdout
