"""The laterality check: files stored in other orientations read back to the same world geometry."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fvlm.core.io.nifti import read_nifti
from napari_fvlm.core.phantom import FindingRequest, generate_phantom
from training.laterality import ORIENTATIONS, lateral_cases, write_oriented


def test_every_stored_orientation_reads_back_to_the_same_volume(tmp_path):
    phantom = generate_phantom(3, findings=[FindingRequest("lung nodule", "left")])
    for codes in ORIENTATIONS.values():
        path = write_oriented(phantom.ct, tmp_path / "ct.nii.gz", codes)
        import nibabel as nib

        assert nib.aff2axcodes(nib.load(path).affine) == codes
        volume = read_nifti(path)
        np.testing.assert_array_equal(volume.array, phantom.ct.array)
        np.testing.assert_allclose(volume.affine, phantom.ct.affine, atol=1e-4)


@pytest.mark.slow
def test_lateral_cases_keep_one_sided_lung_findings():
    cases = lateral_cases(range(20000, 20010))
    assert cases
    for phantom, finding in cases:
        assert finding.side in ("left", "right") and finding.anatomy.startswith("lung")
        same = [f for f in phantom.findings if f.name == finding.name]
        assert {f.side for f in same} == {finding.side}
