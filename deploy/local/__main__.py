"""`python -m deploy.local [--dir DIR]`: run a local Kafka broker and ClickHouse server until Ctrl-C.

Prints the environment to point Ganzhi at them (GANZHI_KAFKA, GANZHI_CLICKHOUSE).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from deploy.local.clickhouse import LocalClickHouse
from deploy.local.kafka import LocalKafka


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".ganzhi-servers"), help="work directory for both servers")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--clickhouse-port", type=int, default=9000)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    clickhouse = LocalClickHouse(args.dir / "clickhouse", tcp_port=args.clickhouse_port).start()
    kafka = LocalKafka(args.dir / "kafka", port=args.kafka_port)
    try:
        kafka.start()
        print(f"ClickHouse {clickhouse.version()} (chDB) native :{clickhouse.tcp_port}, HTTP :{clickhouse.http_port}")
        print(f"Apache Kafka {kafka.version} (KRaft) at {kafka.bootstrap}")
        print(f"export GANZHI_KAFKA={kafka.bootstrap} GANZHI_CLICKHOUSE={clickhouse.url}")
        print("Ctrl-C stops both.", flush=True)
        stop.wait()
    finally:
        kafka.stop()
        clickhouse.stop()


if __name__ == "__main__":
    main()
