"""The audit log: every state-changing and every data-exporting call, in an append-only hash chain.

Record n carries sha256(hash of record n-1 + canonical JSON of record n). Editing a record breaks its own
hash; deleting one leaves a gap in `seq` and breaks the next record's `prev_hash`; rewriting the whole
chain from some point on changes the head hash, which is why `verify` reports the head (seq, hash) and
accepts a previously noted head to check against (truncating the tail is only visible that way).

One process appends (the API server, or a CLI command): the head is re-read before each append under a
lock, so several API processes on one database would race — run one API process per database (uvicorn
workers=1; scale reads with replicas that point at their own audit database, or front it with one writer).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.store.base import Store

GENESIS = "0" * 64
_KINDS = {"seq": "u64", "ts": "ts", "actor": "str", "role": "str", "action": "str", "target": "str",
          "source": "str", "result": "str", "detail": "str", "prev_hash": "str", "hash": "str"}
_SELECT = ("seq, toUnixTimestamp64Milli(ts) AS ts, actor, role, action, target, source, result, detail, prev_hash, "
           "hash")
PAGE = 10_000


def record_hash(prev_hash: str, record: dict[str, Any]) -> str:
    body = [record["seq"], record["ts"], record["actor"], record["role"], record["action"], record["target"],
            record["source"], record["result"], record["detail"]]
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(body)).hexdigest()


class AuditLog:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()

    def append(self, actor: str, role: str, action: str, target: str, source: str, result: str,
               detail: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            head = self.store.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").rows
            seq, prev = (head[0][0] + 1, head[0][1]) if head else (1, GENESIS)
            record = {"seq": seq, "ts": time.time_ns() // 1_000_000, "actor": actor, "role": role,
                      "action": action, "target": target[:1000], "source": source, "result": result,
                      "detail": orjson.dumps(detail or {}, option=orjson.OPT_SORT_KEYS).decode()[:10_000]}
            record["prev_hash"] = prev
            record["hash"] = record_hash(prev, record)
            self.store.insert_columns("audit_log", {k: [record[k]] for k in _KINDS}, _KINDS,
                                      dedup_token=f"audit-{seq}-{record['hash'][:16]}")
            return record


def records(store: Store, since_seq: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Audit records in order, read page by page."""
    after, left = since_seq, limit
    while left is None or left > 0:
        page = min(PAGE, left) if left is not None else PAGE
        rows = store.query(f"SELECT {_SELECT} FROM audit_log WHERE seq > {{after:UInt64}} ORDER BY seq "
                           "LIMIT {n:UInt32}", {"after": after, "n": page}).dicts()
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1]["seq"]
        if left is not None:
            left -= len(rows)


@dataclass
class Verification:
    records: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store, expect_head: tuple[int, str] | None = None, max_problems: int = 100) -> Verification:
    """Recompute the chain. `expect_head` = a (seq, hash) noted earlier: that record must still be there, unchanged."""
    out = Verification()
    expected_seq, prev = 1, GENESIS
    anchor_seen = False
    for rec in records(store):
        out.records += 1
        seq = rec["seq"]
        if seq < expected_seq:
            out.problems.append(f"record {seq} appears more than once (a copy was inserted)")
        elif seq > expected_seq:
            missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
            out.problems.append(f"record {missing} missing (deleted)")
        if rec["prev_hash"] != prev:
            out.problems.append(f"record {seq} does not follow its predecessor (chain broken before it)")
        if record_hash(rec["prev_hash"], rec) != rec["hash"]:
            out.problems.append(f"record {seq} was altered (its hash does not match its content)")
        if expect_head is not None and seq == expect_head[0]:
            anchor_seen = True
            if rec["hash"] != expect_head[1]:
                out.problems.append(f"record {seq} differs from the head noted earlier (the chain was rewritten)")
        expected_seq, prev = max(expected_seq, seq + 1), rec["hash"]
        out.head_seq, out.head_hash = seq, rec["hash"]
        if len(out.problems) >= max_problems:
            out.problems.append("... stopped after too many problems")
            break
    if expect_head is not None and not anchor_seen and len(out.problems) < max_problems:
        out.problems.append(f"record {expect_head[0]} noted earlier is gone (the log was truncated)")
    return out
