"""Passive vulnerability exposure: software seen answering on the network, matched against an offline CVE feed.

1. Inventory (`refresh_inventory`, scheduled SQL): services that answered (connections the responder took
   part in), HTTP `Server` and `X-Powered-By`, SSH server banners, TLS versions, SMB dialects and Zeek's
   software.log, per address and port -> `software_inventory` (AggregatingMergeTree: first/last seen, hits).
2. Feed (`load_feed`): NVD CVE JSON 2.0 files and the CISA KEV catalogue, as the user downloads them
   (plain or .gz). Only vulnerable CPE criteria are kept, with their version ranges.
3. Matching (`exposures`): banners are read into (vendor, product, version) — `Apache/2.4.49 (Unix)
   OpenSSL/1.1.1k` gives apache:http_server 2.4.49 and openssl:openssl 1.1.1k — and compared with the
   criteria: same product (and vendor, unless the banner cannot say), version equal or inside the range.
   Exclusions (accepted risk, false positive) are scoped to an address, asset, org unit (and below) or
   everything, optionally to one CVE, and expire.

Matching is deliberately one-sided: a configuration's platform conditions ("running on") are not checked
(we rarely observe them), so a match means "this version is listed vulnerable", to be confirmed by its owner.
"""

from __future__ import annotations

import gzip
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.enrich.inventory import Inventory
from pipeline.store.base import COLUMNS_BEFORE_ALIASES, Store

EXCLUSION_KINDS = ("accepted_risk", "false_positive")
EXCLUSION_SCOPES = ("ip", "asset", "org_unit", "all")
ANSWERED = ("SF", "S1", "S2", "S3", "RSTO", "RSTR")


class FeedError(ValueError):
    """A feed file cannot be read; the message names the file and the problem."""


# -- 1. inventory ---------------------------------------------------------------------------------------------

_OBSERVATIONS = (  # kind, condition, product expression, address and port columns
    ("service", f"event_category = 'network_connection' AND conn_state IN {ANSWERED!r}",
     "concat(protocol, '/', if(app_protocol = '', toString(dst_port), app_protocol))", "dst_ip", "dst_port"),
    ("http_server", "event_category = 'http' AND extra['server'] != ''", "extra['server']", "dst_ip", "dst_port"),
    ("x_powered_by", "event_category = 'http' AND extra['x_powered_by'] != ''", "extra['x_powered_by']",
     "dst_ip", "dst_port"),
    ("ssh", "event_category = 'ssh' AND extra['server'] != ''", "extra['server']", "dst_ip", "dst_port"),
    ("tls", "event_category = 'tls' AND tls_version != ''", "tls_version", "dst_ip", "dst_port"),
    ("smb", "event_category = 'smb' AND extra['dialect'] != ''", "extra['dialect']", "dst_ip", "dst_port"),
    ("software", "source_type = 'zeek_software' AND software_ip IS NOT NULL",
     "if(extra['unparsed_version'] != '', extra['unparsed_version'], extra['name'])", "assumeNotNull(software_ip)",
     "toUInt16OrZero(extra['host_p'])"),
)


def refresh_inventory(store: Store, after_ms: int, until_ms: int) -> int:
    """Add what the events received in (after, until] (by `ingested_at`, so late events are not missed)
    show to `software_inventory`; returns the observation rows added."""
    before = store.query("SELECT count() FROM software_inventory").scalar()
    selects = [
        f"SELECT {ip} AS ip, {port} AS port, '{kind}' AS kind, {product} AS product, dst_org_unit AS org_unit, "
        f"dst_asset AS asset, dst_criticality AS criticality, min(ts) AS first_seen, max(ts) AS last_seen, "
        f"count() AS hits FROM observed WHERE {condition} GROUP BY ip, port, product, org_unit, asset, criticality"
        for kind, condition, product, ip, port in _OBSERVATIONS]
    store.execute(
        "INSERT INTO software_inventory (ip, port, kind, product, org_unit, asset, criticality, first_seen, "
        "last_seen, hits) WITH observed AS (SELECT *, toIPv6OrNull(http_host) AS software_ip FROM events "
        "WHERE ingested_at > fromUnixTimestamp64Milli({after:Int64}) "
        "AND ingested_at <= fromUnixTimestamp64Milli({until:Int64})) "
        + " UNION ALL ".join(selects), {"after": after_ms, "until": until_ms})
    return int(store.query("SELECT count() FROM software_inventory").scalar()) - int(before)


def inventory(store: Store) -> list[dict[str, Any]]:
    result = store.query(
        "SELECT IPv6NumToString(ip) AS ip, port, kind, product, any(org_unit) AS org_unit, any(asset) AS asset, "
        "max(criticality) AS criticality, toUnixTimestamp64Milli(min(first_seen)) AS first_seen_ms, "
        "toUnixTimestamp64Milli(max(last_seen)) AS last_seen_ms, sum(hits) AS hits FROM software_inventory "
        f"GROUP BY ip, port, kind, product ORDER BY ip, port, kind, product {COLUMNS_BEFORE_ALIASES}")
    rows = result.dicts()
    for row in rows:
        row["ip"] = row["ip"].removeprefix("::ffff:")
    return rows


