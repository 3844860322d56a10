"""Helpers shared by the benchmarks: synthetic events and recording results in bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import random
import re
import resource
from pathlib import Path

from pipeline.schema import event_id, normalize

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_CATEGORIES = ("dns", "network_connection", "http", "tls", "auth")


def make_events(n: int, seed: int = 7, start_ms: int = 1_714_550_400_000) -> list[dict]:
    """n realistic-looking canonical events (mixed categories, thousands of hosts)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        category = _CATEGORIES[i % len(_CATEGORIES)]
        record = {
            "ts": start_ms + i * 3,
            "event_id": event_id("bench", f"{seed}/{i}", i),  # distinct per seed: batches never share ids
            "sensor": f"sensor-{i % 4}",
            "source_type": f"bench_{category}",
            "event_category": category,
            "src_ip": f"10.{rng.randrange(40)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "src_port": rng.randrange(1024, 65535),
            "dst_ip": f"203.0.113.{rng.randrange(1, 255)}",
            "dst_port": rng.choice((53, 80, 443, 22, 445)),
            "protocol": "udp" if category == "dns" else "tcp",
            "bytes_out": rng.randrange(100, 100_000),
            "bytes_in": rng.randrange(100, 1_000_000),
            "dns_query": f"h{rng.randrange(5000)}.example.gov.cn" if category == "dns" else "",
            "http_uri": f"/app/{rng.randrange(1000)}?id={i}" if category == "http" else "",
            "user_name": f"u{rng.randrange(300)}" if category == "auth" else "",
            "vendor_rule": str(rng.randrange(100)),
        }
        out.append(normalize(record))
    return out


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory of this process, or of another one (Linux /proc), in MiB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def record_results(section: str, command: str, lines: list[str]) -> None:
    """Replace (or add) this benchmark's section in bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nLatest output of each benchmark.\n"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"<!-- {section}:start -->\n## {section}\n\n`{command.strip()}` — {stamp}\n\n```\n" + "\n".join(lines)
    body += f"\n```\n<!-- {section}:end -->"
    pattern = re.compile(rf"<!-- {section}:start -->.*?<!-- {section}:end -->", re.S)
    text = pattern.sub(body, text) if pattern.search(text) else text.rstrip() + "\n\n" + body + "\n"
    RESULTS.write_text(text)
