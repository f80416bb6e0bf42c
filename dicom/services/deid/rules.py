"""The Basic Profile and its options as lookups, loaded from the generated rules files.

``rules_2024b.json`` is generated from PS3.15 Table E.1-1 by ``scripts/generate_deid_rules.py``;
``safe_private_2023b.json`` from Table E.3.10-1. For a given :class:`DeidOptions` every row is
resolved once to a single action and kept in a dict keyed by tag, so the walk over a dataset does one
dict lookup per element.

Resolution of a row under a set of options:

1. If Retain Modified Dates is on and the row has a ``rtnLongModifDatesOpt`` entry, the action is
   :data:`SHIFT` (the standard's C for dates: shift them by the patient's offset). It wins over a K
   from another option (e.g. Retain Device Identity on a calibration date), or the real date would leak.
2. Otherwise, if any active option keeps the row (K), it is kept.
3. Otherwise, if any active option cleans it (C), it is cleaned.
4. Otherwise the Basic Profile action applies. A combined action (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) means
   "the first, unless the IOD requires the attribute": it resolves to :data:`COMBINED`, and the engine
   resolves it per instance and per place from the instance's IOD (:mod:`.iod`), with the row's basic
   action and its ``stdCompIOD`` flag kept in :attr:`RuleSet.combined` for that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .options import DeidOptions

RULES_DIR = Path(__file__).resolve().parent
RULES_FILE = RULES_DIR / "rules_2024b.json"
SAFE_PRIVATE_FILE = RULES_DIR / "safe_private_2023b.json"

REMOVE = "X"
ZERO = "Z"
DUMMY = "D"
KEEP = "K"
CLEAN = "C"
UID = "U"
SHIFT = "S"  # internal: the C of Retain Modified Dates; reported as C
COMBINED = "?"  # internal: a combined action, resolved per instance from its IOD

DATE_SHIFT_COLUMN = "rtnLongModifDatesOpt"


def resolve_action(basic: str, required: bool, row_options: dict[str, str], columns: frozenset[str]) -> str:
    """One row's single action under the active option columns (see the module docstring)."""
    if DATE_SHIFT_COLUMN in columns and DATE_SHIFT_COLUMN in row_options:
        return SHIFT
    chosen = [row_options[column] for column in columns if column in row_options]
    if KEEP in chosen:
        return KEEP
    if CLEAN in chosen:
        return CLEAN
    if "/" in basic:
        return COMBINED
    return basic


@dataclass(frozen=True)
class RuleSet:
    """Every row of Table E.1-1 resolved for one set of options."""

    edition: str
    exact: dict[int, str]
    patterns: tuple[tuple[int, int, str], ...]
    private_action: str
    safe_private: frozenset[tuple[int, str, int]]
    # Tag -> (basic combined action, stdCompIOD) of the rows that resolve to COMBINED.
    combined: dict[int, tuple[str, bool]]

    def action_for(self, tag: int) -> str | None:
        """The action for a public tag, or ``None`` when the table does not list it."""
        action = self.exact.get(tag)
        if action is not None:
            return action
        for mask, value, pattern_action in self.patterns:
            if tag & mask == value:
                return pattern_action
        return None

    def is_safe_private(self, group: int, creator: str, element_byte: int) -> bool:
        """Whether Table E.3.10-1 lists this private attribute (creator matched exactly)."""
        return (group, creator, element_byte) in self.safe_private


@lru_cache(maxsize=1)
def load_rules() -> dict:
    """The generated Table E.1-1 rules, parsed once per process."""
    return json.loads(RULES_FILE.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def load_safe_private() -> frozenset[tuple[int, str, int]]:
    """The generated Table E.3.10-1 as ``(group, private creator, element byte)`` triples."""
    data = json.loads(SAFE_PRIVATE_FILE.read_text(encoding="utf-8"))
    return frozenset((group, creator, element) for group, creator, element, _vr in data["entries"])


@lru_cache(maxsize=64)
def ruleset_for(options: DeidOptions) -> RuleSet:
    """Resolve every row for ``options`` (cached: options are frozen and hashable)."""
    data = load_rules()
    columns = options.table_columns()
    exact = {
        tag: resolve_action(basic, required, row_options, columns)
        for tag, basic, required, row_options in data["exact"]
    }
    combined = {
        tag: (basic, required) for tag, basic, required, _options in data["exact"] if exact[tag] == COMBINED
    }
    patterns = tuple(
        (mask, value, resolve_action(basic, required, row_options, columns))
        for mask, value, basic, required, row_options, _pattern in data["patterns"]
    )
    private = data["private"]
    private_action = resolve_action(private["basic"], private["required"], private["options"], columns)
    return RuleSet(
        edition=data["edition"],
        exact=exact,
        patterns=patterns,
        private_action=private_action,
        safe_private=load_safe_private() if options.retain_safe_private else frozenset(),
        combined=combined,
    )