# -- 2. feed ----------------------------------------------------------------------------------------------

_CPE = re.compile(r"^cpe:2\.3:([aho]):((?:[^:\\]|\\.)*):((?:[^:\\]|\\.)*):((?:[^:\\]|\\.)*):")


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return orjson.loads(data)
    except (OSError, orjson.JSONDecodeError, gzip.BadGzipFile) as exc:
        raise FeedError(f"{path}: {exc}") from None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _cvss(metrics: dict[str, Any]) -> tuple[float, str]:
    for key in ("cvssMetricV40", "cvssMetricV31", "cvssMetricV30", "cvssMetricV2"):
        for metric in metrics.get(key) or ():
            data = metric.get("cvssData", {})
            if "baseScore" in data:
                severity = data.get("baseSeverity") or metric.get("baseSeverity") or ""
                return float(data["baseScore"]), str(severity).lower()
    return 0.0, ""


def _matches(configurations: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []

    def walk(node: dict[str, Any]) -> None:
        for match in node.get("cpeMatch") or ():
            m = _CPE.match(match.get("criteria", ""))
            if not m or not match.get("vulnerable", False):
                continue
            version = _unescape(m.group(4))
            out.append({"vendor": _unescape(m.group(2)), "product": _unescape(m.group(3)),
                        "version": "*" if version in ("*", "-") else version,
                        **{k: match[k] for k in ("versionStartIncluding", "versionStartExcluding",
                                                  "versionEndIncluding", "versionEndExcluding") if match.get(k)}})
        for child in node.get("children") or ():
            walk(child)

    for configuration in configurations or ():
        for node in configuration.get("nodes") or ():
            walk(node)
    return out


def parse_nvd(path: Path) -> list[dict[str, Any]]:
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError(f"{path}: not an NVD CVE JSON 2.0 file (no `vulnerabilities` list)")
    out = []
    for item in doc["vulnerabilities"]:
        cve = item.get("cve") if isinstance(item, dict) else None
        if not isinstance(cve, dict) or not isinstance(cve.get("id"), str):
            raise FeedError(f"{path}: a vulnerability without cve.id")
        matches = _matches(cve.get("configurations") or [])
        if not matches:
            continue  # nothing to match software against (rejected or not yet analysed)
        cvss, severity = _cvss(cve.get("metrics") or {})
        description = next((d.get("value", "") for d in cve.get("descriptions") or () if d.get("lang") == "en"), "")
        out.append({"cve_id": cve["id"], "published": str(cve.get("published", "")), "cvss": cvss,
                    "severity": severity, "description": description[:2000], "matches": matches})
    return out


def parse_kev(path: Path) -> dict[str, str]:
    """CVE id -> date added, from CISA's known_exploited_vulnerabilities.json."""
    doc = _read_json(path)
    items = doc.get("vulnerabilities") if isinstance(doc, dict) else None
    if not isinstance(items, list) or any(not isinstance(i, dict) or "cveID" not in i for i in items):
        raise FeedError(f"{path}: not a CISA KEV catalogue (a `vulnerabilities` list of objects with cveID)")
    return {i["cveID"]: str(i.get("dateAdded", "")) for i in items}


def load_feed(store: Store, nvd_files: Iterable[Path], kev_files: Iterable[Path] = ()) -> dict[str, int]:
    """Store the CVEs of the NVD files with their KEV flag; a KEV file alone updates the flag of stored CVEs."""
    kev: dict[str, str] = {}
    for path in kev_files:
        kev.update(parse_kev(path))
    cves = {c["cve_id"]: c for path in nvd_files for c in parse_nvd(path)}
    if kev:  # re-flag stored CVEs the NVD files did not bring
        stored = store.query(
            "SELECT cve_id, published, cvss, severity, description, matches FROM cve_feed FINAL "
            "WHERE cve_id IN {ids:Array(String)}", {"ids": [k for k in kev if k not in cves]})
        for cve_id, published, cvss, severity, description, matches in stored.rows:
            cves[cve_id] = {"cve_id": cve_id, "published": published, "cvss": cvss, "severity": severity,
                            "description": description, "matches": orjson.loads(matches)}
    rows = sorted(cves.values(), key=lambda c: c["cve_id"])
    if rows:
        now = int(time.time() * 1000)
        store.insert_columns("cve_feed", {
            "cve_id": [c["cve_id"] for c in rows], "published": [c["published"] for c in rows],
            "cvss": [c["cvss"] for c in rows], "severity": [c["severity"] for c in rows],
            "description": [c["description"] for c in rows],
            "products": [sorted({m["product"] for m in c["matches"]}) for c in rows],
            "matches": [orjson.dumps(c["matches"]).decode() for c in rows],
            "kev": [int(c["cve_id"] in kev) for c in rows], "kev_added": [kev.get(c["cve_id"], "") for c in rows],
            "loaded_at": [now] * len(rows)},
            {"cve_id": "str", "published": "str", "cvss": "f64", "severity": "str", "description": "str",
             "products": "strs", "matches": "str", "kev": "u8", "kev_added": "str", "loaded_at": "ts"})
    return {"cves": len(rows), "kev": sum(1 for c in rows if c["cve_id"] in kev)}


# -- 3. matching ------------------------------------------------------------------------------------------

# banner token -> (vendor, product) in CPE terms; vendor None: match the product under any vendor
_PRODUCTS: dict[str, tuple[str | None, str]] = {
    "apache": ("apache", "http_server"), "openssl": ("openssl", "openssl"), "php": ("php", "php"),
    "openssh": ("openbsd", "openssh"), "nginx": (None, "nginx"), "microsoft-iis": ("microsoft",
                                                                                  "internet_information_services"),
    "lighttpd": ("lighttpd", "lighttpd"), "dropbear": (None, "dropbear_ssh"), "tomcat": ("apache", "tomcat"),
    "apache-coyote": ("apache", "tomcat"), "jetty": ("eclipse", "jetty"), "exim": ("exim", "exim"),
    "postfix": ("postfix", "postfix"), "vsftpd": (None, "vsftpd"), "proftpd": ("proftpd", "proftpd"),
    "mod_ssl": ("apache", "http_server"), "samba": ("samba", "samba"), "weblogic": ("oracle", "weblogic_server"),
}
_TOKEN = re.compile(r"([A-Za-z][\w.+-]*?)[/_ ]v?(\d+(?:\.\d+)*[a-z]?\d*(?:p\d+)?)")
_SSH = re.compile(r"^SSH-[\d.]+-(.+)$")


def identify(observed: str) -> list[tuple[str | None, str, str]]:
    """Banner text -> (vendor or None, product, version) of each piece of software it names with a version."""
    text = observed.strip()
    m = _SSH.match(text)
    if m:
        text = m.group(1).replace("_", "/", 1)  # OpenSSH_7.4p1 Debian-10 -> OpenSSH/7.4p1 Debian-10
    found = []
    for token in _TOKEN.finditer(text):
        name, version = token.group(1).lower(), token.group(2)
        vendor, product = _PRODUCTS.get(name, (None, name.replace("-", "_")))
        found.append((vendor, product, version))
    return found


def version_key(version: str) -> tuple[tuple[int, Any], ...]:
    """Comparable version: numbers numerically; rc/beta/alpha/pre before the release, letters after (1.1.1k)."""
    parts: list[tuple[int, Any]] = []
    for token in re.findall(r"\d+|[a-z]+", version.lower()):
        if token.isdigit():
            parts.append((0, int(token)))
        else:
            parts.append((-1 if token in ("alpha", "beta", "rc", "pre", "dev", "a", "b") else 1, token))
    return tuple(parts)


def _compare(a: str, b: str) -> int:
    ka, kb = list(version_key(a)), list(version_key(b))
    width = max(len(ka), len(kb))
    ka += [(0, 0)] * (width - len(ka))
    kb += [(0, 0)] * (width - len(kb))
    return (ka > kb) - (ka < kb)


def version_matches(version: str, match: dict[str, str]) -> bool:
    if match["version"] != "*":
        return _compare(version, match["version"]) == 0
    checks = (("versionStartIncluding", lambda c: c >= 0), ("versionStartExcluding", lambda c: c > 0),
              ("versionEndIncluding", lambda c: c <= 0), ("versionEndExcluding", lambda c: c < 0))
    bounded = [key for key, _ in checks if key in match]
    if not bounded:
        return False  # "every version" criteria are too coarse to report from a banner
    return all(test(_compare(version, match[key])) for key, test in checks if key in match)


@dataclass(frozen=True)
class Exclusion:
    exclusion_id: str
    cve_id: str
    scope: str
    value: str
    kind: str
    reason: str
    owner: str
    expires_at: int

    def covers(self, exposure: dict[str, Any]) -> bool:
        if self.cve_id and self.cve_id != exposure["cve_id"]:
            return False
        if self.scope == "all":
            return True
        if self.scope == "org_unit":
            unit = exposure["org_unit"]
            return unit == self.value or unit.startswith(self.value + "/")
        return exposure.get(self.scope) == self.value


def add_exclusion(store: Store, cve_id: str, scope: str, value: str, kind: str, reason: str, owner: str,
                  expires_at_ms: int) -> Exclusion:
    if scope not in EXCLUSION_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(EXCLUSION_SCOPES)}")
    if kind not in EXCLUSION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EXCLUSION_KINDS)}")
    if (scope == "all") != (value == ""):
        raise ValueError("scope `all` takes no value; the other scopes need one")
    if cve_id and not re.fullmatch(r"CVE-\d{4}-\d{4,}", cve_id):
        raise ValueError(f"not a CVE id: {cve_id!r}")
    if not reason.strip():
        raise ValueError("an exclusion needs a reason")
    now = int(time.time() * 1000)
    if expires_at_ms <= now:
        raise ValueError("expires_at must be in the future")
    exclusion = Exclusion(f"x-{secrets.token_hex(6)}", cve_id, scope, value, kind, reason, owner, expires_at_ms)
    _save_exclusion(store, exclusion, now, revoked=False)
    return exclusion


