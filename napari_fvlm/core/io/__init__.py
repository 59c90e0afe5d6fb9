"""Reading and writing volumes: NIfTI and DICOM, into and out of `Volume`."""
