"""Generate the project's compact IOD table: which attributes each IOD requires, for combined actions.

PS3.15 E.1.1: a combined action (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) is "the first, unless the IOD requires
the attribute". Reads the IOD, module and attribute tables in ``../shared/standard/iod/`` (extracted
from the DICOM standard by the highdicom project, 0.28.2) and the generated Table E.1-1 rules, and
writes ``dicom/services/deid/iod_types.json`` with, per IOD, its modules and their usage, and per
module the Type of:

- every attribute of Table E.1-1, at the top level or nested (paths of tags);
- every attribute nested in a sequence whose action keeps the sequence (D, or a combined action with
  D): what a well-formed item of it must hold;
- the top-level tags of each module, so that the engine can tell whether a conditional or
  user-optional module is present in an instance.

Nothing at run time reads ``../shared``. Usage::

    python scripts/generate_iod_types.py [STANDARD_DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STANDARD_DIR = REPO_ROOT.parent / "shared" / "standard"
DEFAULT_OUTPUT = REPO_ROOT / "dicom" / "services" / "deid" / "iod_types.json"
RULES_FILE = REPO_ROOT / "dicom" / "services" / "deid" / "rules_2024b.json"
SOURCE = "highdicom 0.28.2 _standard tables (sop_class_iod_map, iod_module_map, module_attribute_map)"


def _tag(keyword: str) -> int | None:
    tag = tag_for_keyword(keyword)
    return int(tag) if tag is not None else None


def _path_key(tags: list[int]) -> str:
    return "/".join(f"{tag:08X}" for tag in tags)


def generate(standard_dir: Path, output: Path) -> Path:
    """Write the compact table to ``output`` and return its path."""
    iod_dir = standard_dir / "iod"
    sop_classes = json.loads((iod_dir / "sop_class_iod_map.json").read_text(encoding="utf-8"))
    iods = json.loads((iod_dir / "iod_module_map.json").read_text(encoding="utf-8"))
    modules = json.loads((iod_dir / "module_attribute_map.json").read_text(encoding="utf-8"))
    rules = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    # Every attribute of Table E.1-1 (not only the combined rows): an X on an attribute the IOD
    # requires at that place takes its Z or D instead (see dicom/services/deid/iod.py).
    combined = {tag for tag, _basic, _required, _options in rules["exact"]}
    kept_sequences = {
        tag
        for tag, basic, _required, _options in rules["exact"]
        if "D" in basic.split("/") and _vr(tag) == "SQ"
    }

    used_modules = sorted({module["key"] for entries in iods.values() for module in entries})
    module_table = {}
    for key in used_modules:
        types: dict[str, str] = {}
        top_level: set[int] = set()
        for row in modules.get(key, ()):
            tag = _tag(row["keyword"])
            path = [_tag(keyword) for keyword in row["path"]]
            if tag is None or None in path:
                continue  # retired or unknown keywords pydicom's dictionary does not carry
            if not path:
                top_level.add(tag)
            if tag in combined or any(step in kept_sequences for step in path):
                key_path = _path_key([*path, tag])
                # The same attribute listed twice in one module: the stronger requirement holds.
                types[key_path] = _stronger(types.get(key_path), row["type"])
        module_table[key] = {"top_level": sorted(top_level), "types": dict(sorted(types.items()))}

    data = {
        "source": SOURCE,
        "note": "PS3.3 Types per IOD module, for the combined actions of PS3.15 Table E.1-1 (edition "
        f"{rules['edition']}) and the contents of the sequences those actions keep",
        "sop_classes": dict(sorted(sop_classes.items())),
        "iods": {
            iod: [[module["key"], module["usage"]] for module in entries]
            for iod, entries in sorted(iods.items())
        },
        "modules": module_table,
    }
    output.write_text(json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    return output


_STRENGTH = {"1": 5, "1C": 4, "2": 3, "2C": 2, "3": 1}


def _stronger(current: str | None, new: str) -> str:
    if current is None or _STRENGTH.get(new, 0) > _STRENGTH.get(current, 0):
        return new
    return current


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("standard_dir", nargs="?", type=Path, default=DEFAULT_STANDARD_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    print(generate(args.standard_dir, args.output))


if __name__ == "__main__":
    main()
