"""Mutated real files (cut short, bytes overwritten) meet only the service's own errors, never a crash.

Every bundled pydicom Part 10 file is cut or has bytes overwritten at seeded random places, then goes
the upload path's way: validation, metadata, de-identification, metadata of the output. Anything but
a DicomServiceError would be a 500 at the API.
"""

import random
import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.errors import DicomServiceError
from dicom.services.ingest import validate_staged
from dicom.services.metadata import extract_metadata

KEY = b"mutation-test-key-0123456789abcdef"


def _part10_files() -> list[Path]:
    paths = []
    for name in get_testdata_files():
        path = Path(name)
        if path.is_file() and path.read_bytes()[128:132] == b"DICM":
            paths.append(path)
    return sorted(paths)


def _mutations(data: bytes, rng: random.Random) -> list[bytes]:
    cut = data[: rng.randrange(132, len(data))]
    one = bytearray(data)
    one[rng.randrange(132, len(data))] = rng.randrange(256)
    many = bytearray(data)
    for _ in range(8):
        many[rng.randrange(132, len(data))] = rng.randrange(256)
    return [cut, bytes(one), bytes(many)]


@pytest.mark.parametrize("path", _part10_files(), ids=lambda path: path.name)
def test_mutated_files_raise_only_service_errors(path, tmp_path):
    rng = random.Random(path.name)
    for index, mutated in enumerate(_mutations(path.read_bytes(), rng)):
        source = tmp_path / f"mutated-{index}.dcm"
        source.write_bytes(mutated)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                validated = validate_staged(source)
                extract_metadata(validated.header)
                dataset, _ = deidentify_file(source, tmp_path / "out.dcm", options=DeidOptions(), key=KEY)
                extract_metadata(dataset)
            except DicomServiceError as error:
                assert error.detail
