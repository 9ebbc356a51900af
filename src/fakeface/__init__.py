"""fakeface: train, evaluate, explain and serve detectors of generated face images."""

__version__ = "0.1.0"

# Fake is the positive class everywhere: in labels, metrics, outputs and CSVs.
REAL, FAKE = 0, 1
CLASS_NAMES = ("real", "fake")
