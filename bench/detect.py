"""Detection throughput and live latency on embedded ClickHouse (chDB), with a baseline in the same run.

- replay: the whole rule set (SigmaHQ when ../shared is present, plus Ganzhi's pack) over N synthetic
  events (half Windows process creations with realistic images and command lines, half network events),
  as the engine runs it — one scan per log source, each rule evaluated only on rows holding one of its
  necessary literals (pipeline/detect/prefilter.py) — vs the same scans without that prefilter, and vs the
  baseline of one query per rule (the published-converter way: what DESIGN.md measured at ~4,600 events/s),
  and vs pySigma's SQLite backend (bench/sqlite_baseline.py) over a subset of the same events;
- live: per batch of 1 s of events at the given rate (stamped within that second but for --late-fraction of them,
  up to --late-s earlier), the time to insert it and detect over it, on the embedded
  store and on a ClickHouse server (deploy/local; the production writer's path), where a batch's queries run
  side by side and the prefilter searches the batch in memory (the native module), against the same detector
  with the prefilter's search in ClickHouse, and that one running its queries one at a time (baseline; the same
  batches, interleaved). The server's table first holds --live-history-s (default 300) seconds of events at the
  live rate, as in steady state: correlations look back over their timespan (measured before they windowed
  only a batch's groups: 13.7 s per batch over 5 minutes of history, 1.0 s on an empty table), and
  correlation_events already holds what they count of it, merged (as earlier live batches leave it). One more
  baseline: the production detector with its correlation windows over the events table, as before that table.
  Paced: batches due one a second, each waiting for the one before (a real writer): the latency from a
  batch's completion to its alerts, which grows without bound when a batch takes longer than a second, and from an
  event to its alert, which adds the wait for its batch to close (up to the second the batch collects).

The query condition cache is off, so repeated scans do not flatter the numbers.
- scale: the engine alone over --scale-events (default 1 M; the baselines above would take hours there): what a
  longer replay range gives once planning is paid over more rows.
Usage: python bench/detect.py [--events 200000] [--sqlite-events 10000] [--scale-events 1000000] [--live-rate 50000]
                              [--live-batches 10] [--live-history-s 300] [--late-fraction 0.01]
                              [--late-s 60] [--no-server] [--live-server-only]
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
from bench.api import load_events
from bench.common import make_events, record_results
from pipeline.detect.compile import DETECTION_SETTINGS, RuleSet, compile_rules
from pipeline.detect.engine import Detector, Selector
from pipeline.schema import event_id, normalize
from pipeline.store.embedded import EmbeddedStore
from pipeline.store.server import ServerStore
from rules import PACK

T0 = 1_714_550_400_000
LIVE_START = T0 + 10 * 86_400_000  # live batches come after the replays' events
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


def live_batch(args: argparse.Namespace, second_ms: int, seed: int) -> list[dict]:
    """One second's events at the live rate, spread over that second, but for `--late-fraction` of them stamped up
    to `--late-s` seconds earlier (a connection logged when it ends, a forwarder's buffer), uniformly."""
    rng = random.Random(seed)
    batch = windows_events(args.live_rate // 2, second_ms, seed=100 + seed)
    batch += make_events(args.live_rate - args.live_rate // 2, start_ms=second_ms, seed=200 + seed)
    for event in batch:
        late = rng.random() < args.late_fraction
        event["ts"] = second_ms - rng.randrange(1, args.late_s * 1000) if late else second_ms + rng.randrange(1000)
    return batch


def live_run(detectors: dict[str, tuple[Detector, bool]], args: argparse.Namespace, start: int, warmup: int = 0
             ) -> dict[str, list[float]]:
    """Seconds per batch (insert + detect) for each (detector, whether it gets the batch in memory, as the writer
    hands it), after `warmup` unmeasured batches; they take turns first on successive batches, so none always
    meets a warmer cache. Every detector must find the same hits."""
    store = next(iter(detectors.values()))[0].store
    seconds: dict[str, list[float]] = {name: [] for name in detectors}
    names = list(detectors)
    for b in range(-warmup, args.live_batches):
        batch = live_batch(args, start + b * 1000, seed=b)
        began = time.perf_counter()
        store.insert_events(batch)
        insert_s = time.perf_counter() - began
        found = []
        for name in names[b % len(names):] + names[:b % len(names)]:
            began = time.perf_counter()
            detector, in_memory = detectors[name]
            hits = detector.run_live(Selector.batch(batch), batch if in_memory else None)
            if b >= 0:
                seconds[name].append(insert_s + time.perf_counter() - began)
            found.append(sorted((h.rule_id, h.event_id) for h in hits))
        assert all(f == found[0] for f in found), "detectors disagree on a live batch"
    return seconds


def scale_replay(store: EmbeddedStore, ruleset: RuleSet, n: int, small_rate: float) -> str:
    """The engine over `n` events of the same mix in another table-full (the small run's events dropped first)."""
    store.execute("TRUNCATE TABLE events")
    t0 = T0
    for k in range(0, n, 200_000):  # in blocks: the events of 1 M as dicts would take GBs
        m = min(200_000, n - k)
        store.insert_events(windows_events(m // 2, t0 + k * 3, seed=1000 + k)
                            + make_events(m - m // 2, start_ms=t0 + k * 3, seed=2000 + k))
    store.execute("OPTIMIZE TABLE events FINAL")
    started = time.perf_counter()
    hits = Detector(store, ruleset).run(Selector(t0 - 1, t0 + n * 3 + 1))
    seconds = time.perf_counter() - started
    return (f"replay at scale, engine: {n:,} events in {seconds:.2f} s = {n / seconds:,.0f} events/s, "
            f"{len(hits):,} hits ({n / seconds / small_rate:.1f}x its rate on the smaller table)")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def live_line(label: str, seconds: list[float]) -> str:
    done = 0.0
    paced = []
    for i, s in enumerate(seconds):  # batch i complete at i s; processed after the previous one is done
        done = max(done, float(i)) + s
        paced.append(done - i)
    # an event arriving u s into its batch's second waits 1 - u s for the batch to close (late ones: from arrival)
    waited = [p + (100 - k) / 100 for p in paced for k in range(100)]
    keeps_up = "keeps up" if p99(seconds) <= 1.0 else "falls behind: a batch takes longer than the second it covers"
    return (f"live, {label}: insert + detect per batch p50 {statistics.median(seconds):.2f} s, "
            f"p99 {p99(seconds):.2f} s; paced, batch complete -> alerts p99 {p99(paced):.2f} s, "
            f"event -> alert p99 {p99(waited):.2f} s ({keeps_up})")


def server_live(ruleset: RuleSet, args: argparse.Namespace, start: int) -> list[str]:
    from deploy.local.clickhouse import LocalClickHouse

    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-ch-") as tmp:
        server = LocalClickHouse(Path(tmp)).start()
        try:
            store = ServerStore(server.url_for("bench_live"))
            store.ensure_schema()
            if args.live_history_s:  # the steady state: the table holds the recent past at the same rate
                load_events(store, args.live_rate * args.live_history_s, start, span=args.live_history_s * 1000)
                store.execute("OPTIMIZE TABLE events FINAL")
            side_by_side, one_at_a_time = Detector(store, ruleset), Detector(store, ruleset)
            if args.live_history_s:  # and live batches before these wrote what correlations count of it, merged
                side_by_side.backfill(Selector(start - 1000, start))
                store.execute("OPTIMIZE TABLE correlation_events FINAL")
            one_at_a_time.parallel = 1
            # one batch first: a fresh server compiles the prefilter's Hyperscan database once (~2.5 s); the
            # embedded store above met it in the replays
            over_events = Detector(store, ruleset, counted_table=False)  # live windows over the events table
            runs = live_run({"parallel": (side_by_side, True), "parallel, ClickHouse": (side_by_side, False),
                             "serial": (one_at_a_time, False), "events windows": (over_events, True)},
                            args, start, warmup=1)
            version = store.server_version()
        finally:
            server.stop()
    p50 = {name: statistics.median(s) for name, s in runs.items()}
    history = (f" over {args.live_rate * args.live_history_s:,} events of history ({args.live_history_s} s)"
               if args.live_history_s else "")
    return [live_line(f"server {version}{history}, a batch's queries side by side, its literals searched in memory",
                      runs["parallel"]),
            live_line("server, side by side, the literals searched by ClickHouse", runs["parallel, ClickHouse"]),
            live_line("server, by ClickHouse, the queries one at a time (baseline)", runs["serial"]),
            live_line("server, side by side, in memory, correlation windows over the events table (baseline)",
                      runs["events windows"]),
            f"ratio p50 baseline / production: {p50['serial'] / p50['parallel']:.2f}x; literals by ClickHouse / in "
            f"memory: {p50['parallel, ClickHouse'] / p50['parallel']:.2f}x; windows over events / over "
            f"correlation_events: {p50['events windows'] / p50['parallel']:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sqlite-events", type=int, default=10_000,
                        help="events for the SQLite baseline (one full scan per rule: keep it small)")
    parser.add_argument("--scale-events", type=int, default=1_000_000,
                        help="events for the engine-only replay at scale (0: skip)")
    parser.add_argument("--live-rate", type=int, default=50_000)
    parser.add_argument("--live-batches", type=int, default=10)
    parser.add_argument("--live-history-s", type=int, default=300,
                        help="seconds of events at the live rate already in the server's table before the live "
                             "batches (generated by the server: connections, DNS, failed logins, HTTP)")
    parser.add_argument("--late-fraction", type=float, default=0.01,
                        help="share of a live batch's events stamped before its second (arriving late)")
    parser.add_argument("--late-s", type=int, default=60, help="how late those events are at most, seconds")
    parser.add_argument("--no-server", action="store_true", help="skip the live run on a ClickHouse server")
    parser.add_argument("--live-server-only", action="store_true", help="only the live run on a ClickHouse server")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    folders = sorted(SIGMAHQ.glob("rules*")) if SIGMAHQ.exists() else []
    ruleset = compile_rules([*folders, PACK])
    lines = [f"rules: {len(ruleset.rules)} queries + {len(ruleset.correlations)} correlations "
             f"({'SigmaHQ + ' if folders else ''}Ganzhi pack), rule set {ruleset.version}"]

    if args.live_server_only:
        for line in [*lines, *server_live(ruleset, args, LIVE_START)]:
            print(line)
        return
    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-") as tmp:
        store = EmbeddedStore(tmp, database="bench")
        store.ensure_schema()
        store.execute("SET use_query_condition_cache = 0")
        t0 = T0
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
        if args.scale_events:
            lines.append(scale_replay(store, ruleset, args.scale_events, len(events) / engine_s))

        start = LIVE_START
        lines.append(f"live at {args.live_rate:,} events/s, {args.live_batches} one-second batches:")
        lines.append(live_line("embedded chDB (one statement at a time, literals searched in memory)",
                               live_run({"": (detector, True)}, args, start)[""]))
        store.close()
    if not args.no_server:
        lines.extend(server_live(ruleset, args, start))

    for line in lines:
        print(line)
    if args.record:
        record_results("detect", " ".join(["python bench/detect.py", *sys.argv[1:]]), lines)


if __name__ == "__main__":
    main()
