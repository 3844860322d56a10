"""Sigma rule files -> a versioned rule set of compiled rules (ClickHouse SQL) and correlations.

A rule compiles to its log-source filter (rules/mapping.py) and its condition (the backend, after the
field-mapping pipeline). Correlation rules compile to a description the engine turns into windowed SQL.
The version of a rule set is the hash of its files' contents (not their paths): the same rules loaded
from anywhere are the same version, and one changed byte is a new one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

from pipeline.detect.backend import NUMERIC_KINDS, Field, GanzhiClickHouseBackend
from pipeline.detect.prefilter import necessary
from rules.mapping import FIELD_MAPS, logsource_filter, sigma_pipeline, taxonomy

# Combined rule SQL is long and deeply nested; the default OR-chain rewrite of ILIKEs is slower (DESIGN.md).
# Short-circuit AND/OR for every function, not only those ClickHouse deems heavy: a rule's later ILIKEs run only
# on rows its first ones left open (measured: a live batch's 52 process-creation rules 0.44 -> 0.34 s).
DETECTION_SETTINGS = {
    "short_circuit_function_evaluation": "force_enable",
    "max_query_size": 256 * 1024 * 1024,
    "max_ast_elements": 10_000_000,
    "max_expanded_ast_elements": 10_000_000,
    "max_parser_depth": 10_000,
    "optimize_or_like_chain": 0,
}
_CORRELATION_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "neq": "!="}


@dataclass(frozen=True)
class CompiledRule:
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...]
    where: str  # the rule's condition
    logsource: str  # which events the rule is written for
    path: str
    name: str = ""  # Sigma `name`, how correlation rules refer to it
    fields: tuple[str, ...] = ()  # schema fields / extra keys the condition reads (after mapping)
    alerts: bool = True  # False for rules that only feed correlations (Sigma `generate: false`)
    # clauses of (field text SQL, literal) pairs: every match contains a pair of each clause
    # (pipeline/detect/prefilter.py); None: the condition must be evaluated on every row of its log source
    needs: tuple[tuple[tuple[str, str], ...], ...] | None = None

    @property
    def sql(self) -> str:
        """The whole filter: log source and condition."""
        return f"({self.logsource}) AND ({self.where})"


@dataclass(frozen=True)
class CompiledCorrelation:
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...]
    kind: str  # event_count, value_count, temporal, temporal_ordered, value_sum/avg/percentile/median
    rules: tuple[str, ...]  # rule ids of the referenced rules, in the rule's order
    group_by: tuple[str, ...]  # SQL expressions (mapped fields)
    group_names: tuple[str, ...]  # the group-by field names as written
    timespan_s: int
    op: str  # SQL comparison operator
    threshold: float
    value_field: str  # SQL expression of the condition's field ('' when none)
    percentile: int
    path: str


@dataclass
class RuleSet:
    rules: list[CompiledRule] = field(default_factory=list)
    correlations: list[CompiledCorrelation] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    version: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # path -> rule file text

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.rule_id == rule_id), None)

    @property
    def rule_count(self) -> int:
        return len(self.rules) + len(self.correlations)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml")
                              and not p.name.endswith((".tests.yml", ".tests.yaml"))))
        else:
            out.append(path)
    return out


VERSION_RE = re.compile(r"^[0-9a-f]{16}$")  # what ruleset_version makes


def ruleset_version(sources: dict[str, str]) -> str:
    """Content hash of a rule set: sorted per-file hashes, so order and paths do not matter."""
    digests = sorted(hashlib.sha256(text.encode()).hexdigest() for text in sources.values())
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def compile_rules(paths: Iterable[Path]) -> RuleSet:
    """Compile every rule under `paths`; a rule that cannot be compiled is reported with the reason."""
    sources: dict[str, str] = {}
    unreadable: list[tuple[str, str]] = []
    for path in rule_files(paths):
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            unreadable.append((str(path), f"cannot read: {exc}"))
    out = compile_sources(sources)
    out.errors.extend(unreadable)
    return out


def compile_sources(sources: dict[str, str]) -> RuleSet:
    """Compile rule texts (path -> YAML). Correlation rules may refer to rules in any of the files."""
    backend = GanzhiClickHouseBackend(processing_pipeline=sigma_pipeline())
    out = RuleSet(version=ruleset_version(sources), sources=dict(sources))
    collections: list[tuple[str, SigmaCollection]] = []
    for path, text in sources.items():
        try:
            collections.append((path, SigmaCollection.from_yaml(text, collect_errors=True,
                                                                resolve_references=False)))
        except (SigmaError, ValueError, AttributeError, TypeError, yaml.YAMLError) as exc:  # not a rule file
            out.errors.append((path, str(exc) or f"not a Sigma rule file ({type(exc).__name__})"))
    everything = SigmaCollection([r for _, c in collections for r in c.rules], errors=[],
                                 resolve_references=False)
    paths = {id(r): p for p, c in collections for r in c.rules}
    for path, collection in collections:
        for error in collection.errors:
            out.errors.append((path, str(error)))
    try:
        everything.resolve_rule_references()
    except SigmaError as exc:
        out.errors.append(("(rule set)", f"correlation reference: {exc}"))
    for rule in everything.rules:
        path = paths[id(rule)]
        if getattr(rule, "errors", None):  # already reported with its collection's errors; nothing to convert
            continue
        try:
            if isinstance(rule, SigmaCorrelationRule):
                out.correlations.append(_correlation(rule, path, everything))
            elif isinstance(rule, SigmaRule):
                out.rules.extend(_single(backend, rule, path))
        except (SigmaError, NotImplementedError, ValueError, KeyError, AttributeError, TypeError) as exc:
            # rules arrive from users (API uploads): a rule pySigma cannot handle is an error of that rule
            out.errors.append((path, str(exc) or type(exc).__name__))
    return out


def _single(backend: GanzhiClickHouseBackend, rule: SigmaRule, path: str) -> list[CompiledRule]:
    needs: list[tuple[tuple[tuple[str, str], ...], ...] | None] = []

    def note_needs(_rule: Any, _format: Any, _index: int, condition: Any, result: Any) -> Any:
        if result is not None:  # one per converted condition, in the order of the queries
            need = necessary(condition.parsed)
            needs.append(tuple(tuple(sorted(clause)) for clause in need) if need is not None else None)
        return result

    backend.convert_rule(rule, callback=note_needs)  # applies the field-mapping pipeline to `rule` first
    queries = rule.get_conversion_result()  # also for rules that only feed correlations (not returned)
    fields = tuple(sorted(_fields(rule.detection.detections.values())))
    compiled = []
    for where, need in zip(queries, needs, strict=True):
        compiled.append(CompiledRule(
            rule_id=str(rule.id or rule.name or Path(path).stem), title=rule.title, level=str(rule.level or ""),
            tags=tuple(str(t) for t in rule.tags), where=where, logsource=logsource_filter(rule.logsource),
            path=path, name=str(rule.name or ""), fields=fields, alerts=bool(rule._output), needs=need))
    return compiled


def _fields(items: Iterable[Any]) -> set[str]:
    """Field names a (processed) detection reads."""
    out: set[str] = set()
    for item in items:
        if isinstance(item, SigmaDetectionItem):
            if item.field:
                out.add(item.field)
        elif isinstance(item, SigmaDetection):
            out |= _fields(item.detection_items)
    return out


def _column(name: str, maps: list[dict[str, str]]) -> str:
    for mapping in maps:
        if name in mapping:
            return mapping[name]
    return name


def _correlation(rule: SigmaCorrelationRule, path: str, collection: SigmaCollection) -> CompiledCorrelation:
    referenced = [ref.rule for ref in (rule.rules or [])]
    if not referenced:
        raise ValueError("correlation rule refers to no rules")
    ids = []
    for ref in referenced:
        if isinstance(ref, SigmaCorrelationRule):
            raise NotImplementedError("correlations of correlations are not supported")
        ids.append(str(ref.id or ref.name))
    # group-by and value fields use the referenced rules' field mapping (aliases first)
    maps = [FIELD_MAPS[t] for t in {taxonomy(r.logsource) for r in referenced} if t is not None]
    alias_names = {a.alias for a in rule.aliases}
    group_by, group_names = [], []
    for name in rule.group_by or []:
        if name in alias_names:
            alias = rule.aliases.aliases[name]
            # every referenced rule's own field for the alias; one expression picks whichever is set
            exprs = [Field(_column(f, maps)).text() for f in alias.mapping.values()]
            group_by.append(f"coalesce({', '.join(f'nullIf({e}, {chr(39)}{chr(39)})' for e in exprs)}, '')")
        else:
            group_by.append(Field(_column(name, maps)).text())
        group_names.append(name)
    condition = rule.condition
    kind = rule.type.name.lower()
    if isinstance(condition, SigmaCorrelationCondition):
        op, threshold = _CORRELATION_OPS[condition.op.name.lower()], float(condition.count)
        fieldref = condition.fieldref
        if isinstance(fieldref, list):
            fieldref = fieldref[0] if len(fieldref) == 1 else None
            if fieldref is None:
                raise NotImplementedError("value conditions over several fields are not supported")
        value_field = ""
        if fieldref:
            value = Field(_column(fieldref, maps))
            if kind == "value_count":
                value_field = value.text()
            elif value.kind in NUMERIC_KINDS:
                value_field = value.sql
            else:
                value_field = f"toFloat64OrZero({value.text()})"
        percentile = int(condition.percentile or 50)
    else:
        raise NotImplementedError("extended (boolean) temporal conditions are not supported yet")
    if kind in ("temporal", "temporal_ordered") and op == ">=" and threshold < len(ids):
        threshold = float(len(ids))  # the default 'gte: 1' condition: every referenced rule must be seen
    return CompiledCorrelation(
        rule_id=str(rule.id or rule.name or Path(path).stem), title=rule.title, level=str(rule.level or ""),
        tags=tuple(str(t) for t in rule.tags), kind=kind, rules=tuple(ids), group_by=tuple(group_by),
        group_names=tuple(group_names), timespan_s=int(rule.timespan.seconds), op=op, threshold=threshold,
        value_field=value_field, percentile=percentile, path=path)
