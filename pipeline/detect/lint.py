"""Lint: rules that can never fire on the events Ganzhi has.

A rule reads schema columns and `extra` keys. A key that no stored event carries (and that no column
holds) means the rule's condition on it can never be true — usually a field-mapping gap or a log source
Ganzhi does not collect. Without a store to look at, only the schema is known and extra keys are not
judged.
"""

from __future__ import annotations

from pipeline.detect.compile import RuleSet
from pipeline.schema import FIELD_BY_NAME


def lint(ruleset: RuleSet, seen_extra_keys: set[str] | None) -> list[tuple[str, str, str]]:
    """(rule id, path, reason) for each rule that reads a field no event can have."""
    problems = []
    for rule in ruleset.rules:
        absent = [f for f in rule.fields if f not in FIELD_BY_NAME and seen_extra_keys is not None
                  and f not in seen_extra_keys]
        if absent:
            problems.append((rule.rule_id, rule.path, f"reads {', '.join(sorted(absent))}: no column and never "
                                                      "seen in extra (field mapping or log source missing?)"))
    return problems
