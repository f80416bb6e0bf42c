"""Generate the de-identification rules files from the DICOM standard's own tables.

Reads PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes) and Table E.3.10-1
(safe private attributes), both machine-readable JSON in ``../shared/standard/``, and writes the
project's compact rules files into ``dicom/services/deid/``. Nothing at run time reads the standard's
folder: the engine loads only the generated files, which are committed.

Usage::

    python scripts/generate_deid_rules.py [STANDARD_DIR] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STANDARD_DIR = REPO_ROOT.parent / "shared" / "standard"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "dicom" / "services" / "deid"

TABLE_E1_1 = "ps3.15-table-E.1-1.json"
TABLE_E3_10_1 = "ps3.15-table-E.3.10-1-safe-private.json"
RULES_EDITION = "2024b"
SAFE_PRIVATE_EDITION = "2023b"
RULES_FILE = f"rules_{RULES_EDITION}.json"
SAFE_PRIVATE_FILE = f"safe_private_{SAFE_PRIVATE_EDITION}.json"

# The option columns of Table E.1-1, in the order of the standard's table.
OPTION_COLUMNS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)
PRIVATE_ROW_TAG = "(GGGG,EEEE) WHERE GGGG IS ODD"
# Identifying attributes the table does not list: retired (or trial) attributes whose current
# counterpart it does. Each takes its counterpart's row. (tag, counterpart tag, name)
ADDITIONS = (
    (0x00401006, 0x00402016, "Placer Order Number / Procedure (retired)"),
    (0x00401007, 0x00402017, "Filler Order Number / Procedure (retired)"),
    (0x00402006, 0x00402016, "Placer Order Number / Imaging Service Request (Retired)"),
    (0x00402007, 0x00402017, "Filler Order Number / Imaging Service Request (Retired)"),
    (0x0040A313, 0x00080050, "Referenced Accession Sequence (Trial): as Accession Number, emptied"),
)
VALID_ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


def parse_tag(text: str) -> tuple[int, int]:
    """Turn ``(GGGG,EEEE)`` (hex digits or ``X`` wildcards) into a ``(mask, value)`` pair."""
    inner = text.strip().strip("()").replace(",", "")
    if len(inner) != 8:
        raise ValueError(f"unexpected tag {text!r}")
    mask = 0
    value = 0
    for char in inner.upper():
        mask <<= 4
        value <<= 4
        if char != "X":
            mask |= 0xF
            value |= int(char, 16)
    return mask, value


def build_rules(rows: list[dict]) -> dict:
    """Compact form of Table E.1-1: exact tags as ints, patterns as mask/value pairs."""
    exact: list[list] = []
    patterns: list[list] = []
    private: dict | None = None
    for row in rows:
        basic = row["basicProfile"]
        if basic not in VALID_ACTIONS:
            raise ValueError(f"unknown action {basic!r} for {row['tag']}")
        options = {column: row[column] for column in OPTION_COLUMNS if column in row}
        required = row["stdCompIOD"] == "Y"
        if row["tag"].upper() == PRIVATE_ROW_TAG:
            private = {"basic": basic, "required": required, "options": options}
            continue
        mask, value = parse_tag(row["tag"])
        if mask == 0xFFFFFFFF:
            exact.append([value, basic, required, options])
        else:
            patterns.append([mask, value, basic, required, options, row["tag"]])
    if private is None:
        raise ValueError("Table E.1-1 has no private attributes row")
    by_tag = {row[0]: row for row in exact}
    for tag, counterpart, _name in ADDITIONS:
        if tag in by_tag:
            raise ValueError(f"{tag:08X} is in Table E.1-1 now: drop it from ADDITIONS")
        exact.append([tag, *by_tag[counterpart][1:]])
    exact.sort(key=lambda item: item[0])
    patterns.sort(key=lambda item: (item[1], item[0]))
    return {
        "source": "DICOM PS3.15 Table E.1-1, Application Level Confidentiality Profile Attributes",
        "edition": RULES_EDITION,
        "option_columns": list(OPTION_COLUMNS),
        "row_format": {
            "exact": ["tag", "basic", "stdCompIOD", "options"],
            "patterns": ["mask", "value", "basic", "stdCompIOD", "options", "pattern"],
        },
        "additions": [[tag, counterpart, name] for tag, counterpart, name in ADDITIONS],
        "private": private,
        "exact": exact,
        "patterns": patterns,
    }


def build_safe_private(rows: list[dict]) -> dict:
    """Compact form of Table E.3.10-1: ``[group, private creator, element byte, VR]`` per row."""
    entries = []
    for row in rows:
        inner = row["tag"].strip("()").replace(",", "")
        group = int(inner[:4], 16)
        if inner[4:6].lower() != "xx":
            raise ValueError(f"safe private tag without a block placeholder: {row['tag']!r}")
        element = int(inner[6:8], 16)
        entries.append([group, row["creator"].strip(), element, row["vr"]])
    entries.sort(key=lambda item: (item[0], item[1], item[2]))
    return {
        "source": "DICOM PS3.15 Table E.3.10-1, Safe Private Attributes",
        "edition": SAFE_PRIVATE_EDITION,
        "row_format": ["group", "creator", "element_byte", "vr"],
        "entries": entries,
    }


def write_json(data: dict, path: Path) -> None:
    # One row per line: small, diffable and fast to parse.
    lines = ["{"]
    items = list(data.items())
    for index, (name, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], list):
            rows = ",\n".join("    " + json.dumps(row, separators=(",", ":")) for row in value)
            lines.append(f"  {json.dumps(name)}: [\n{rows}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(name)}: {json.dumps(value, separators=(',', ':'))}{comma}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def generate(standard_dir: Path, output_dir: Path) -> list[Path]:
    """Write both rules files into ``output_dir``; return their paths."""
    rows = json.loads((standard_dir / TABLE_E1_1).read_text(encoding="utf-8"))
    safe_rows = json.loads((standard_dir / TABLE_E3_10_1).read_text(encoding="utf-8"))
    output_dir.mkdir(parents=True, exist_ok=True)
    rules_path = output_dir / RULES_FILE
    safe_path = output_dir / SAFE_PRIVATE_FILE
    write_json(build_rules(rows), rules_path)
    write_json(build_safe_private(safe_rows), safe_path)
    return [rules_path, safe_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("standard_dir", nargs="?", type=Path, default=DEFAULT_STANDARD_DIR)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    args = parser.parse_args()
    for path in generate(args.standard_dir, args.output_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
