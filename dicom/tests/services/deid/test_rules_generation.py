"""The committed rules files are exactly what the generator makes from the standard's tables."""

import importlib.util
from pathlib import Path

import pytest

from dicom.services.deid.options import DeidOptions
from dicom.services.deid.rules import RULES_FILE, SAFE_PRIVATE_FILE, load_rules, ruleset_for

REPO_ROOT = Path(__file__).resolve().parents[4]
STANDARD_DIR = REPO_ROOT.parent / "shared" / "standard"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "generate_deid_rules", REPO_ROOT / "scripts" / "generate_deid_rules.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (STANDARD_DIR / "ps3.15-table-E.1-1.json").is_file(),
    reason=f"the standard's tables are not at {STANDARD_DIR} (../shared/standard beside the clone)",
)
def test_committed_rules_match_the_generator(tmp_path):
    written = _generator().generate(STANDARD_DIR, tmp_path)
    assert [path.name for path in written] == [RULES_FILE.name, SAFE_PRIVATE_FILE.name]
    assert (tmp_path / RULES_FILE.name).read_bytes() == RULES_FILE.read_bytes()
    assert (tmp_path / SAFE_PRIVATE_FILE.name).read_bytes() == SAFE_PRIVATE_FILE.read_bytes()


def test_rules_file_names_its_edition_and_holds_every_row():
    rules = load_rules()
    assert rules["edition"] == "2024b"
    # 621 rows: 617 exact tags, 3 patterns and the private attributes row; and 5 additions (retired
    # identifying attributes the table does not list, each with its current counterpart's row).
    assert len(rules["exact"]) + len(rules["patterns"]) + 1 == 621 + len(rules["additions"]) == 626
    assert {pattern[-1] for pattern in rules["patterns"]} == {"(50XX,XXXX)", "(60XX,3000)", "(60XX,4000)"}


def test_combined_actions_are_left_to_the_instance_iod():
    rules = ruleset_for(DeidOptions())
    assert rules.action_for(0x00100020) == "?"  # Patient ID, Z/D
    assert rules.combined[0x00100020] == ("Z/D", True)
    assert rules.action_for(0x00080080) == "?"  # Institution Name, X/Z/D
    assert rules.combined[0x00081140] == ("X/Z/U*", True)  # Referenced Image Sequence
    assert rules.action_for(0x50001234) == "X"  # curve data pattern
    assert rules.action_for(0x60023000) == "X"  # overlay data pattern
    assert rules.action_for(0x60020010) is None  # overlay rows are not in the table
    assert ruleset_for(DeidOptions(retain_institution_identity=True)).action_for(0x00080080) == "K"
    assert ruleset_for(DeidOptions(retain_modified_dates=True)).action_for(0x00080020) == "S"


def test_resolve_action_leaves_combined_actions_unless_an_option_decides():
    from dicom.services.deid.rules import resolve_action

    no_options = frozenset()
    assert resolve_action("X/Z/D", False, {}, no_options) == "?"
    assert resolve_action("X/Z/U*", True, {}, no_options) == "?"
    assert resolve_action("X/Z/D", True, {"rtnInstIdOpt": "K"}, frozenset({"rtnInstIdOpt"})) == "K"
    # Shifting dates wins over keeping device identity, or the real calibration date would leak.
    both = frozenset({"rtnDevIdOpt", "rtnLongModifDatesOpt"})
    assert resolve_action("X", True, {"rtnDevIdOpt": "K", "rtnLongModifDatesOpt": "C"}, both) == "S"
    assert (
        resolve_action("X", True, {"rtnPatCharsOpt": "C", "cleanDescOpt": "C"}, frozenset({"cleanDescOpt"}))
        == "C"
    )


@pytest.mark.skipif(
    not (STANDARD_DIR / "iod" / "module_attribute_map.json").is_file(),
    reason=f"the standard's IOD tables are not at {STANDARD_DIR / 'iod'}",
)
def test_committed_iod_table_matches_its_generator(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "generate_iod_types", REPO_ROOT / "scripts" / "generate_iod_types.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from dicom.services.deid.iod import IOD_TYPES_FILE

    written = module.generate(STANDARD_DIR, tmp_path / "iod_types.json")
    assert written.read_bytes() == IOD_TYPES_FILE.read_bytes()


def test_iod_table_names_its_source_and_covers_the_sop_classes():
    from dicom.services.deid.iod import load_table

    table = load_table()
    assert "highdicom 0.28.2" in table.source
    assert table.sop_classes["1.2.840.10008.5.1.4.1.1.2"] == "ct-image"
    assert len(table.sop_classes) >= 180 and len(table.iods) >= 170
