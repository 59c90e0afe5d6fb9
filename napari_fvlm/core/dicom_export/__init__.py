"""DICOM results for a CT read from a DICOM series: Segmentations (anatomy masks, finding regions,
probability maps) and a TID 1500 Structured Report of the per-anatomy findings, referencing the
source series. highdicom builds and checks the objects; it is imported lazily."""
