"""Sigma rule files -> compiled rules (id, title, level, tags, ClickHouse WHERE expression)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from pipeline.detect.backend import GanzhiClickHouseBackend

# Combined rule SQL is long and deeply nested; the default OR-chain rewrite of ILIKEs is slower (DESIGN.md).
DETECTION_SETTINGS = {
    "max_query_size": 64 * 1024 * 1024,
    "max_ast_elements": 10_000_000,
    "max_expanded_ast_elements": 10_000_000,
    "max_parser_depth": 10_000,
    "optimize_or_like_chain": 0,
}


@dataclass(frozen=True)
class CompiledRule:
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...]
    where: str
    path: str


@dataclass
class CompileReport:
    rules: list[CompiledRule] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml")))
        else:
            out.append(path)
    return out


def compile_rules(paths: Iterable[Path]) -> CompileReport:
    """Compile every rule under `paths`; a rule that cannot be compiled is reported with the reason."""
    backend = GanzhiClickHouseBackend()
    report = CompileReport()
    for path in rule_files(paths):
        try:
            collection = SigmaCollection.load_ruleset([path])
            for rule in collection.rules:
                if not isinstance(rule, SigmaRule):
                    report.errors.append((str(path), "correlation rules are not compiled yet"))
                    continue
                for where in backend.convert_rule(rule):
                    report.rules.append(CompiledRule(
                        rule_id=str(rule.id or path.stem), title=rule.title, level=str(rule.level or ""),
                        tags=tuple(str(t) for t in rule.tags), where=where, path=str(path)))
        except (SigmaError, NotImplementedError, ValueError) as exc:
            report.errors.append((str(path), str(exc)))
    return report
