"""De-identification of DICOM datasets: PS3.15 Annex E Basic Profile with every option.

Pure pydicom (no Django): the API, the worker and the management commands call the same functions and
pass the key themselves. See ``docs/deidentification.md``.
"""

from .engine import DeidReport, deidentify_dataset, deidentify_file
from .fingerprint import Fingerprint, collect_identifiers
from .options import OPTION_NAMES, DeidOptions
from .verify import verify_deidentified

__all__ = [
    "OPTION_NAMES",
    "DeidOptions",
    "DeidReport",
    "Fingerprint",
    "collect_identifiers",
    "deidentify_dataset",
    "deidentify_file",
    "verify_deidentified",
]
