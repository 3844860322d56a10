"""The normalized event schema — defined once, here.

Every producer (sensors, `ganzhi ingest`), the ClickHouse DDL, the wire codec, the Sigma field
mapping and the API read the field list below; nothing else declares event columns.

Conventions
- Names are flat and ECS-like (`src_ip`, `dns_query`, `http_uri`, `process_command_line`).
- `ts` is UTC with millisecond precision; in Python an event holds it as epoch milliseconds (int).
- IP addresses live in one `IPv6` column per side: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one
  column serves both families, CIDR tests are numeric range checks, and `WHERE src_ip = '10.0.0.1'` still
  works because ClickHouse parses IPv4 text into the mapped form. No address is stored as `::`.
- Source fields without a column go to `extra` (Map(String, String)); nothing is dropped.
- `raw` keeps the original record.
- Each field carries a sensitivity level (数据分级分类) used to mask values by the caller's clearance.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from functools import lru_cache
from typing import Any

import orjson

SCHEMA_VERSION = 1


class Sensitivity(IntEnum):
    """Data classification levels (数据分级): a caller sees fields up to its clearance."""

    PUBLIC = 1  # 公开
    INTERNAL = 2  # 内部
    SENSITIVE = 3  # 敏感: personal data, credentials-adjacent content
    SECRET = 4  # 机密: never shown below admin/auditor clearance


# Value kinds: how a field is validated in Python and which ClickHouse type it gets.
_CH_TYPES = {
    "ts": "DateTime64(3, 'UTC')",
    "str": "String",
    "lcstr": "LowCardinality(String)",
    "ip": "IPv6",
    "u8": "UInt8",
    "u16": "UInt16",
    "u32": "UInt32",
    "u64": "UInt64",
    "f64": "Float64",
    "strs": "Array(String)",
    "map": "Map(String, String)",
}
_INT_LIMITS = {"u8": 2**8 - 1, "u16": 2**16 - 1, "u32": 2**32 - 1, "u64": 2**64 - 1}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    doc: str
    sensitivity: Sensitivity = Sensitivity.INTERNAL
    required: bool = False

    @property
    def ch_type(self) -> str:
        return _CH_TYPES[self.kind]

    @property
    def default(self) -> Any:
        """The empty value. Collections are immutable (tuple), so defaults can be shared safely."""
        if self.kind in _INT_LIMITS:
            return 0
        return {"f64": 0.0, "strs": (), "map": {}, "ip": "", "ts": 0}.get(self.kind, "")


PUB, INT, SEN = Sensitivity.PUBLIC, Sensitivity.INTERNAL, Sensitivity.SENSITIVE


def _org_fields(side: str) -> tuple[Field, ...]:
    """Enrichment columns filled by the pipeline for one side (src or dst) of an event."""
    return (
        Field(f"{side}_org_unit", "lcstr", "org unit path department/street/committee (部门/街道/居委会)", PUB),
        Field(f"{side}_asset", "str", "asset name from the inventory", INT),
        Field(f"{side}_zone", "lcstr", "zone: internal, dmz, external, backbone", PUB),
        Field(f"{side}_criticality", "u8", "asset criticality 1-5, 0 = unknown", PUB),
        Field(f"{side}_country", "lcstr", "ISO country code for external addresses (offline geo database)", PUB),
        Field(f"{side}_asn", "u32", "autonomous system number for external addresses", PUB),
    )


FIELDS: tuple[Field, ...] = (
    # identity and provenance
    Field("ts", "ts", "event time, UTC, millisecond precision", PUB, required=True),
    Field("event_id", "str", "deterministic id: hash of source + raw record + position", PUB, required=True),
    Field("sensor", "lcstr", "the sensor instance that produced the event", PUB, required=True),
    Field("source_type", "lcstr", "input format, e.g. zeek_conn, suricata_eve, sshd, pcap_flow", PUB, required=True),
    Field("event_category", "lcstr",
          "network_connection, dns, http, tls, ssh, auth, process, file, firewall, syslog, ...", PUB, required=True),
    Field("action", "lcstr", "what happened: allowed, denied, success, failure, query, request, ...", PUB),
    Field("severity", "lcstr", "source severity normalized to syslog names (debug ... emergency)", PUB),
    Field("message", "str", "human-readable summary or the log message", INT),
    # network
    Field("src_ip", "ip", "source / originator address", INT),
    Field("src_port", "u16", "source port", PUB),
    Field("dst_ip", "ip", "destination / responder address", INT),
    Field("dst_port", "u16", "destination port", PUB),
    Field("protocol", "lcstr", "transport: tcp, udp, icmp, icmp6, ...", PUB),
    Field("app_protocol", "lcstr", "application protocol: dns, http, tls, ssh, smb, ...", PUB),
    Field("bytes_out", "u64", "bytes sent by the originator", PUB),
    Field("bytes_in", "u64", "bytes sent by the responder", PUB),
    Field("packets_out", "u64", "packets sent by the originator", PUB),
    Field("packets_in", "u64", "packets sent by the responder", PUB),
    Field("duration", "f64", "connection duration in seconds", PUB),
    Field("conn_state", "lcstr", "connection state in Zeek's conn_state vocabulary (S0, SF, REJ, ...)", PUB),
    # dns
    Field("dns_query", "str", "queried name", INT),
    Field("dns_qtype", "lcstr", "query type name (A, AAAA, TXT, ...)", PUB),
    Field("dns_rcode", "lcstr", "response code name (NOERROR, NXDOMAIN, ...)", PUB),
    Field("dns_answers", "strs", "answer records", INT),
    # http
    Field("http_method", "lcstr", "request method", PUB),
    Field("http_host", "str", "Host header", INT),
    Field("http_uri", "str", "request URI (path and query)", SEN),
    Field("http_status", "u16", "response status code", PUB),
    Field("http_user_agent", "str", "User-Agent header", INT),
    Field("http_referrer", "str", "Referer header", SEN),
    # tls
    Field("tls_sni", "str", "server name indication", INT),
    Field("tls_version", "lcstr", "negotiated or offered version", PUB),
    Field("tls_cipher", "lcstr", "negotiated cipher suite", PUB),
    Field("tls_ja3", "str", "JA3 client fingerprint", PUB),
    Field("tls_ja4", "str", "JA4 client fingerprint", PUB),
    # host, user, process, file
    Field("user_name", "str", "account name", SEN),
    Field("host_name", "str", "host that logged the event", INT),
    Field("process_image", "str", "process executable path", INT),
    Field("process_command_line", "str", "process command line", SEN),
    Field("process_parent_image", "str", "parent process executable path", INT),
    Field("process_parent_command_line", "str", "parent process command line", SEN),
    Field("file_path", "str", "file path", INT),
    Field("file_hash", "str", "file hash (md5, sha1 or sha256, lower-case hex)", INT),
    # enrichment (pipeline)
    *_org_fields("src"),
    *_org_fields("dst"),
    Field("ioc_ids", "strs", "ids of threat-intelligence indicators the event hit", INT),
    Field("ioc_sources", "strs", "feeds of those indicators", INT),
    Field("ioc_confidence", "u8", "highest indicator confidence 0-100", INT),
    # everything else
    Field("extra", "map", "source fields without a column of their own", SEN),
    Field("raw", "str", "the original record", SEN),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
# Set by the writer, not by producers: when the store received the row (retention is counted from it).
INGESTED_AT = "ingested_at"


class SchemaError(ValueError):
    """A record that does not fit the schema; `field` names the culprit (or '' for the whole record)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def event_id(source: str, raw: str | bytes, position: str | int) -> str:
    """Deterministic 128-bit id: the same record from the same place always gets the same id."""
    h = hashlib.blake2b(digest_size=16)
    h.update(source.encode())
    h.update(b"\x1f")
    h.update(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape"))
    h.update(b"\x1f")
    h.update(str(position).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# validation: JSON-ish dict -> canonical event dict (every field present, canonical types)


def parse_ts(value: Any) -> int:
    """Event time to epoch milliseconds. Accepts ISO 8601 text (naive = UTC) and epoch s/ms/µs/ns numbers."""
    if isinstance(value, bool):
        raise SchemaError("ts", "boolean is not a timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise SchemaError("ts", f"not a valid epoch time: {value!r}")
        # scale by magnitude: seconds until year ~5138, then ms, µs, ns
        for limit, factor in ((1e11, 1000.0), (1e14, 1.0), (1e17, 1e-3), (1e20, 1e-6)):
            if value < limit:
                return round(value * factor)
        raise SchemaError("ts", f"epoch value out of range: {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise SchemaError("ts", "empty timestamp")
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_ts(float(text))
            except ValueError:
                raise SchemaError("ts", f"not ISO 8601 or epoch: {value[:64]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return round(dt.timestamp() * 1000)
    raise SchemaError("ts", f"unsupported type {type(value).__name__}")


def format_ts(ms: int) -> str:
    """Epoch milliseconds to ISO 8601 UTC with millisecond precision: 2024-05-01T08:00:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return f"{_second_text(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=8192)
def _second_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}")


def _ip(name: str, value: Any) -> str:
    if value is None or value == "" or value == "-":
        return ""
    if isinstance(value, str) and _IPV4_RE.fullmatch(value):  # fast path: canonical dotted quad
        return value
    if not isinstance(value, str):
        raise SchemaError(name, f"expected an IP address string, got {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        raise SchemaError(name, f"not an IP address: {value[:64]!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def _int(name: str, kind: str, value: Any) -> int:
    if value is None or value == "" or value == "-":
        return 0
    if isinstance(value, bool):
        raise SchemaError(name, "expected a number, got a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise SchemaError(name, f"expected an integer, got {value!r}")
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise SchemaError(name, f"expected an integer, got {value[:64]!r}") from None
    elif not isinstance(value, int):
        raise SchemaError(name, f"expected an integer, got {type(value).__name__}")
    if not 0 <= value <= _INT_LIMITS[kind]:
        raise SchemaError(name, f"{value} out of range for {_CH_TYPES[kind]}")
    return value


def _float(name: str, value: Any) -> float:
    if value is None or value == "" or value == "-":
        return 0.0
    if isinstance(value, bool):
        raise SchemaError(name, "expected a number, got a boolean")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SchemaError(name, f"expected a number, got {str(value)[:64]!r}") from None
    if not math.isfinite(out):
        raise SchemaError(name, f"not a finite number: {value!r}")
    return out


def _text(value: Any) -> str:
    """Any JSON value as text: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def _str(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise SchemaError(name, f"expected text, got {type(value).__name__}")


def _strs(name: str, value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    raise SchemaError(name, f"expected a list of strings, got {type(value).__name__}")


def _map(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SchemaError(name, f"expected an object, got {type(value).__name__}")
    if all(type(v) is str for v in value.values()) and all(type(k) is str for k in value):
        return dict(value)  # parsers hand over text already: copy without converting each value
    return {str(k): _text(v) for k, v in value.items()}


# Rule log-source filters compare these exactly (and they lead the sort key), so they are kept lower-case.
LOWERCASED = frozenset({"source_type", "event_category"})


def _validator(field: Field) -> Any:
    kind, name = field.kind, field.name
    if kind == "ts":
        return parse_ts
    if kind == "ip":
        return lambda v: _ip(name, v)
    if kind in _INT_LIMITS:
        return lambda v: v if type(v) is int and 0 <= v <= _INT_LIMITS[kind] else _int(name, kind, v)
    if kind == "f64":
        return lambda v: _float(name, v)
    if kind == "strs":
        return lambda v: _strs(name, v)
    if name in LOWERCASED:
        return lambda v: (v if type(v) is str else _str(name, v)).lower()
    return lambda v: v if type(v) is str else _str(name, v)


_VALIDATORS = {f.name: _validator(f) for f in FIELDS if f.kind != "map"}
_REQUIRED_SET = frozenset(REQUIRED)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}


def fits(name: str, given: Any) -> bool:
    """Whether `given` is a valid value for schema field `name` (what `normalize` would accept)."""
    try:
        _VALIDATORS[name](given)
    except SchemaError:
        return False
    return True


def value(event: dict[str, Any], name: str) -> Any:
    """A field of a canonical (sparse) event, or the field's default when absent."""
    return event.get(name, DEFAULTS[name])


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """Validate and coerce one record into a canonical event.

    A canonical event is sparse: it holds the schema fields the record gave a non-default value, each
    in its canonical type; an absent field means that field's default (read it with `value(event, name)`).
    Keys that are not schema fields are kept in `extra` (values as text). Raises SchemaError.
    """
    if not isinstance(record, dict):
        raise SchemaError("", f"an event must be a JSON object, got {type(record).__name__}")
    for name in REQUIRED:
        if record.get(name) in (None, ""):
            raise SchemaError(name, "required field is missing or empty")
    out: dict[str, Any] = {}
    extra = _map("extra", record.get("extra"))
    validators = _VALIDATORS
    for key, given in record.items():
        check = validators.get(key)
        if check is not None:
            checked = check(given)
            if checked or key in _REQUIRED_SET:  # every default is falsy: leaving it out keeps one canonical form
                out[key] = checked
        elif key not in FIELD_BY_NAME and key not in ("schema_version", INGESTED_AT):
            extra[key] = _text(given)
    if extra:
        out["extra"] = extra
    if len(out["event_id"]) > 128:
        raise SchemaError("event_id", "longer than 128 characters")
    return out


def to_json_dict(event: dict[str, Any]) -> dict[str, Any]:
    """Canonical event to its JSON form: ISO time; empty and zero fields left out (they are the defaults)."""
    out = {k: v for k, v in event.items() if v}
    out["ts"] = format_ts(event["ts"])
    return out


def dumps(event: dict[str, Any]) -> bytes:
    return orjson.dumps(to_json_dict(event))


def loads(data: bytes | str) -> dict[str, Any]:
    """Parse and validate one JSON event. Raises SchemaError for invalid JSON or fields."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError("", f"invalid JSON: {exc}") from None
    return normalize(record)


def masked(event: dict[str, Any], clearance: Sensitivity, mask: str = "***") -> dict[str, Any]:
    """A copy of a JSON-form event with every field above `clearance` replaced by `mask`."""
    return {
        k: (mask if (f := FIELD_BY_NAME.get(k)) is not None and f.sensitivity > clearance and v else v)
        for k, v in event.items()
    }