def _save_exclusion(store: Store, x: Exclusion, created_ms: int, revoked: bool) -> None:
    store.insert_columns("exposure_exclusions", {
        "exclusion_id": [x.exclusion_id], "cve_id": [x.cve_id], "scope": [x.scope], "value": [x.value],
        "kind": [x.kind], "reason": [x.reason], "owner": [x.owner], "created_at": [created_ms],
        "expires_at": [x.expires_at], "revoked": [int(revoked)], "version": [time.time_ns()]},
        {"exclusion_id": "str", "cve_id": "str", "scope": "str", "value": "str", "kind": "str", "reason": "str",
         "owner": "str", "created_at": "ts", "expires_at": "ts", "revoked": "u8", "version": "u64"})


def active_exclusions(store: Store, at_ms: int) -> list[Exclusion]:
    result = store.query(
        "SELECT exclusion_id, cve_id, scope, value, kind, reason, owner, toUnixTimestamp64Milli(expires_at) "
        "FROM exposure_exclusions FINAL WHERE revoked = 0 AND expires_at > fromUnixTimestamp64Milli({at:Int64}) "
        "ORDER BY exclusion_id", {"at": at_ms})
    return [Exclusion(*row) for row in result.rows]


def revoke_exclusion(store: Store, exclusion_id: str, at_ms: int) -> bool:
    for x in active_exclusions(store, at_ms):
        if x.exclusion_id == exclusion_id:
            _save_exclusion(store, x, at_ms, revoked=True)
            return True
    return False


