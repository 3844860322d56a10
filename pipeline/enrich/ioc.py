"""Threat-intelligence indicators: load CSV, STIX 2.1 bundles and MISP JSON exports; match events.

Kinds and how an event hits them:
- ip (addresses and CIDRs, IPv4/IPv6): `src_ip` or `dst_ip`, most specific block wins;
- domain: `dns_query`, `http_host`, `tls_sni`, the name itself or any subdomain of it;
- url: `http_host` + `http_uri`, compared without scheme, default port and fragment; an indicator
  without a query string also hits the same path with any query;
- hash (md5, sha1, sha256, sha512 hex): `file_hash`.

Every lookup is a dict or binary-search probe, so a million indicators cost about what ten do.
CSV columns: `type,value[,id,source,confidence]` with a header row; type is one of ip, cidr, domain,
url, md5, sha1, sha256, sha512 (MISP names such as ip-dst, hostname also work).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from pipeline.enrich.iptable import PrefixTable, parse_network

KINDS = ("ip", "domain", "url", "hash")
_TYPE_KIND = {
    "ip": "ip", "ipv4": "ip", "ipv6": "ip", "cidr": "ip", "ip-src": "ip", "ip-dst": "ip", "ipv4-addr": "ip",
    "ipv6-addr": "ip", "ip-src|port": "ip", "ip-dst|port": "ip",
    "domain": "domain", "hostname": "domain", "fqdn": "domain", "domain-name": "domain",
    "url": "url", "uri": "url", "link": "url",
    "hash": "hash", "md5": "hash", "sha1": "hash", "sha256": "hash", "sha512": "hash",
    "filename|md5": "hash", "filename|sha1": "hash", "filename|sha256": "hash", "filename|sha512": "hash",
}
_HEX = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f]{40}$|^[0-9a-f]{64}$|^[0-9a-f]{128}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_MISP_CONFIDENCE = {"1": 90, "2": 70, "3": 40, "4": 50}  # threat_level_id: high, medium, low, undefined


class IocError(ValueError):
    """An indicator file cannot be used; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class Indicator:
    id: str
    kind: str
    value: str
    source: str
    confidence: int = 50


@dataclass
class LoadReport:
    loaded: Counter[str] = field(default_factory=Counter)   # kind -> indicators
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count

    def merge(self, other: LoadReport) -> None:
        self.loaded.update(other.loaded)
        self.skipped.update(other.skipped)


def normalize_value(kind: str, value: str) -> str:
    """The form an indicator is indexed under; raises ValueError when the value is not of its kind."""
    value = value.strip()
    if kind == "ip":
        parse_network(value)
        return value
    if kind == "domain":
        name = value.lower().rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        if not _DOMAIN.match(name):
            raise ValueError(f"not a domain name: {value!r}")
        return name
    if kind == "url":
        return url_key(value if "://" in value else "http://" + value)
    if kind == "hash":
        digest = value.lower()
        if not _HEX.match(digest):
            raise ValueError(f"not an md5/sha1/sha256/sha512 hex digest: {value!r}")
        return digest
    raise ValueError(f"unknown indicator kind {kind!r}")


