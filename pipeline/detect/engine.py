"""Run a compiled rule set over events in ClickHouse: the same SQL for a live batch and for a replay.

Only the row selector differs: a live batch is `ts` within the batch's range and `event_id` in the
batch; a replay is a time range. Everything a rule decides is in its compiled SQL.

Single-event rules run as one scan per log source: every rule of that log source is evaluated on each row
and the matching rule numbers are array-joined out, so N rules cost one pass, not N. Before that, one query
says which necessary literals occur in the rows and which log sources have rows at all (prefilter.py): only
the rules that can match are planned and run, since planning, not evaluating, is what a big rule set costs.
Log sources left with few candidate rules then share one scan (each rule keeps its own log source in its
condition), as every query also pays a fixed setup (for a live batch, reading its ids).

Correlation rules run on sliding windows: for each event of the referenced rules, a window function
over `RANGE BETWEEN timespan PRECEDING AND CURRENT ROW`, partitioned by the group-by fields, computes the
count / distinct count / sum / funnel the rule asks for; a row where the condition holds is a firing.
Windows are anchored at events, so 10 failures within any 5 minutes fire and 10 spread over an hour do
not, whatever the replay range. A replay windows the events table; a live batch windows correlation_events,
where each batch writes what every correlation keeps of the events it counts (group, marks, value: the same
projection a replay computes), so a batch reads its groups' rows by the key instead of its category's whole
timespan with the rules evaluated on every row. A detector's first batch fills in what the table lacks.

Alerts are keyed by (rule, entity, window): single-event hits by the hour of the event and the first
non-empty of src_ip, host_name, user_name, dst_ip; correlation firings by the timespan bucket of the
firing and the group-by values. Re-running detection over the same rows yields the same keys.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Any

from pipeline import native
from pipeline.detect.compile import DETECTION_SETTINGS, CompiledCorrelation, CompiledRule, RuleSet
from pipeline.detect.prefilter import literal_index
from pipeline.schema import FIELD_BY_NAME
from pipeline.store.base import Store, in_array, ip_text
from pipeline.store.ddl import CORRELATION_KEEP_MARGIN_S

log = logging.getLogger(__name__)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One pool for every detector of the process; tasks never wait on other tasks, so sharing cannot deadlock."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ganzhi-detect")
        return _POOL

ALERT_WINDOW_MS = 3_600_000  # single-event hits of one rule on one entity within an hour form one alert
ENTITY_FIELDS = ("src_ip", "host_name", "user_name", "dst_ip")
CONTEXT_FIELDS = ("src_ip", "dst_ip", "host_name", "user_name", "src_org_unit", "dst_org_unit", "src_asset",
                  "dst_asset")
MAX_WINDOW_EVENTS = 100  # events kept per correlation firing (the window may hold many more)
_IP_CONTEXT = frozenset(c for c in CONTEXT_FIELDS if FIELD_BY_NAME[c].kind == "ip")
# materialize(): clickhouse-driver misreads a never-written (sparse) String column in an empty ARRAY JOIN
# result block; a materialized copy under another name reads fine on both engines. Addresses come as hex: the
# driver's IPv6 objects cost more than the rest of a hit (a live batch of 50 k events may have 20 k hits).
_SELECT_CONTEXT = ", ".join(f"hex({c}) AS c_{c}" if c in _IP_CONTEXT else f"materialize({c}) AS c_{c}"
                            for c in CONTEXT_FIELDS)
_CONTEXT_ALIASES = ", ".join(f"c_{c}" for c in CONTEXT_FIELDS)


MAX_SPANS = 8  # time spans a live batch's rows are looked up in (each one a range of the sorting key)
SPAN_GAP_MS = 1_000  # a gap in a batch's event times wider than this may separate two spans


def time_spans(stamps: Sequence[int], max_spans: int = MAX_SPANS, gap_ms: int = SPAN_GAP_MS
               ) -> tuple[tuple[int, int], ...]:
    """[lo, hi) spans covering every stamp, split at the widest gaps (at most `max_spans` spans). A live batch is
    mostly its own second plus a few late events (a Zeek connection logged when it ends, a forwarder's buffer):
    one range from the oldest to the newest would read every row stored in between."""
    ordered = sorted(stamps)
    gaps = sorted(((b - a, i) for i, (a, b) in enumerate(pairwise(ordered)) if b - a > gap_ms),
                  reverse=True)[:max_spans - 1]
    cuts = sorted(i for _, i in gaps)
    starts = [0, *(i + 1 for i in cuts)]
    ends = [*cuts, len(ordered) - 1]
    return tuple((ordered[a], ordered[b] + 1) for a, b in zip(starts, ends, strict=True))


@dataclass(frozen=True)
class Selector:
    """Which events to evaluate: a time range [lo_ms, hi_ms), optionally narrowed to a batch's ids, which lie in
    `spans` within it."""

    lo_ms: int
    hi_ms: int
    event_ids: tuple[str, ...] | None = None
    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def batch(cls, events: Sequence[dict[str, Any]]) -> Selector:
        spans = time_spans([e["ts"] for e in events])
        return cls(spans[0][0], spans[-1][1], tuple(e["event_id"] for e in events), spans)

    def sql(self, prefix: str = "") -> str:
        """The filter; `prefix` names its parameters apart when one query holds two selectors."""
        def between(lo: str, hi: str) -> str:
            return (f"ts >= fromUnixTimestamp64Milli({{{prefix}{lo}:Int64}}, 'UTC') "
                    f"AND ts < fromUnixTimestamp64Milli({{{prefix}{hi}:Int64}}, 'UTC')")

        where = between("lo_ms", "hi_ms")
        if len(self.spans) > 1:  # the envelope too: partitions are pruned by it
            where += " AND (" + " OR ".join(f"({between(f'lo_{i}', f'hi_{i}')})" for i in range(len(self.spans))) + ")"
        if self.event_ids is not None:
            where += f" AND {in_array('event_id', f'{prefix}event_ids')}"
        return where

    def params(self, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {f"{prefix}lo_ms": self.lo_ms, f"{prefix}hi_ms": self.hi_ms}
        if len(self.spans) > 1:
            for i, (lo, hi) in enumerate(self.spans):
                out |= {f"{prefix}lo_{i}": lo, f"{prefix}hi_{i}": hi}
        if self.event_ids is not None:
            out[f"{prefix}event_ids"] = list(self.event_ids)
        return out


@dataclass
class Hit:
    """One event that made one alert."""

    alert_id: str
    rule_id: str
    event_id: str
    event_ts: int  # epoch ms
    entity: str
    window_start: int  # epoch ms
    context: dict[str, str] = field(default_factory=dict)


@dataclass
class Alert:
    alert_id: str
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...]
    kind: str
    ruleset_version: str
    entity: str
    window_start: int
    first_seen: int
    last_seen: int
    event_ids: list[str]
    context: dict[str, str]
    suppression_id: str = ""

    @property
    def hit_count(self) -> int:
        return len(self.event_ids)

    def as_record(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "rule_id": self.rule_id, "title": self.title, "level": self.level,
            "tags": list(self.tags), "kind": self.kind, "ruleset_version": self.ruleset_version,
            "entity": self.entity, "window_start": self.window_start, "first_seen": self.first_seen,
            "last_seen": self.last_seen, "hit_count": self.hit_count, "event_ids": self.event_ids,
            **self.context,
        }


@lru_cache(maxsize=65_536)  # a rule's hits on one entity within its window share the id
def alert_id(rule_id: str, entity: str, window_start_ms: int) -> str:
    return hashlib.blake2b(f"{rule_id}\x00{entity}\x00{window_start_ms}".encode(), digest_size=16).hexdigest()


@lru_cache(maxsize=65_536)
def _ip_from_hex(value: str) -> str:
    return ip_text(ipaddress.IPv6Address(bytes.fromhex(value)))


def _context(row: Sequence[Any], offset: int) -> dict[str, str]:
    """The CONTEXT_FIELDS of a hit, from the result row's columns from `offset` on."""
    return {name: (_ip_from_hex(value) if name in _IP_CONTEXT else value or "")
            for name, value in zip(CONTEXT_FIELDS, row[offset:offset + len(CONTEXT_FIELDS)], strict=True)}


@lru_cache(maxsize=65_536)
def _stored_ip(text: str) -> str:
    """An address as it reads back from its IPv6 column (see ip_text): the unset address '', no zone index."""
    return ip_text(text.split("%", 1)[0]) if text else ""


def _stored_hit(rule_id: str, event: dict[str, Any]) -> Hit:
    """A single-event rule's hit on an event held in memory exactly as stored: what run_group reads otherwise."""
    context = {name: (_stored_ip(event.get(name, "")) if name in _IP_CONTEXT else event.get(name) or "")
               for name in CONTEXT_FIELDS}
    entity = _entity(context)
    ts = event["ts"]
    window = ts - ts % ALERT_WINDOW_MS
    return Hit(alert_id(rule_id, entity, window), rule_id, event["event_id"], ts, entity, window, context)


def _entity(context: dict[str, str]) -> str:
    for name in ENTITY_FIELDS:
        if context.get(name):
            return f"{name}={context[name]}"
    return ""


# The columns of correlation_events a window reads: what a correlation keeps of each event it counts.
COUNTED_COLUMNS = ("gk", "ts", "event_id", "marks", "value", "number", *CONTEXT_FIELDS)
_NUMBER_KINDS = frozenset({"value_sum", "value_avg", "value_percentile", "value_median"})


@dataclass(frozen=True)
class Counting:
    """What a correlation keeps of each event it counts, as SQL over the events table: the COUNTED_COLUMNS."""

    key: str  # digest of the SQL below: the correlation's rows in correlation_events
    where: str  # the events it counts: those of any rule it references
    gk: str  # Array(String): the group-by values
    marks: str  # Array(UInt8): which referenced rules the event matched (temporal kinds; else empty)
    value: str  # String: value_count's field
    number: str  # Float64: the field of the value aggregations
    keep_s: int

    @classmethod
    def of(cls, corr: CompiledCorrelation, where: str, referenced: Sequence[str]) -> Counting:
        gk = f"CAST([{', '.join(corr.group_by)}] AS Array(String))"
        marks = (f"CAST([{', '.join(f'toUInt8({sql})' for sql in referenced)}] AS Array(UInt8))"
                 if corr.kind in ("temporal", "temporal_ordered") else "CAST([] AS Array(UInt8))")
        value = f"toString({corr.value_field})" if corr.kind == "value_count" else "''"
        number = f"toFloat64({corr.value_field})" if corr.kind in _NUMBER_KINDS else "toFloat64(0)"
        digest = hashlib.blake2b("\x00".join((where, gk, marks, value, number)).encode(), digest_size=16).hexdigest()
        return cls(digest, where, gk, marks, value, number, corr.timespan_s + CORRELATION_KEEP_MARGIN_S)

    @property
    def select(self) -> str:
        return (f"{self.gk} AS gk, ts, event_id, {self.marks} AS marks, {self.value} AS value, "
                f"{self.number} AS number, {', '.join(CONTEXT_FIELDS)}")


def _keys(countings: Iterable[Counting]) -> str:
    """Their keys as SQL literals (hex digests: nothing to escape)."""
    return ", ".join(f"'{c.key}'" for c in countings)


SMALL_GROUP = 32  # candidate rules: groups this small share one scan (each query costs its planning and setup)


# What a log-source filter (rules/mapping.py logsource_filter) reads of an event. A batch's distinct combinations of
# these tell which log sources it has rows of exactly as its rows would: the in-memory batch is checked over those
# few combinations instead of a scan of its rows (measured at 50 k events: the scan cost the server 0.15 s).
_LOGSOURCE_COMBOS = ("SELECT tupleElement(c, 1) AS source_type, tupleElement(c, 2) AS event_category, "
                     "map('Channel', tupleElement(c, 3)) AS extra "
                     "FROM (SELECT arrayJoin(arrayZip({sources:Array(String)}, {categories:Array(String)}, "
                     "{channels:Array(String)})) AS c)")
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
_LOGSOURCE_WORDS = frozenset({"source_type", "event_category", "_channel_", "lowerUTF8", "startsWith", "IN", "AND",
                              "OR", "NOT"})


@lru_cache(maxsize=4096)  # asked of every log source on every live batch; the conditions are the rule set's
def reads_only_logsource_columns(condition: str) -> bool:
    """Whether a log-source condition reads nothing but source_type, event_category and extra['Channel']."""
    words = _STRING_LITERAL.sub("''", condition.replace("extra['Channel']", "_channel_"))
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", words)) <= _LOGSOURCE_WORDS


def logsource_combos(events: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The parameters of _LOGSOURCE_COMBOS: the events' distinct combinations, column by column."""
    combos = sorted({(e.get("source_type", ""), e.get("event_category", ""), e.get("extra", {}).get("Channel", ""))
                     for e in events})
    return {name: [c[i] for c in combos] for i, name in enumerate(("sources", "categories", "channels"))}


def merge_small_groups(groups: list[tuple[str, list[CompiledRule]]]) -> list[tuple[str, list[CompiledRule]]]:
    """Groups with few rules as one group: its log source is any of theirs, and each rule carries its own log
    source into its condition, so every rule still sees exactly its own events."""
    small = [(source, rules) for source, rules in groups if len(rules) <= SMALL_GROUP]
    if len(small) < 2:
        return groups
    merged = [replace(rule, where=rule.sql) for _, rules in small for rule in rules]
    either = " OR ".join(f"({source})" for source, _ in small)
    return [(source, rules) for source, rules in groups if len(rules) > SMALL_GROUP] + [(either, merged)]


# what event_count and value_count count: over a window, and over a whole group for its bound
_COUNTS = {"event_count": "count()", "value_count": "uniqExact(nullIf(value, ''))"}


def _marks(corr: CompiledCorrelation) -> list[str]:
    """Per referenced rule, whether a counted event matched it (temporal kinds)."""
    return [f"marks[{i + 1}]" for i in range(len(corr.rules))]


def _group_bound(corr: CompiledCorrelation) -> str | None:
    """A condition on a group's counted events over the whole source range that holds whenever one of its
    windows fires (a window holds a subset of them: its count, distinct values or rules seen can only be fewer),
    so groups failing it need no sliding window; None where no such bound holds (fewer-than conditions, sums of
    numbers that may be negative, averages and quantiles). Rows counted twice only loosen it."""
    if corr.op not in (">=", ">", "="):
        return None
    if corr.kind in _COUNTS:
        return f"{_COUNTS[corr.kind]} >= {corr.threshold}"
    if corr.kind in ("temporal", "temporal_ordered"):
        return f"{' + '.join(f'max({m})' for m in _marks(corr))} >= {corr.threshold}"
    return None


class Detector:
    """A rule set bound to a store."""

    def __init__(self, store: Store, ruleset: RuleSet, prefilter: bool = True, counted_table: bool = True):
        self.store = store
        self.ruleset = ruleset
        self.prefilter = prefilter  # False: every rule on every row of its log source (the plain SQL)
        # False: live windows read the events table over their timespan (the way before correlation_events; the
        # benchmark's baseline)
        self.counted_table = counted_table
        # a batch's queries are independent: a server runs them side by side (each one mostly uses one core)
        self.parallel = getattr(store, "concurrent_queries", 1)
        self._guess: list[tuple[str, list[CompiledRule]]] = []  # the candidate groups of the last live batch
        self._backfilled = False  # correlation_events holds what this detector's live windows need
        # rules that only feed correlations do not alert on their own (Sigma's `generate: false`)
        self.alerting = [r for r in ruleset.rules if r.alerts]
        self._rule_by_id = {r.rule_id: r for r in ruleset.rules}
        by_source: dict[str, list[CompiledRule]] = defaultdict(list)
        for rule in self.alerting:
            by_source[rule.logsource].append(rule)
        self.groups = sorted(by_source.items())
        self._position = {id(r): i for i, r in enumerate(self.alerting)}
        self._literals = literal_index([r.needs for r in self.alerting])
        # rule id -> (title, level, tags, kind), what every alert of the rule carries
        self._meta: dict[str, tuple[str, str, tuple[str, ...], str]] = {
            r.rule_id: (r.title, r.level, r.tags, "rule") for r in ruleset.rules}
        self._meta |= {c.rule_id: (c.title, c.level, c.tags, c.kind) for c in ruleset.correlations}

    # -- SQL ----------------------------------------------------------------------------------------

    def group_sql(self, logsource: str, rules: Sequence[CompiledRule], selector: Selector,
                  context: bool = True) -> str:
        """One scan of the events of a log source evaluating all its rules; a row per (rule no., event), with the
        event's time and context fields unless the caller holds the events (`context=False`)."""
        numbers = ", ".join(str(i) for i in range(len(rules)))
        conditions = ", ".join(f"({r.where})" for r in rules)
        columns = f"rule_no, event_id, toUnixTimestamp64Milli(ts) AS t, {_SELECT_CONTEXT}" if context else \
            "rule_no, event_id"
        return (f"SELECT {columns} FROM events "
                f"ARRAY JOIN arrayFilter((n, m) -> m, [{numbers}], [{conditions}]) AS rule_no "
                f"WHERE {selector.sql()} AND ({logsource})")

    def candidate_groups(self, selector: Selector, groups: Sequence[tuple[str, list[CompiledRule]]],
                         events: list[dict[str, Any]] | None = None) -> list[tuple[str, list[CompiledRule]]]:
        """The groups narrowed to the rules that can match in the selected rows: of the log sources that have
        rows there, the rules one of whose necessary literals occurs, and those without literals. Two queries,
        side by side on a server; empty groups are dropped (each group query costs its planning even over no
        rows). Groups are the caller's (not merged). `events`: the selected rows exactly as stored (a live
        batch in memory): the native module searches them for the literals instead of ClickHouse (events it
        cannot search, ClickHouse still does), and their log sources are told from their few distinct
        combinations of the columns log sources read."""
        if not groups:
            return []
        has_rows = self.sources_present(selector, [source for source, _ in groups], events)
        found_literals = self._found_literals(selector, events)
        found = self._literals.rules_found(found_literals)
        has_rows = has_rows.result()
        narrowed = [(source, [r for r in rules if r.needs is None or self._position[id(r)] in found])
                    for (source, rules), rows in zip(groups, has_rows, strict=True) if rows]
        return [(source, rules) for source, rules in narrowed if rules]

    def sources_present(self, selector: Selector, sources: Sequence[str], events: list[dict[str, Any]] | None = None
                        ) -> Future[list[bool]]:
        """Whether the selected rows hold events of each log source (submitted). `events`: those rows in memory."""
        present = "[" + ", ".join(f"countIf({source}) > 0" for source in sources) + "]"
        if events is not None and all(reads_only_logsource_columns(source) for source in sources):
            return self._submit(self._one_row, f"SELECT {present} FROM ({_LOGSOURCE_COMBOS})", logsource_combos(events))
        return self._submit(self._one_row, f"SELECT {present} FROM events WHERE {selector.sql()}", selector.params())

    @cached_property
    def _literal_scan(self) -> native.LiteralScan | None:
        # built on first use: live batches only
        return native.literal_scanner(self._literals.literals, self._literals.keys)

    def _found_literals(self, selector: Selector, events: list[dict[str, Any]] | None) -> list[int]:
        """The numbers of the literals the selected rows hold: natively over `events` where it can, else one
        Hyperscan query."""
        if events is None or (scan := self._literal_scan) is None:
            return self._one_row(f"SELECT {self._literals.found_sql} FROM events WHERE {selector.sql()}",
                                 selector.params())
        found, unsure = scan(events)
        if unsure:  # text the native search cannot lower-case as lowerUTF8 does
            rest = replace(selector, event_ids=tuple(events[i]["event_id"] for i in unsure))
            found = sorted({*found, *self._found_literals(rest, None)})
        return found

    def _one_row(self, sql: str, params: dict[str, Any]) -> Any:
        return self.store.query(sql, params, settings=DETECTION_SETTINGS).scalar()

    def _any_rule(self, corr: CompiledCorrelation) -> str:
        """The events a correlation counts: those of any rule it references."""
        return " OR ".join(f"({self._rule_by_id[rid].sql})" for rid in corr.rules)

    @cached_property
    def countings(self) -> list[Counting]:
        """What each correlation (in the rule set's order) keeps of the events it counts."""
        return [Counting.of(corr, self._any_rule(corr), [self._rule_by_id[rid].sql for rid in corr.rules])
                for corr in self.ruleset.correlations]

    def counting(self, corr: CompiledCorrelation) -> Counting:
        return self.countings[next(i for i, c in enumerate(self.ruleset.correlations) if c is corr)]

    def correlation_sql(self, corr: CompiledCorrelation, source: Selector, fire: Selector,
                        batch: Selector | None = None) -> str:
        """The firings of `corr` in `fire` over its counted events in `source`: from the events table (a replay),
        or for a live `batch` from correlation_events, and there only the groups (group-by values) the batch's
        counted events fall in. A firing of another group is one whose window holds none of the batch's events:
        the batch that stored the last of that window's events reports it (as a replay does). Whole groups are
        kept, so a window is the same either way, and the window SQL is the same text over both sources."""
        counting = self.counting(corr)
        counted = f"SELECT {counting.select} FROM events WHERE {source.sql()} AND ({counting.where})"
        if batch is not None and not self.counted_table:  # the group first: other rows skip the rules
            counted = (f"SELECT {counting.select} FROM events WHERE {source.sql()} AND {counting.gk} IN (SELECT "
                       f"{counting.gk} FROM events WHERE {batch.sql('batch_')} AND ({counting.where})) "
                       f"AND ({counting.where})")
        elif batch is not None:  # groups by their hash: a colliding group is read whole too, and windowed apart
            # (by gk) as in a replay. LIMIT BY: an event written twice (two writers' first batches backfilling at
            # once, a redelivered batch split differently) still counts once.
            groups = (f"SELECT cityHash64({counting.gk}) FROM events WHERE {batch.sql('batch_')} "
                      f"AND ({counting.where})")
            if (bound := _group_bound(corr)) is not None:  # only groups that could fire are windowed
                groups = (f"SELECT gh FROM correlation_events WHERE correlation = {{correlation:String}} "
                          f"AND gh IN ({groups}) AND {source.sql()} GROUP BY gh HAVING {bound}")
            counted = (f"SELECT {', '.join(COUNTED_COLUMNS)} FROM correlation_events "
                       f"WHERE correlation = {{correlation:String}} AND gh IN ({groups}) AND {source.sql()} "
                       f"LIMIT 1 BY event_id")
        marks = _marks(corr)
        value = {
            **_COUNTS,
            "value_sum": "sum(number)",
            "value_avg": "avg(number)",
            "value_percentile": f"quantileExact({corr.percentile / 100})(number)",
            "value_median": "quantileExact(0.5)(number)",
            "temporal": " + ".join(f"max({m}) OVER w" for m in marks),
            "temporal_ordered": f"windowFunnel({corr.timespan_s})(toDateTime(ts), "
                                f"{', '.join(f'{m} = 1' for m in marks)})",
        }[corr.kind]
        value = f"({value})" if corr.kind == "temporal" else f"{value} OVER w"
        frame = f"PARTITION BY gk ORDER BY t RANGE BETWEEN {corr.timespan_s * 1000} PRECEDING AND CURRENT ROW"
        inner = (f"SELECT event_id, toUnixTimestamp64Milli(ts) AS t, ts, gk, {_SELECT_CONTEXT}, "
                 f"{value} AS v, groupArray({MAX_WINDOW_EVENTS})(event_id) OVER w AS window_events "
                 f"FROM ({counted}) WINDOW w AS ({frame})")
        return (f"SELECT event_id, t, gk, window_events, {_CONTEXT_ALIASES} FROM ({inner}) "
                f"WHERE v {corr.op} {corr.threshold} AND {fire.sql('fire_')}")

    def write_counted(self, batch: Selector, lacking: Sequence[int] | None = None) -> None:
        """The counted events of the correlations into correlation_events, in one statement (one part): a live
        batch's, where the same batch written again is dropped by its deduplication token. `lacking`: instead,
        the events of those correlations (numbers in the rule set's order) that a window around the batch can
        reach (one timespan either side) and the table does not hold (see backfill)."""
        countings = self.countings
        pick = {name: "[" + ", ".join(getattr(c, name) for c in countings) + "][k]"
                for name in ("gk", "marks", "value", "number")}
        keys = _keys(countings)
        keeps = ", ".join(str(c.keep_s) for c in countings)
        selector, params, insert_settings, missing = batch, batch.params(), "", ""
        if lacking is None:
            conditions = [f"({c.where})" for c in countings]
            token = hashlib.blake2b("\x00".join([str(batch.lo_ms), *(batch.event_ids or ()), keys]).encode(),
                                    digest_size=16).hexdigest()
            insert_settings = f"SETTINGS insert_deduplication_token = 'c:{token}' "
        else:
            selector, reach, params = self._reach(batch)
            conditions = [f"({c.where} AND {reach[i]})" if i in lacking else "0" for i, c in enumerate(countings)]
            missing = (f" AND ([{keys}][k], event_id) NOT IN (SELECT correlation, event_id FROM correlation_events "
                       f"WHERE correlation IN ({_keys(countings[i] for i in lacking)}) "
                       f"AND {selector.sql()})")
        self.store.execute(
            f"INSERT INTO correlation_events ({', '.join(('correlation', *COUNTED_COLUMNS, 'keep_s'))}) "
            f"{insert_settings}"
            f"SELECT [{keys}][k], {pick['gk']}, ts, event_id, {pick['marks']}, {pick['value']}, {pick['number']}, "
            f"{', '.join(CONTEXT_FIELDS)}, [{keeps}][k] FROM events "
            f"ARRAY JOIN arrayFilter((k, m) -> m, range(1, {len(countings) + 1}), [{', '.join(conditions)}]) AS k "
            f"WHERE {selector.sql()}{missing}", params, settings=DETECTION_SETTINGS)

    def _reach(self, batch: Selector) -> tuple[Selector, list[str], dict[str, Any]]:
        """What the windows around a live batch can reach: the widest range, each correlation's range as a
        condition, and their parameters."""
        ranges = [Selector(batch.lo_ms - c.timespan_s * 1000, batch.hi_ms + c.timespan_s * 1000)
                  for c in self.ruleset.correlations]
        widest = Selector(min(r.lo_ms for r in ranges), max(r.hi_ms for r in ranges))
        params = widest.params()
        for i, r in enumerate(ranges):
            params |= r.params(f"c{i}_")
        return widest, [r.sql(f"c{i}_") for i, r in enumerate(ranges)], params

    def backfill(self, batch: Selector) -> list[int]:
        """Before a detector's first live batch: the correlations whose counted events within reach of the batch
        correlation_events does not hold all of (events stored by no live detector, a rule set that changes a
        correlation, a first start over history), written there; returns their numbers. Counting both sides
        costs a scan of each over the reach (measured at 15 M events in 5 minutes: ~1.5 s); writing what lacks,
        the first time, ~30 s for those 15 M."""
        widest, reach, params = self._reach(batch)
        stored = self._one_row("SELECT [" + ", ".join(
            f"countIf(({c.where}) AND {reach[i]})" for i, c in enumerate(self.countings)) + "] "
            f"FROM events WHERE {widest.sql()}", params)
        written = self._one_row("SELECT [" + ", ".join(
            f"uniqExactIf(cityHash64(event_id), correlation = '{c.key}' AND {reach[i]})"
            for i, c in enumerate(self.countings)) + "] FROM correlation_events "
            f"WHERE correlation IN ({_keys(self.countings)}) AND {widest.sql()}", params)
        lacking = [i for i, (s, w) in enumerate(zip(stored, written, strict=True)) if w < s]
        if lacking:  # the first start over history can take a while: say why the first batch is slow
            log.info("live detection: writing %d events of history to correlation_events for %s",
                     sum(stored[i] - written[i] for i in lacking),
                     ", ".join(self.ruleset.correlations[i].title for i in lacking))
            began = time.perf_counter()
            self.write_counted(batch, lacking)
            log.info("live detection: correlation history written in %.1f s", time.perf_counter() - began)
        return lacking

    def _write_live(self, batch: Selector) -> None:
        self.write_counted(batch)
        if not self._backfilled:  # after the batch's own: counted on both sides, they are no reason to backfill
            self.backfill(batch)
            self._backfilled = True

    # -- running ---------------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run now on this thread (serial stores) or on the shared pool; results are always read in order."""
        if self.parallel > 1:
            return _pool().submit(fn, *args)
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # re-raised by result(), as the pool would
            done.set_exception(exc)
        return done

    def run_rules(self, selector: Selector, groups: Iterable[tuple[str, list[CompiledRule]]] | None = None
                  ) -> list[Hit]:
        return [hit for f in self._submit_rules(selector, groups) for hit in f.result()]

    def _submit_rules(self, selector: Selector, groups: Iterable[tuple[str, list[CompiledRule]]] | None = None,
                      speculate: bool = False, events: list[dict[str, Any]] | None = None) -> list[Future[Any]]:
        """The group queries, submitted. With `speculate` (live batches on a server), the rules the previous batch
        needed start before the prefilter has answered, and then only the rules it names beyond them: the
        prefilter stops being a step every batch waits for. The hits are the same: a rule can only match a row
        holding its necessary literals, so a rule the prefilter would have left out finds nothing."""
        groups = self.groups if groups is None else list(groups)
        stored = None if events is None else {e["event_id"]: e for e in events}
        if not self.prefilter:
            return [self._submit(self.run_group, source, rules, selector, stored) for source, rules in groups]
        guess = self._guess if speculate and self.parallel > 1 else []
        early = [self._submit(self.run_group, source, rules, selector, stored)
                 for source, rules in merge_small_groups(guess)]
        needed = self.candidate_groups(selector, groups, events)
        if speculate:
            self._guess = needed
        guessed = {id(r) for _, rules in guess for r in rules}
        rest = [(source, [r for r in rules if id(r) not in guessed]) for source, rules in needed]
        return early + [self._submit(self.run_group, source, rules, selector, stored)
                        for source, rules in merge_small_groups([(s, r) for s, r in rest if r])]

    def run_group(self, logsource: str, rules: Sequence[CompiledRule], selector: Selector,
                  stored: dict[str, dict[str, Any]] | None = None) -> list[Hit]:
        """`stored`: the selected rows as stored, by event id (a live batch in memory); the query then returns only
        which rule matched which event, and each hit's time and context come from the event in memory (a live
        batch's hits are many: their columns cost the server and the client more than the scan itself)."""
        if stored is not None:
            result = self.store.query(self.group_sql(logsource, rules, selector, context=False), selector.params(),
                                      settings=DETECTION_SETTINGS)
            if all(row[1] in stored for row in result.rows):
                return [_stored_hit(rules[no].rule_id, stored[eid]) for no, eid in result.rows]
            log.warning("live batch: a %s hit is not among the batch's events; reading hits from the store", logsource)
        result = self.store.query(self.group_sql(logsource, rules, selector), selector.params(),
                                  settings=DETECTION_SETTINGS)
        hits = []
        for row in result.rows:
            rule = rules[row[0]]
            context = _context(row, 3)
            entity = _entity(context)
            window = row[2] - row[2] % ALERT_WINDOW_MS
            hits.append(Hit(alert_id(rule.rule_id, entity, window), rule.rule_id, row[1], row[2], entity,
                            window, context))
        return hits

    def run_correlation(self, corr: CompiledCorrelation, fire: Selector, batch: Selector | None = None) -> list[Hit]:
        span_ms = corr.timespan_s * 1000
        source, fire = Selector(fire.lo_ms - span_ms, fire.hi_ms), Selector(fire.lo_ms, fire.hi_ms)
        params = source.params() | fire.params("fire_")
        if batch is not None:
            params |= batch.params("batch_") | ({"correlation": self.counting(corr).key} if self.counted_table else {})
        sql = self.correlation_sql(corr, source, fire, batch)
        result = self.store.query(sql, params, settings=DETECTION_SETTINGS)
        hits: list[Hit] = []
        for row in result.rows:
            _, fired_at, group_values, window_events = row[:4]
            context = _context(row, 4)
            entity = ", ".join(f"{n}={v}" for n, v in zip(corr.group_names, group_values, strict=True))
            window = fired_at - fired_at % span_ms
            aid = alert_id(corr.rule_id, entity, window)
            hits.extend(Hit(aid, corr.rule_id, eid, fired_at, entity, window, context) for eid in window_events)
        return hits

    def run(self, selector: Selector, correlation_fire: Selector | None = None) -> list[Hit]:
        """All hits of the rule set: single-event rules over `selector`, correlations firing in
        `correlation_fire` (default: the selector's time range)."""
        fire = correlation_fire or Selector(selector.lo_ms, selector.hi_ms)
        return self._gather(selector, [fire] * len(self.ruleset.correlations))

    def run_live(self, batch: Selector, events: list[dict[str, Any]] | None = None) -> list[Hit]:
        """A live batch: its rows for single-event rules; for correlations, every firing whose window can
        contain one of the batch's events (events up to one timespan after the batch's newest, of the groups
        the batch's events fall in; see correlation_sql). `events`: the
        batch's rows as stored, for the prefilter to search in memory (see candidate_groups)."""
        return self._gather(batch, [Selector(batch.lo_ms, batch.hi_ms + c.timespan_s * 1000)
                                    for c in self.ruleset.correlations], speculate=True, events=events)

    def _gather(self, selector: Selector, fires: Sequence[Selector], speculate: bool = False,
                events: list[dict[str, Any]] | None = None) -> list[Hit]:
        """Correlations start first (they need no prefilter; for a live batch, the check of which of them its events
        count for), then the rule groups; the hits come out in the same order however the queries were
        scheduled. `speculate`: `selector` is a live batch (see run_live)."""
        pending = list(zip(self.ruleset.correlations, fires, strict=True))
        batch = selector if speculate else None
        if batch is None or not pending:
            correlations = [self._submit(self.run_correlation, corr, fire) for corr, fire in pending]
            rules = self._submit_rules(selector, speculate=speculate, events=events)
        else:  # a live batch: only the correlations some event of the batch counts for (see correlation_sql)
            counted = "[" + ", ".join(f"countIf({c.where}) > 0" for c in self.countings) + "]"
            active = self._submit(self._one_row, f"SELECT {counted} FROM events WHERE {batch.sql()}", batch.params())
            written = self._submit(self._write_live, batch) if self.counted_table else None
            rules = self._submit_rules(selector, speculate=speculate, events=events)
            counts, _ = active.result(), written and written.result()
            correlations = [self._submit(self.run_correlation, corr, fire, batch)
                            for (corr, fire), count in zip(pending, counts, strict=True) if count]
        return [hit for f in (*rules, *correlations) for hit in f.result()]

    # -- hits -> alerts ------------------------------------------------------------------------------

    def alerts(self, hits: Iterable[Hit]) -> list[Alert]:
        meta = self._meta
        grouped: dict[str, list[Hit]] = defaultdict(list)
        for hit in hits:
            grouped[hit.alert_id].append(hit)
        out = []
        for aid, group in sorted(grouped.items()):
            first = min(group, key=lambda h: (h.event_ts, h.event_id))
            title, level, tags, kind = meta[first.rule_id]
            out.append(Alert(
                alert_id=aid, rule_id=first.rule_id, title=title, level=level, tags=tags, kind=kind,
                ruleset_version=self.ruleset.version, entity=first.entity, window_start=first.window_start,
                first_seen=first.event_ts, last_seen=max(h.event_ts for h in group),
                event_ids=sorted({h.event_id for h in group}), context=first.context))
        return out


def hit_columns(hits: Sequence[Hit], alerts: dict[str, Alert]) -> dict[str, list[Any]]:
    """Hits as columns of the alert_hits table."""
    cols: dict[str, list[Any]] = defaultdict(list)
    for hit in hits:
        alert = alerts[hit.alert_id]
        cols["alert_id"].append(hit.alert_id)
        cols["rule_id"].append(alert.rule_id)
        cols["rule_title"].append(alert.title)
        cols["level"].append(alert.level)
        cols["tags"].append(list(alert.tags))
        cols["kind"].append(alert.kind)
        cols["ruleset_version"].append(alert.ruleset_version)
        cols["entity"].append(hit.entity)
        cols["window_start"].append(hit.window_start)
        cols["event_id"].append(hit.event_id)
        cols["event_ts"].append(hit.event_ts)
        for name in CONTEXT_FIELDS:
            cols[name].append(hit.context.get(name, ""))
        cols["suppression_id"].append(alert.suppression_id)
    return dict(cols)
