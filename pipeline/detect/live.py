"""Live detection: the writer calls this after each batch is stored and before it commits the offsets.

The rule set runs over exactly the batch's rows (the same SQL a replay runs over a time range), alerts
are stored in `alert_hits` and published to `<prefix>.alerts` unless a suppression hides them. A failure
here fails the batch: the writer retries it, so detection is at least once and — alerts being keyed by
(rule, entity, window) and hits by (alert, event) — exactly once in the tables.

Which rules run: a writer started with explicit `--rules` runs those, pinned. Otherwise it follows the
*active* rule-set version — the newest row of `ruleset_activations`, written when an admin uploads a rule or
activates a stored version (a rollback) — and switches to a newly activated version without a restart: the
first batch more than SUPPRESSION_REFRESH_S after the last look notices it, the new set is compiled in the
background while the old one keeps running, and it is swapped in between two batches. Every alert records
the version that produced it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.bus.base import Bus
from pipeline.detect import suppress
from pipeline.detect.compile import RuleSet, compile_sources
from pipeline.detect.engine import Alert, Detector, Hit, Selector, hit_columns
from pipeline.store.base import Store
from pipeline.store.ddl import ALERT_HIT_KINDS

log = logging.getLogger(__name__)
# how often suppressions, rule switches and the active version are re-read (GANZHI_DETECT_REFRESH_S)
SUPPRESSION_REFRESH_S = float(os.environ.get("GANZHI_DETECT_REFRESH_S", 30))


def save_ruleset(store: Store, ruleset: RuleSet) -> None:
    """Keep the rule files of a version, so `ganzhi replay --rules VERSION` can rerun it any time later."""
    store.insert_columns("rulesets", {"version": [ruleset.version], "created_at": [int(time.time() * 1000)],
                                      "files": [dict(ruleset.sources)]},
                         {"version": "str", "created_at": "ts", "files": "map"}, dedup_token=f"rs-{ruleset.version}")


def load_ruleset_files(store: Store, version: str) -> dict[str, str] | None:
    row = store.query("SELECT files FROM rulesets WHERE version = {v:String} LIMIT 1", {"v": version}).rows
    return dict(row[0][0]) if row else None


def activate_ruleset(store: Store, version: str, actor: str, reason: str = "") -> None:
    """Make a stored version the one live detection runs (writers that follow it switch within 30 s)."""
    store.insert_columns("ruleset_activations", {"activated_at": [time.time_ns() // 1_000_000], "version": [version],
                                                 "activated_by": [actor], "reason": [reason]},
                         {"activated_at": "ts", "version": "str", "activated_by": "str", "reason": "str"})


def active_version(store: Store) -> str | None:
    """The version activated last; None when none was ever activated."""
    return store.query("SELECT version FROM ruleset_activations ORDER BY activated_at DESC, version DESC "
                       "LIMIT 1").scalar()


def set_rule_enabled(store: Store, rule_id: str, enabled: bool, actor: str) -> None:
    """Switch a rule on or off for live detection (writers pick it up within SUPPRESSION_REFRESH_S)."""
    store.insert_columns("rule_state", {"rule_id": [rule_id], "enabled": [int(enabled)], "changed_by": [actor],
                                        "changed_at": [time.time_ns() // 1_000_000], "version": [time.time_ns()]},
                         {"rule_id": "str", "enabled": "u8", "changed_by": "str", "changed_at": "ts", "version": "u64"})


def disabled_rules(store: Store) -> set[str]:
    return {r[0] for r in store.query("SELECT rule_id FROM rule_state FINAL WHERE enabled = 0").rows}


def store_alerts(store: Store, hits: Sequence[Hit], alerts: Sequence[Alert]) -> None:
    if not hits:
        return
    by_id = {a.alert_id: a for a in alerts}
    token = hashlib.blake2b("\n".join(sorted(f"{h.alert_id}/{h.event_id}" for h in hits)).encode(),
                            digest_size=16).hexdigest()
    store.insert_columns("alert_hits", hit_columns(hits, by_id), ALERT_HIT_KINDS, dedup_token=f"ah-{token}")


def publish_alerts(bus: Bus, alerts: Sequence[Alert]) -> int:
    count = 0
    for alert in alerts:
        if alert.suppression_id:
            continue
        bus.publish(bus.topics.alerts, orjson.dumps(alert.as_record()), key=alert.alert_id.encode())
        count += 1
    if count:
        bus.flush()
    return count


@dataclass
class LiveStats:
    batches: int = 0
    events: int = 0
    hits: int = 0
    alerts_published: int = 0
    alerts_suppressed: int = 0
    seconds: float = 0.0


class LiveDetection:
    """The writer's `on_batch` hook."""

    def __init__(self, store: Store, bus: Bus, ruleset: RuleSet, on_alerts: Callable[[list[dict[str, Any]]], Any]
                 | None = None, follow_active: bool = False):
        """`on_alerts` gets the published alerts' records after they are stored (the embedded mode groups
        them into incidents there; with Kafka the incident correlator reads the alerts topic instead).
        `follow_active`: switch to each newly activated rule-set version (see the module docstring)."""
        self.store = store
        self.bus = bus
        self.on_alerts = on_alerts
        self.detector = Detector(store, ruleset)
        self.follow_active = follow_active
        self.stats = LiveStats()
        self._suppressions: list[suppress.Suppression] = []
        self._disabled: set[str] = set()
        self._suppressions_at = 0.0
        self._compiler: ThreadPoolExecutor | None = None
        self._next: tuple[str, Future[RuleSet]] | None = None  # the version being compiled
        self._refused: set[str] = set()  # activated versions that did not compile here
        save_ruleset(store, ruleset)

    @property
    def version(self) -> str:
        return self.detector.ruleset.version

    def _refresh(self) -> None:
        """Suppressions, rule switches and the active version change at run time (API, CLI): re-read them now
        and then."""
        now = time.monotonic()
        if now - self._suppressions_at > SUPPRESSION_REFRESH_S:
            self._suppressions = suppress.load(self.store)
            self._disabled = disabled_rules(self.store)
            self._suppressions_at = now
            if self.follow_active:
                self._follow(active_version(self.store))
        self._swap_if_compiled()

    def _follow(self, wanted: str | None) -> None:
        if wanted is None or wanted in self._refused:
            return
        if wanted == self.version:
            self._next = None  # a switch still compiling was overtaken by a newer activation (a quick rollback)
            return
        if self._next is not None and self._next[0] == wanted:
            return  # already compiling it
        files = load_ruleset_files(self.store, wanted)
        if files is None:
            log.error("active rule set %s is not stored; live detection keeps %s", wanted, self.version)
            self._refused.add(wanted)
            return
        if self._compiler is None:
            self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ganzhi-rules")
        log.info("live detection: compiling activated rule set %s (running %s meanwhile)", wanted, self.version)
        self._next = (wanted, self._compiler.submit(compile_sources, files))

    def _swap_if_compiled(self, wait: bool = False) -> None:
        if self._next is None or not (wait or self._next[1].done()):
            return
        wanted, future = self._next
        self._next = None
        try:
            ruleset = future.result()
        except Exception as exc:  # a stored version that no longer compiles here (e.g. another pySigma)
            log.error("activated rule set %s does not compile (%s); live detection keeps %s", wanted, exc,
                      self.version)
            self._refused.add(wanted)
            return
        if not ruleset.rule_count:
            log.error("activated rule set %s holds no rule that compiles; live detection keeps %s", wanted,
                      self.version)
            self._refused.add(wanted)
            return
        self.detector = Detector(self.store, ruleset)
        log.warning("live detection: switched to rule set %s (%d rules)", ruleset.version, ruleset.rule_count)

    def sync_rules(self) -> str:
        """Re-read the active version now and wait until it runs; returns the version running."""
        self._suppressions_at = 0.0
        self._refresh()
        self._swap_if_compiled(wait=True)
        return self.version

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.shutdown(wait=False, cancel_futures=True)

    def refresh_suppressions(self) -> None:
        self._suppressions_at = 0.0

    def __call__(self, events: Sequence[dict[str, Any]], as_stored: bool = True) -> list[Alert]:
        """Detect over a stored batch. `as_stored`: every event is exactly its stored row (the prefilter may then
        search the events in memory); False after a takeover, when an earlier writer stored some of them."""
        if not events:
            return []
        started = time.monotonic()
        self._refresh()
        hits = self.detector.run_live(Selector.batch(events), list(events) if as_stored else None)
        if self._disabled:
            hits = [h for h in hits if h.rule_id not in self._disabled]
        alerts = self.detector.alerts(hits)
        suppress.apply(alerts, self._suppressions)
        store_alerts(self.store, hits, alerts)
        published = publish_alerts(self.bus, alerts)
        if self.on_alerts is not None and published:
            self.on_alerts([a.as_record() for a in alerts if not a.suppression_id])
        self.stats.batches += 1
        self.stats.events += len(events)
        self.stats.hits += len(hits)
        self.stats.alerts_published += published
        self.stats.alerts_suppressed += sum(1 for a in alerts if a.suppression_id)
        self.stats.seconds += time.monotonic() - started
        return alerts
