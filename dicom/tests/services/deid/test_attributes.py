"""The matching rules the engine, the fingerprint and the verification pass share."""

import random

import pytest

from dicom.services.deid.attributes import LARGE_BINARY_VALUE, binary_holds_identifier

IDENTIFIERS = ("doe", "jane", "pid0000042", "saint elsewhere", "19700102", "müller", "山田太郎x", "山田")


def holds_identifier_one_by_one(value: bytes, identifiers: tuple[str, ...]) -> bool:
    """The rule as written: each identifier of 4 characters or more, in each encoding, searched for."""
    if not value or not identifiers:
        return False
    lowered = bytes(value).lower()
    for ident in identifiers:
        if len(ident) < 4:
            continue
        for encoded in (
            ident.encode("latin-1", "ignore"),
            ident.encode("utf-16-le"),
            ident.encode("utf-16-be"),
        ):
            if encoded in lowered:
                return True
    return False


def test_a_large_binary_value_is_searched_as_each_identifier_would_be():
    # The vectorised search of large values finds exactly what one search per identifier finds:
    # at the first and last offsets, even and odd, in any case, in random and in text-like bytes.
    rng = random.Random(12)
    found = 0
    for trial in range(600):
        size = rng.choice([LARGE_BINARY_VALUE, LARGE_BINARY_VALUE + 1, 20001, 70000])
        if trial % 5 == 0:
            value = bytearray(rng.choices(rng.choice([b"\x00ajnedo", b"\x00\x01aAjJ"]), k=size))
        else:
            value = bytearray(rng.randbytes(size))
        if trial % 3:
            ident = rng.choice(IDENTIFIERS)
            encoded = rng.choice(
                [ident.encode("latin-1", "ignore"), ident.encode("utf-16-le"), ident.encode("utf-16-be")]
            )
            if rng.random() < 0.3:
                encoded = encoded.upper()
            at = rng.choice(
                [0, 1, size - len(encoded), size - len(encoded) - 1, rng.randrange(size - len(encoded))]
            )
            value[at : at + len(encoded)] = encoded
        identifiers = tuple(rng.sample(IDENTIFIERS, rng.randint(1, len(IDENTIFIERS))))
        expected = holds_identifier_one_by_one(bytes(value), identifiers)
        found += expected
        assert binary_holds_identifier(bytes(value), identifiers) is expected, trial
    assert 200 < found < 600  # both outcomes were exercised


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("at", [0, 1, "end", "end-1"])
def test_an_identifier_at_either_end_of_a_large_value_is_found(encoding, at):
    value = bytearray(b"\x07" * (LARGE_BINARY_VALUE + 11))
    encoded = "Doe0042".encode(encoding)
    start = {0: 0, 1: 1, "end": len(value) - len(encoded), "end-1": len(value) - len(encoded) - 1}[at]
    value[start : start + len(encoded)] = encoded
    assert binary_holds_identifier(bytes(value), ("doe0042",))
    assert not binary_holds_identifier(bytes(value), ("doe0043",))
