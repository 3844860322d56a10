"""Ganzhi's native module, `ganzhi_jsonlogs` (Rust, built by `make setup` from sensors/logs/native): whether it
is here, the schema it is handed, its writer and reader of the wire form (pipeline.codec), and the live detection
prefilter's literal search (pipeline.detect.engine).

Everything it does has a twin that gives the same result (the Python parsers and schema; for the literal search,
ClickHouse's Hyperscan query, as far as a literal lies inside one field); it answers None, or names the events,
where it is not certain to agree, and the twin does that work (and writes any error). Without the module, or with
GANZHI_NATIVE=0, the twins do all of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.schema import FIELDS, LOWERCASED, REQUIRED, dumps, loads

try:
    import ganzhi_jsonlogs
except ImportError:  # not built: Python does the work
    ganzhi_jsonlogs = None


def available() -> bool:
    return ganzhi_jsonlogs is not None and os.environ.get("GANZHI_NATIVE", "1") != "0"


def schema_args() -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """pipeline.schema as the native module takes it: (field, kind) pairs, lower-cased and required fields."""
    return [(f.name, f.kind) for f in FIELDS], sorted(LOWERCASED), list(REQUIRED)


def event_dumps() -> Callable[[dict[str, Any]], bytes]:
    """pipeline.schema.dumps, written natively where the module is built (the same bytes)."""
    if not available():
        return dumps
    encode = ganzhi_jsonlogs.encode_event
    return lambda event: encode(event) or dumps(event)


def event_loads() -> Callable[[bytes], dict[str, Any]]:
    """pipeline.schema.loads, read natively where the module is built (the same event, the same errors)."""
    if not available():
        return loads
    decode = ganzhi_jsonlogs.WireDecoder(schema_args()).decode
    return lambda line: decode(line) or loads(line)


LiteralScan = Callable[[list[dict[str, Any]]], tuple[list[int], list[int]]]


def literal_scanner(literals: Sequence[str], keys: Sequence[str]) -> LiteralScan | None:
    """A search of in-memory events' fields `keys` for the prefilter's lower-case literals: (the 1-based numbers
    of those some field holds, the positions of events it could not search, for ClickHouse to); None without
    the module."""
    if not available() or not literals:
        return None
    return ganzhi_jsonlogs.LiteralScanner(list(literals), list(keys)).scan