def exposures(store: Store, at_ms: int, inventory_map: Inventory | None = None,
              include_excluded: bool = False) -> list[dict[str, Any]]:
    """Observed software x the feed -> exposures, worst first. The inventory file, when given, names the
    org unit, asset and criticality of each address (it is the authority; events only carry a snapshot)."""
    observed = []
    for row in inventory(store):
        for vendor, product, version in identify(row["product"]):
            observed.append((row, vendor, product, version))
    if not observed:
        return []
    feed = store.query(
        "SELECT cve_id, cvss, severity, kev, matches, description FROM cve_feed FINAL "
        "WHERE hasAny(products, {products:Array(String)}) ORDER BY cve_id",
        {"products": sorted({p for _, _, p, _ in observed})})
    by_product: dict[str, list[tuple[Any, ...]]] = {}
    for cve_id, cvss, severity, kev, matches, description in feed.rows:
        for match in orjson.loads(matches):
            by_product.setdefault(match["product"], []).append((cve_id, cvss, severity, kev, match, description))
    exclusions = active_exclusions(store, at_ms)
    found: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for row, vendor, product, version in observed:
        for cve_id, cvss, severity, kev, match, description in by_product.get(product, ()):
            if vendor is not None and match["vendor"] != vendor:
                continue
            if not version_matches(version, match):
                continue
            block = inventory_map.lookup(row["ip"]) if inventory_map else None
            exposure = {
                "cve_id": cve_id, "cvss": cvss, "severity": severity, "kev": bool(kev), "ip": row["ip"],
                "port": row["port"], "kind": row["kind"], "product": row["product"],
                "matched": f"{match['vendor']}:{match['product']}:{version}",
                "org_unit": block.org_unit if block else row["org_unit"],
                "asset": block.asset if block else row["asset"],
                "criticality": block.criticality if block else row["criticality"],
                "first_seen_ms": row["first_seen_ms"], "last_seen_ms": row["last_seen_ms"],
                "description": description}
            excluded = next((x for x in exclusions if x.covers(exposure)), None)
            if excluded and not include_excluded:
                continue
            exposure["excluded_by"] = excluded.exclusion_id if excluded else ""
            found.setdefault((cve_id, row["ip"], row["port"], row["product"]), exposure)
    return sorted(found.values(), key=lambda e: (not e["kev"], -e["cvss"], -e["criticality"], e["cve_id"], e["ip"],
                                                 e["port"]))
