"""Detection throughput and live latency on embedded ClickHouse (chDB), with a baseline in the same run.

- replay: the whole rule set (SigmaHQ when ../shared is present, plus Ganzhi's pack) over N synthetic
  events (half Windows process creations with realistic images and command lines, half network events),
  as the engine runs it — one scan per log source, each rule evaluated only on rows holding one of its
  necessary literals (pipeline/detect/prefilter.py) — vs the same scans without that prefilter, and vs the
  baseline of one query per rule (the published-converter way: what DESIGN.md measured at ~4,600 events/s),
  and vs pySigma's SQLite backend (bench/sqlite_baseline.py) over a subset of the same events;
- live: event -> alert latency per batch at the given rate (batch = 1 s of events): insert + detection.

The query condition cache is off, so repeated scans do not flatter the numbers.
Usage: python bench/detect.py [--events 200000] [--sqlite-events 10000] [--live-rate 50000] [--live-batches 10]
                              [--record]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import sqlite_baseline
from bench.common import make_events, record_results
from pipeline.detect.compile import DETECTION_SETTINGS, compile_rules
from pipeline.detect.engine import Detector, Selector
from pipeline.schema import event_id, normalize
from pipeline.store.embedded import EmbeddedStore
from rules import PACK

SIGMAHQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "sigma" / "sigmahq"
IMAGES = ["C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
          "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "C:\\Windows\\explorer.exe",
          "C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\System32\\rundll32.exe", "C:\\Tools\\7z.exe"]
ARGS = ["/c dir", "-NoProfile -Command Get-Process", "--type=renderer --lang=zh-CN", "",
        "-k netsvcs -p", "shell32.dll,Control_RunDLL", "a backup.7z D:\\data"]


def windows_events(n: int, start_ms: int, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randrange(len(IMAGES))
        out.append(normalize({
            "ts": start_ms + i * 3, "event_id": event_id("bench-win", f"{seed}/{i}", i), "sensor": "wef",
            "source_type": "windows", "event_category": "process_creation", "host_name": f"pc-{rng.randrange(2000)}",
            "process_image": IMAGES[k], "process_command_line": f"\"{IMAGES[k]}\" {ARGS[k]} {rng.randrange(10**6)}",
            "process_parent_image": "C:\\Windows\\explorer.exe", "user_name": f"district\\u{rng.randrange(500)}",
            "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": "1", "OriginalFileName": "x.exe"}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sqlite-events", type=int, default=10_000,
                        help="events for the SQLite baseline (one full scan per rule: keep it small)")
    parser.add_argument("--live-rate", type=int, default=50_000)
    parser.add_argument("--live-batches", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    folders = sorted(SIGMAHQ.glob("rules*")) if SIGMAHQ.exists() else []
    ruleset = compile_rules([*folders, PACK])
    lines = [f"rules: {len(ruleset.rules)} queries + {len(ruleset.correlations)} correlations "
             f"({'SigmaHQ + ' if folders else ''}Ganzhi pack), rule set {ruleset.version}"]

    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-") as tmp:
        store = EmbeddedStore(tmp, database="bench")
        store.ensure_schema()
        store.execute("SET use_query_condition_cache = 0")
        t0 = 1_714_550_400_000
        events = windows_events(args.events // 2, t0) + make_events(args.events - args.events // 2, start_ms=t0)
        store.insert_events(events)
        store.execute("OPTIMIZE TABLE events FINAL")
        detector = Detector(store, ruleset)
        everything = Selector(t0 - 1, t0 + args.events * 3 + 1)

        started = time.perf_counter()
        hits = detector.run(everything)
        engine_s = time.perf_counter() - started
        lines.append(f"replay, engine (literal prefilter + one scan per log source): {len(events):,} events in "
                     f"{engine_s:.2f} s = {len(events) / engine_s:,.0f} events/s, {len(hits):,} hits")
        started = time.perf_counter()
        plain_hits = Detector(store, ruleset, prefilter=False).run(everything)
        plain_s = time.perf_counter() - started
        same = sorted((h.rule_id, h.event_id) for h in plain_hits) == sorted((h.rule_id, h.event_id) for h in hits)
        lines.append(f"replay, engine without the prefilter:     {len(events):,} events in {plain_s:.2f} s = "
                     f"{len(events) / plain_s:,.0f} events/s, same hits: {same}")

        started = time.perf_counter()
        baseline_hits = 0
        for rule in detector.alerting:
            baseline_hits += store.query(f"SELECT count() FROM events WHERE {everything.sql()} AND {rule.sql}",
                                         everything.params(), settings=DETECTION_SETTINGS).scalar()
        baseline_s = time.perf_counter() - started
        lines.append(f"replay, baseline (one query per rule):   {len(events):,} events in {baseline_s:.2f} s = "
                     f"{len(events) / baseline_s:,.0f} events/s, {baseline_hits:,} hits")
        single_hits = sum(1 for h in hits if h.rule_id in {r.rule_id for r in detector.alerting})
        lines.append(f"same single-rule hits both ways: {single_hits == baseline_hits} "
                     f"({single_hits:,} vs {baseline_hits:,})")
        lines.append(f"ratio engine / baseline: {baseline_s / engine_s:.1f}x; prefilter / no prefilter: "
                     f"{plain_s / engine_s:.1f}x")

        # pySigma's SQLite backend: the same rules (as far as it converts them) over the same kind of events
        half, sub = len(events) // 2, min(args.sqlite_events, len(events)) // 2
        subset = events[:sub] + events[half:half + sub]  # windows and network events alike
        queries, unconverted = sqlite_baseline.convert([*folders, PACK])
        sq = sqlite_baseline.run(queries, subset)
        sqlite_rate = len(subset) / sq["seconds"]
        in_subset = {e["event_id"] for e in subset}
        alerting = {r.rule_id for r in detector.alerting}
        engine_subset_hits = sum(1 for h in hits if h.rule_id in alerting and h.event_id in in_subset)
        lines.append(f"replay, pySigma SQLite backend: {len(queries):,} queries ({unconverted:,} rules not converted, "
                     f"{sq['rejected']:,} rejected by SQLite) over {len(subset):,} of the events in "
                     f"{sq['seconds']:.2f} s = {sqlite_rate:,.0f} events/s, {sq['hits']:,} hits there "
                     f"(the engine: {engine_subset_hits:,}; the backend's own semantics differ)")
        lines.append(f"ratio engine / pySigma SQLite: {len(events) / engine_s / sqlite_rate:.1f}x")

        latencies = []
        start = t0 + 10 * 86_400_000
        for b in range(args.live_batches):
            batch = windows_events(args.live_rate // 2, start + b * 1000, seed=100 + b)
            batch += make_events(args.live_rate - args.live_rate // 2, start_ms=start + b * 1000, seed=200 + b)
            began = time.perf_counter()
            store.insert_events(batch)
            detector.run_live(Selector.batch(batch))
            latencies.append(time.perf_counter() - began)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        lines.append(f"live at {args.live_rate:,} events/s ({args.live_batches} one-second batches): insert + detect "
                     f"p50 {statistics.median(latencies):.2f} s, p99 {p99:.2f} s")
        store.close()

    for line in lines:
        print(line)
    if args.record:
        record_results("detect", " ".join(["python bench/detect.py", *sys.argv[1:]]), lines)


if __name__ == "__main__":
    main()
