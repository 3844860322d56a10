"""The events table's sorting key: what one hour of dense traffic costs the reads that matter, new key vs old.

Two tables on a ClickHouse server (GANZHI_CLICKHOUSE, else deploy/local starts one), the same DDL
(pipeline/store/ddl.py: columns, codecs, bloom filters) but for the key: Ganzhi's (event_category, ts, event_id)
and, as the baseline, the key it had before, (event_category, toStartOfHour(ts), src_ip, event_id). Both get the
same `--rate` events/s over one hour, generated server-side, merged to one part. Per read: rows the server read
and the median time of `--repeat` runs:

- a live batch: one second's events by time range + their ids (the query shape of Selector.batch);
- a search: the newest 100 dns events of the last 5 minutes;
- an IP lookup: one source address over the hour (where the old key had the address in it).

Usage: python bench/sortkey.py [--rate 2000] [--repeat 7] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clickhouse_driver import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record_results
from pipeline.store.ddl import EVENTS_SORTING_KEY, events_ddl

OLD_KEY = "event_category, toStartOfHour(ts), src_ip, event_id"
START_MS = 1_714_550_400_000  # on the hour


def load(client: Client, database: str, table: str, key: str, n: int) -> None:
    ddl = events_ddl(database).replace(f"{database}.events (", f"{database}.{table} (", 1)
    client.execute(ddl.replace(f"ORDER BY ({EVENTS_SORTING_KEY})", f"ORDER BY ({key})"))
    client.execute(
        f"""INSERT INTO {database}.{table} (ts, event_id, sensor, source_type, event_category, src_ip, src_port,
            dst_ip, dst_port, protocol, dns_query, message)
        SELECT fromUnixTimestamp64Milli(toInt64({START_MS} + intDiv(number * 3600000, {n})), 'UTC'),
               lower(hex(cityHash64(number, 'sortkey'))), 'edge-' || toString(number % 8),
               ['zeek_conn', 'zeek_dns', 'sshd', 'nginx'][number % 4 + 1],
               ['network_connection', 'dns', 'auth', 'http'][number % 4 + 1],
               toIPv6(IPv4NumToString(toUInt32(167772160 + cityHash64(number) % 1048576))),
               toUInt16(1024 + number % 60000),
               toIPv6(IPv4NumToString(toUInt32(3232235520 + cityHash64(number, 1) % 65536))), 53, 'udp',
               if(number % 4 = 1, 'host' || toString(number % 5000) || '.example.org', ''), 'event ' || toString(number)
        FROM numbers({n})""", settings={"max_insert_threads": 2})
    client.execute(f"OPTIMIZE TABLE {database}.{table} FINAL")


def measure(client: Client, sql: str, params: dict, repeat: int) -> tuple[int, float, int]:
    """(rows read, median ms, result rows)."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = client.execute(sql, params)
        times.append((time.perf_counter() - began) * 1000)
    return client.last_query.progress.rows, statistics.median(times), len(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second over the hour")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="write the figures to bench/RESULTS.md")
    args = parser.parse_args()
    n = args.rate * 3600
    servers = []
    url = os.environ.get("GANZHI_CLICKHOUSE")
    if not url:
        from deploy.local.clickhouse import LocalClickHouse

        servers.append(LocalClickHouse(Path(tempfile.mkdtemp(prefix="ganzhi-bench-sortkey-")) / "ch").start())
        url = servers[0].url_for("default")
    # the driver's own client (not ServerStore): the benchmark reads each query's rows-read figure from it
    client = Client.from_url(f"{url}{'&' if '?' in url else '?'}send_receive_timeout=900&server_side_params=1")
    database = "bench_sortkey"
    lines = []
    try:
        client.execute(f"DROP DATABASE IF EXISTS {database}")
        client.execute(f"CREATE DATABASE {database}")
        began = time.perf_counter()
        for table, key in (("events_new", EVENTS_SORTING_KEY), ("events_old", OLD_KEY)):
            load(client, database, table, key, n)
        version = client.execute("SELECT version()")[0][0]
        lines.append(f"{n:,} events in one hour ({args.rate:,}/s) per table, loaded in "
                     f"{time.perf_counter() - began:.0f}s; ClickHouse {version}; median of {args.repeat} runs")
        second_lo = START_MS + 1_800_000
        ids = [r[0] for r in client.execute(
            f"SELECT event_id FROM {database}.events_new WHERE ts >= fromUnixTimestamp64Milli({second_lo}, 'UTC') "
            f"AND ts < fromUnixTimestamp64Milli({second_lo + 1000}, 'UTC')")]
        an_ip = client.execute(f"SELECT toString(src_ip) FROM {database}.events_new LIMIT 1 OFFSET 12345")[0][0]
        reads = {
            f"live batch (1 s, {len(ids):,} ids)": (
                "SELECT count(), sum(length(message)) FROM {t} WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
                "AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
                "AND event_id IN (SELECT arrayJoin({ids:Array(String)}))",
                {"lo": second_lo, "hi": second_lo + 1000, "ids": ids}),
            "search: newest 100 dns of the last 5 min": (
                "SELECT ts, event_id, src_ip, dns_query, message FROM {t} WHERE event_category = 'dns' "
                "AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
                "AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC') ORDER BY ts DESC, event_id DESC LIMIT 100",
                {"lo": START_MS + 3_300_000, "hi": START_MS + 3_600_000}),
            "IP lookup: one src_ip over the hour": (
                "SELECT count() FROM {t} WHERE src_ip = toIPv6({ip:String})", {"ip": an_ip}),
        }
        for name, (sql, params) in reads.items():
            new = measure(client, sql.replace("{t}", f"{database}.events_new"), params, args.repeat)
            old = measure(client, sql.replace("{t}", f"{database}.events_old"), params, args.repeat)
            assert new[2] == old[2], f"{name}: the two tables disagree"
            lines.append(f"{name:42s} key ({EVENTS_SORTING_KEY}): {new[0]:>10,} rows read {new[1]:7.1f} ms | "
                         f"baseline ({OLD_KEY}): {old[0]:>10,} rows {old[1]:7.1f} ms | ratio {old[1] / new[1]:.1f}x")
        for line in lines:
            print(line, flush=True)
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {database}")
        client.disconnect()
        for server in servers:
            server.stop()
    if args.record:
        record_results("sortkey", " ".join(["python bench/sortkey.py", *sys.argv[1:]]), lines)


if __name__ == "__main__":
    main()