def url_key(url: str) -> str:
    """'HTTP://Evil.example:80/a?b#c' -> 'evil.example/a?b' (host lower-case, default port dropped)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"URL without a host: {url!r}")
    port = parts.port
    netloc = host if port is None or str(port) == _DEFAULT_PORTS.get(parts.scheme.lower()) else f"{host}:{port}"
    return netloc + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class IocIndex:
    """All loaded indicators, indexed per kind."""

    def __init__(self, indicators: list[Indicator]):
        ips: list[tuple[str, Indicator]] = []
        self._domains: dict[str, Indicator] = {}
        self._urls: dict[str, Indicator] = {}
        self._hashes: dict[str, Indicator] = {}
        by_kind = {"domain": self._domains, "url": self._urls, "hash": self._hashes}
        for ind in indicators:
            if ind.kind == "ip":
                ips.append((ind.value, ind))
            else:
                by_kind[ind.kind][ind.value] = ind
        self._ips: PrefixTable[Indicator] = PrefixTable(ips)
        self.count = len(indicators)

    def __len__(self) -> int:
        return self.count

    def ip(self, address: str) -> Indicator | None:
        return self._ips.lookup(address)

    def domain(self, name: str) -> Indicator | None:
        """The indicator for name or the closest parent domain of it."""
        name = name.lower().rstrip(".")
        domains = self._domains
        while True:
            found = domains.get(name)
            if found is not None:
                return found
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1:]

    def url(self, host: str, uri: str) -> Indicator | None:
        host = host.lower().rstrip(".")
        if host.endswith(":80"):
            host = host[:-3]
        key = host + (uri if uri.startswith("/") else "/" + uri)
        found = self._urls.get(key)
        if found is None and "?" in key:
            found = self._urls.get(key.split("?", 1)[0])
        return found

    def hash(self, digest: str) -> Indicator | None:
        return self._hashes.get(digest.lower())

    def match(self, event: dict[str, Any]) -> list[Indicator]:
        """Every indicator the event hits (one per field at most)."""
        hits: list[Indicator] = []
        if self._ips.prefixes:
            for name in ("src_ip", "dst_ip"):
                address = event.get(name)
                if address and (found := self.ip(address)) is not None:
                    hits.append(found)
        if self._domains:
            for name in ("dns_query", "http_host", "tls_sni"):
                text = event.get(name)
                if text and (found := self.domain(text.split(":", 1)[0] if name == "http_host" else text)):
                    hits.append(found)
        if self._urls and (host := event.get("http_host")) and (found := self.url(host, event.get("http_uri", "/"))):
            hits.append(found)
        if self._hashes and (digest := event.get("file_hash")) and (found := self.hash(digest)):
            hits.append(found)
        return hits


# -- loaders ----------------------------------------------------------------------------------


def _indicator_id(source: str, kind: str, value: str) -> str:
    return "ioc-" + hashlib.blake2b(f"{source}\x1f{kind}\x1f{value}".encode(), digest_size=8).hexdigest()


class _Collector:
    def __init__(self, default_source: str):
        self.default_source = default_source
        self.indicators: list[Indicator] = []
        self.report = LoadReport()

    def add(self, type_name: str, value: str, ident: str = "", source: str = "", confidence: Any = None) -> None:
        kind = _TYPE_KIND.get(type_name.strip().lower())
        if kind is None:
            self.report.skipped[f"unsupported type {type_name.strip().lower()!r}"] += 1
            return
        if "|" in type_name:  # MISP composites: ip-dst|port -> ip, filename|sha256 -> sha256
            left, _, right = value.partition("|")
            value = left if type_name.lower().startswith("ip") else right
        try:
            value = normalize_value(kind, value)
        except ValueError:
            self.report.skipped[f"invalid {kind} value"] += 1
            return
        try:
            conf = max(0, min(100, int(confidence))) if confidence not in (None, "") else 50
        except (TypeError, ValueError):
            conf = 50
        source = source or self.default_source
        self.indicators.append(Indicator(ident or _indicator_id(source, kind, value), kind, value, source, conf))
        self.report.loaded[kind] += 1


def load_csv(path: Path) -> tuple[list[Indicator], LoadReport]:
    out = _Collector(path.stem)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.DictReader(fh)
        if rows.fieldnames is None or not {"type", "value"} <= set(rows.fieldnames):
            raise IocError(f"{path}: the first row must be a header with at least 'type' and 'value'")
        for row in rows:
            out.add(row.get("type") or "", row.get("value") or "", row.get("id") or "", row.get("source") or "",
                    row.get("confidence"))
    return out.indicators, out.report


# one comparison of a STIX pattern: object:property (=|ISSUBSET) 'value'
_STIX_CMP = re.compile(
    r"(?P<obj>[a-z0-9-]+):(?P<prop>value|hashes\.(?:'[^']+'|[A-Za-z0-9-]+))\s*(?P<op>=|ISSUBSET)\s*"
    r"'(?P<val>(?:[^'\\]|\\.)*)'")
_STIX_OBJECT_KIND = {"ipv4-addr": "ip", "ipv6-addr": "ip", "domain-name": "domain", "url": "url", "file": "hash"}


def _stix_comparisons(pattern: str) -> list[tuple[str, str]] | None:
    """(kind, value) of a pattern made only of OR-ed equality/subset comparisons; None if it is more."""
    rest = _STIX_CMP.sub("", pattern)
    if re.sub(r"[\s\[\]()]|\bOR\b", "", rest):  # AND, FOLLOWEDBY, LIKE, qualifiers ...: not one field
        return None
    out = []
    for m in _STIX_CMP.finditer(pattern):
        kind = _STIX_OBJECT_KIND.get(m["obj"])
        if kind is None or (kind == "hash") != m["prop"].startswith("hashes"):
            return None
        out.append((kind, m["val"].replace("\\'", "'").replace("\\\\", "\\")))
    return out or None


def _stix_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def load_stix(path: Path, now: datetime | None = None, doc: Any = None) -> tuple[list[Indicator], LoadReport]:
    """STIX 2.1 bundle: `indicator` objects with STIX patterns; revoked and expired ones are skipped."""
    doc = _read_json(path) if doc is None else doc
    objects = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(objects, list):
        raise IocError(f"{path}: not a STIX 2.1 bundle (expected an object with an 'objects' list)")
    now = now or datetime.now(UTC)
    names = {o.get("id"): o.get("name") for o in objects if isinstance(o, dict) and o.get("type") == "identity"}
    out = _Collector(path.stem)
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "indicator":
            continue
        if obj.get("revoked"):
            out.report.skipped["revoked"] += 1
            continue
        until = _stix_time(obj.get("valid_until", "")) if obj.get("valid_until") else None
        if until is not None and until < now:
            out.report.skipped["expired (valid_until passed)"] += 1
            continue
        if obj.get("pattern_type", "stix") != "stix":
            out.report.skipped[f"pattern type {obj.get('pattern_type')!r}"] += 1
            continue
        comparisons = _stix_comparisons(str(obj.get("pattern", "")))
        if comparisons is None:
            out.report.skipped["pattern is not a plain OR of value comparisons"] += 1
            continue
        source = str(names.get(obj.get("created_by_ref")) or path.stem)
        for i, (kind, value) in enumerate(comparisons):
            ident = str(obj.get("id", "")) + (f"#{i}" if len(comparisons) > 1 else "")
            out.add(kind, value, ident, source, obj.get("confidence"))
    return out.indicators, out.report


def load_misp(path: Path, doc: Any = None) -> tuple[list[Indicator], LoadReport]:
    """MISP JSON export: one event, a list of events or a REST `response`; attributes with to_ids only."""
    doc = _read_json(path) if doc is None else doc
    if isinstance(doc, dict) and "response" in doc:
        doc = doc["response"]
    events = doc if isinstance(doc, list) else [doc]
    out = _Collector(path.stem)
    found_event = False
    for wrapper in events:
        event = wrapper.get("Event", wrapper) if isinstance(wrapper, dict) else None
        if not isinstance(event, dict) or ("Attribute" not in event and "Object" not in event):
            continue
        found_event = True
        org = event.get("Orgc") or event.get("Org") or {}
        source = f"misp:{org.get('name')}" if isinstance(org, dict) and org.get("name") else "misp:" + path.stem
        confidence = _MISP_CONFIDENCE.get(str(event.get("threat_level_id", "4")), 50)
        attributes = list(event.get("Attribute") or [])
        for obj in event.get("Object") or []:
            attributes.extend(obj.get("Attribute") or [] if isinstance(obj, dict) else [])
        for attr in attributes:
            if not isinstance(attr, dict):
                continue
            if attr.get("to_ids") in (False, 0, "0") or attr.get("deleted") in (True, 1, "1"):
                out.report.skipped["not for detection (to_ids false) or deleted"] += 1
                continue
            out.add(str(attr.get("type", "")), str(attr.get("value", "")), str(attr.get("uuid") or ""), source,
                    confidence)
    if not found_event:
        raise IocError(f"{path}: not a MISP export (expected 'Event' objects with 'Attribute' lists)")
    return out.indicators, out.report


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise IocError(f"{path}: cannot read JSON: {exc}") from None


def load_file(path: Path) -> tuple[list[Indicator], LoadReport]:
    """Pick the loader by content: .csv, a STIX bundle, or a MISP export."""
    if path.suffix.lower() in (".csv", ".txt"):
        try:
            return load_csv(path)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise IocError(f"{path}: cannot read CSV: {exc}") from None
    doc = _read_json(path)
    if isinstance(doc, dict) and doc.get("type") == "bundle":
        return load_stix(path, doc=doc)
    return load_misp(path, doc=doc)


def load_paths(paths: list[Path]) -> tuple[IocIndex, LoadReport]:
    """Every indicator file named (directories: their .csv/.json files, sorted) as one index."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".json"))
                     if path.is_dir() else [path])
    indicators: list[Indicator] = []
    report = LoadReport()
    for path in files:
        got, part = load_file(path)
        indicators.extend(got)
        report.merge(part)
    return IocIndex(indicators), report
