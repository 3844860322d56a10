"""Storage per event: what six months of retention cost on disk, with the events table's codecs against
ClickHouse's default LZ4 in the same run.

Events are real where ../shared/data has them — every Zeek JSON log of wrccdc-2018 and the loghub samples
(syslog, sshd, Apache, Proxifier, Windows), read by Ganzhi's own parsers — else synthetic (`make_events`).
Both tables get the same events in the same 50 k blocks on embedded ClickHouse (chDB), twice each and
interleaved, are merged to one part per partition (`OPTIMIZE ... FINAL`, the steady state), and are
measured from `system.parts` (bytes on disk, including marks and indexes). Also printed: the source text
per event, the same text gzip'ed (what an archive of the original logs would take), and a full-text scan of
`raw` on each table (what the codecs cost a query). The projection multiplies bytes per event by the
capacity model's event rates.

    python bench/storage.py [--record]
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import make_events, record_results
from pipeline.store.ddl import events_ddl
from pipeline.store.embedded import EmbeddedStore
from sensors.logs.parsers import ParseContext, ParseError, detect_format, make_parser

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOCK = 50_000
RETENTION_DAYS = 180
RATES = (300_000, 1_000_000)  # events/s on the 40 Gbps backbone (README's capacity model)


def real_events() -> tuple[list[dict], list[str], str]:
    """(events, their source lines, a description); empty when ../shared is absent."""
    files = sorted((SHARED / "zeek" / "wrccdc-2018" / "zeek-json").glob("*.json.gz"))
    files += sorted((SHARED / "logs" / "loghub").glob("*/*_2k.log"))
    events: list[dict] = []
    lines: list[str] = []
    for path in files:
        with (gzip.open(path, "rt", errors="replace") if path.suffix == ".gz" else path.open(errors="replace")) as fh:
            text = [line.rstrip("\n") for line in fh]
        fmt = detect_format(text)
        if fmt is None:
            continue
        parser = make_parser(fmt, ParseContext(year=2018), filename=path.name)
        for n, line in enumerate(text):
            try:
                event = parser.parse(line, f"{path.name}:{n}")
            except ParseError:
                continue
            if event is not None:
                events.append(event)
                lines.append(line)
    return events, lines, f"{len(files)} real files (wrccdc-2018 Zeek JSON, loghub)"


def measure(store: EmbeddedStore, database: str, codecs: bool, events: list[dict]) -> dict[str, float]:
    store.execute(f"DROP DATABASE IF EXISTS {database}")
    store.execute(f"CREATE DATABASE {database}")
    store.execute(events_ddl(database, codecs=codecs))
    table = EmbeddedStore(store.path, database=database)
    table.use_database()
    started = time.perf_counter()
    for i in range(0, len(events), BLOCK):
        table.insert_events(events[i:i + BLOCK])
    insert_s = time.perf_counter() - started
    store.execute(f"OPTIMIZE TABLE {database}.events FINAL")
    disk, rows = store.query(f"SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE database = '{database}' "
                             "AND table = 'events' AND active").rows[0]
    columns = store.query(f"SELECT name, data_compressed_bytes FROM system.columns WHERE database = '{database}' "
                          "AND table = 'events' ORDER BY data_compressed_bytes DESC LIMIT 4").rows
    scans = []
    for _ in range(5):
        started = time.perf_counter()
        store.query(f"SELECT count() FROM {database}.events WHERE positionCaseInsensitive(raw, 'admin') > 0 "
                    "SETTINGS use_query_condition_cache = 0")  # each scan reads the column
        scans.append(time.perf_counter() - started)
    return {"rows": rows, "per_event": disk / rows, "insert_s": insert_s, "scan_s": sorted(scans)[2],
            "top": ", ".join(f"{name} {size / rows:.0f}" for name, size in columns)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the figures to bench/RESULTS.md")
    args = parser.parse_args()

    events, lines, what = real_events()
    if not events:
        events, what = make_events(200_000), "200,000 synthetic events (../shared absent)"
    out = [f"events: {len(events):,} from {what}; chDB embedded, Python {platform.python_version()}"]
    if lines:
        text = ("\n".join(lines) + "\n").encode()
        out.append(f"source text: {len(text) / len(lines):.0f} bytes/event as logged, "
                   f"{len(gzip.compress(text, 6)) / len(lines):.0f} gzip'ed (an archive of the original lines)")
    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-storage-") as tmp:
        store = EmbeddedStore(tmp)
        runs = [measure(store, name, codecs, events) for _ in range(2) for name, codecs in (("lz4", False),
                                                                                           ("codecs", True))]
    # each twice, interleaved: the faster of the two times (the first insert of a process pays its warm-up)
    base, ours = ({**runs[i], "insert_s": min(runs[i]["insert_s"], runs[i + 2]["insert_s"]),
                   "scan_s": min(runs[i]["scan_s"], runs[i + 2]["scan_s"])} for i in (0, 1))
    for label, m in (("baseline, ClickHouse default LZ4", base), ("events table codecs (ZSTD, Delta)", ours)):
        out.append(f"{label:<36} {m['per_event']:6.1f} bytes/event on disk; insert {m['insert_s']:.2f}s; "
                   f"scan of raw {m['scan_s'] * 1000:.0f} ms; largest columns (bytes/event): {m['top']}")
    out.append(f"ratio baseline / codecs: {base['per_event'] / ours['per_event']:.2f}x smaller on disk, insert time "
               f"{ours['insert_s'] / base['insert_s']:.2f}x, raw scan time {ours['scan_s'] / base['scan_s']:.2f}x")
    for rate in RATES:
        days = rate * 86_400 * RETENTION_DAYS
        out.append(f"{RETENTION_DAYS} days at {rate:,} events/s: {days * ours['per_event'] / 1e12:,.0f} TB with the "
                   f"codecs ({days * base['per_event'] / 1e12:,.0f} TB with LZ4), before replication")
    print("\n".join(out))
    if args.record:
        record_results("storage", " ".join(["python bench/storage.py", *sys.argv[1:]]), out)


if __name__ == "__main__":
    main()
