"""Sigma taxonomy -> Ganzhi schema: the one field-mapping table, used by rules and parsers alike.

A parser that reads a Windows event puts `CommandLine` into the `process_command_line` column; a Sigma rule
that tests `CommandLine` is rewritten to test `process_command_line`. Both read `FIELD_MAPS` below, so a
rule and the events it is meant for can never disagree on where a field lives. A source field without an
entry stays under its own name in `extra`, and rules read it there.

Log sources: each rule is evaluated only on events of its log source. Producers set `source_type` (the
input format: `windows`, `zeek_dns`, `sshd`, `nginx_access`, ...) and `event_category` (for Windows the
Sigma category derived from channel and event id, elsewhere a Ganzhi category: dns, http, tls, auth, ...);
`logsource_filter` turns a rule's product/category/service into an exact SQL filter over those columns.
"""

from __future__ import annotations

from sigma.pipelines.common import windows_logsource_mapping
from sigma.processing.conditions import LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation
from sigma.rule import SigmaLogSource

from pipeline.detect.backend import sql_string

# -- field names per taxonomy ------------------------------------------------------------------------

# Windows event data (Sysmon names; Security 4688 names normalized onto them) and the System block.
WINDOWS_FIELDS: dict[str, str] = {
    "Image": "process_image",
    "NewProcessName": "process_image",  # Security 4688
    "CommandLine": "process_command_line",
    "ParentImage": "process_parent_image",
    "ParentProcessName": "process_parent_image",  # Security 4688
    "ParentCommandLine": "process_parent_command_line",
    "User": "user_name",
    "TargetUserName": "user_name",  # Security logon events: the account logging on
    "Computer": "host_name",
    "TargetFilename": "file_path",
    "Hashes": "file_hash",
    "SourceIp": "src_ip",
    "IpAddress": "src_ip",  # Security logon events: the client address
    "SourcePort": "src_port",
    "IpPort": "src_port",
    "DestinationIp": "dst_ip",
    "DestinationPort": "dst_port",
    "QueryName": "dns_query",
}

# Zeek log fields (all logs), then per log where a name means something else in another log.
ZEEK_FIELDS: dict[str, str] = {
    "id.orig_h": "src_ip",
    "id.orig_p": "src_port",
    "id.resp_h": "dst_ip",
    "id.resp_p": "dst_port",
    "proto": "protocol",
    "service": "app_protocol",
    "duration": "duration",
    "orig_bytes": "bytes_out",
    "resp_bytes": "bytes_in",
    "orig_pkts": "packets_out",
    "resp_pkts": "packets_in",
    "conn_state": "conn_state",
    "query": "dns_query",
    "qtype_name": "dns_qtype",
    "rcode_name": "dns_rcode",
    "answers": "dns_answers",
    "method": "http_method",
    "host": "http_host",
    "uri": "http_uri",
    "status_code": "http_status",
    "user_agent": "http_user_agent",
    "referrer": "http_referrer",
    "server_name": "tls_sni",
    "cipher": "tls_cipher",
    "ja3": "tls_ja3",
    "ja4": "tls_ja4",
}
ZEEK_LOG_FIELDS: dict[str, dict[str, str]] = {
    "ssl": {"version": "tls_version"},
    "kerberos": {"client": "user_name"},
    "ntlm": {"username": "user_name", "hostname": "host_name"},
    "rdp": {"cookie": "user_name"},
    "smtp": {"user_agent": "http_user_agent"},
}

# Web proxy and web server logs (W3C extended names, as Sigma's proxy/webserver taxonomy uses them).
# `cs-uri-stem`/`cs-uri-query` stay in extra (parsers fill them): an endswith on the path must not see
# the query string.
WEB_FIELDS: dict[str, str] = {
    "c-ip": "src_ip",
    "s-ip": "dst_ip",
    "c-uri": "http_uri",
    "cs-uri": "http_uri",
    "cs-host": "http_host",
    "cs-method": "http_method",
    "sc-status": "http_status",
    "c-useragent": "http_user_agent",
    "cs-user-agent": "http_user_agent",
    "cs-referrer": "http_referrer",
    "cs-referer": "http_referrer",
    "cs-username": "user_name",
    "r-dns": "http_host",
}

# Sigma's generic dns category.
DNS_FIELDS: dict[str, str] = {"query": "dns_query", "answer": "dns_answers", "record_type": "dns_qtype"}

# Linux/macOS process and file events use the Windows process names.
PROCESS_FIELDS: dict[str, str] = {k: WINDOWS_FIELDS[k] for k in (
    "Image", "CommandLine", "ParentImage", "ParentCommandLine", "User", "TargetFilename",
    "DestinationIp", "DestinationPort", "SourceIp", "SourcePort")}

FIELD_MAPS: dict[str, dict[str, str]] = {
    "windows": WINDOWS_FIELDS,
    "zeek": ZEEK_FIELDS,
    "web": WEB_FIELDS,
    "dns": DNS_FIELDS,
    "process": PROCESS_FIELDS,
}


def zeek_fields(log: str) -> dict[str, str]:
    """The field -> column map for one Zeek log (conn, dns, ssl, ...)."""
    return {**ZEEK_FIELDS, **ZEEK_LOG_FIELDS.get(log, {})}


# -- log sources --------------------------------------------------------------------------------------

# Windows event -> Sigma category. Sysmon by event id; other channels by (channel, event id).
SYSMON_CATEGORIES: dict[int, str] = {
    1: "process_creation", 2: "file_change", 3: "network_connection", 5: "process_termination",
    6: "driver_load", 7: "image_load", 8: "create_remote_thread", 9: "raw_access_thread",
    10: "process_access", 11: "file_event", 13: "registry_set", 14: "registry_rename",
    15: "create_stream_hash", 17: "pipe_created", 18: "pipe_created", 19: "wmi_event", 20: "wmi_event",
    21: "wmi_event", 22: "dns_query", 23: "file_delete", 24: "clipboard_change", 25: "process_tampering",
    26: "file_delete_detected", 27: "file_block_executable", 28: "file_block_shredding",
    29: "file_executable_detected",
}
CHANNEL_CATEGORIES: dict[tuple[str, int], str] = {
    ("security", 4688): "process_creation",
    ("microsoft-windows-powershell/operational", 4103): "ps_module",
    ("microsoft-windows-powershell/operational", 4104): "ps_script",
    ("powershellcore/operational", 4103): "ps_module",
    ("powershellcore/operational", 4104): "ps_script",
    ("windows powershell", 400): "ps_classic_start",
    ("windows powershell", 600): "ps_classic_provider_start",
    ("windows powershell", 800): "ps_classic_script",
}
SECURITY_AUTH_EVENTS = frozenset({4624, 4625, 4634, 4647, 4648, 4672, 4768, 4769, 4771, 4776})
# Sigma categories that cover several concrete ones.
CATEGORY_GROUPS: dict[str, tuple[str, ...]] = {
    "registry_event": ("registry_add", "registry_delete", "registry_set", "registry_rename"),
    "file_delete": ("file_delete", "file_delete_detected"),
}

# Products whose events come from several input formats.
PRODUCT_SOURCES: dict[str, tuple[str, ...]] = {
    "windows": ("windows",),
    "linux": ("linux_syslog", "journald", "sshd", "auditd", "linux"),
}
SERVICE_SOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("linux", "sshd"): ("sshd",),
    ("linux", "auth"): ("sshd", "linux_auth"),
    ("linux", "syslog"): ("linux_syslog", "journald"),
    ("linux", "auditd"): ("auditd",),
}
# Product-less categories: which Ganzhi events they mean.
GENERIC_CATEGORIES: dict[str, str] = {
    "webserver": "event_category = 'http' AND source_type IN ('nginx_access', 'apache_access', 'iis', "
                 "'webserver')",
    "proxy": "event_category = 'http'",
    "dns": "event_category = 'dns'",
    "firewall": "event_category IN ('firewall', 'network_connection')",
    "network_connection": "event_category = 'network_connection'",
    "antivirus": "event_category = 'antivirus'",
}


def windows_category(channel: str, event_id: int, event_type: str = "") -> str:
    """The Sigma category of a Windows event ('' when it has none)."""
    channel = channel.lower()
    if channel == "microsoft-windows-sysmon/operational":
        if event_id == 12:  # key create/delete share one id; the event says which
            return "registry_delete" if "delete" in event_type.lower() else "registry_add"
        return SYSMON_CATEGORIES.get(event_id, "")
    category = CHANNEL_CATEGORIES.get((channel, event_id), "")
    if not category and channel == "security" and event_id in SECURITY_AUTH_EVENTS:
        return "auth"
    return category


def _quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(sql_string(v) for v in values)


def _in(column: str, values: tuple[str, ...] | list[str]) -> str:
    return f"{column} = {_quoted(values)}" if len(values) == 1 else f"{column} IN ({_quoted(values)})"


def logsource_filter(logsource: SigmaLogSource) -> str:
    """An SQL filter selecting the events a rule with this log source is written for."""
    product = (logsource.product or "").lower()
    category = (logsource.category or "").lower()
    service = (logsource.service or "").lower()
    parts: list[str] = []
    if product == "zeek":
        parts.append(f"source_type = 'zeek_{service}'" if service else "startsWith(source_type, 'zeek_')")
        return " AND ".join(parts)
    if product == "windows":
        parts.append("source_type = 'windows'")
        if service:
            channels = windows_logsource_mapping.get(service, service)
            channels = [channels] if isinstance(channels, str) else list(channels)
            parts.append(_in("lowerUTF8(extra['Channel'])", [c.lower() for c in channels]))
    elif product:
        sources = SERVICE_SOURCES.get((product, service)) or PRODUCT_SOURCES.get(product)
        if sources is None:  # a product Ganzhi has no parser for yet: its own source type by convention
            sources = (f"{product}_{service}",) if service else (product,)
        parts.append(_in("source_type", sources))
    if category:
        if not product and category in GENERIC_CATEGORIES:
            parts.append(GENERIC_CATEGORIES[category])
        else:
            parts.append(_in("event_category", CATEGORY_GROUPS.get(category, (category,))))
    elif service and not product:
        parts.append(_in("source_type", (service,)))
    return " AND ".join(parts) or "1"


def taxonomy(logsource: SigmaLogSource) -> str | None:
    """Which FIELD_MAPS entry a rule with this log source uses."""
    product, category = (logsource.product or "").lower(), (logsource.category or "").lower()
    if product in ("windows", "zeek"):
        return product
    if category in ("webserver", "proxy"):
        return "web"
    if category == "dns":
        return "dns"
    if product in ("linux", "macos"):
        return "process"
    return None


def sigma_pipeline() -> ProcessingPipeline:
    """pySigma processing pipeline: rename each rule's fields to Ganzhi columns by its log source."""
    items = [
        ProcessingItem(identifier="ganzhi_windows_fields", transformation=FieldMappingTransformation(WINDOWS_FIELDS),
                       rule_conditions=[LogsourceCondition(product="windows")]),
        ProcessingItem(identifier="ganzhi_web_fields", transformation=FieldMappingTransformation(WEB_FIELDS),
                       rule_conditions=[LogsourceCondition(category="webserver"), LogsourceCondition(category="proxy")],
                       rule_condition_linking=any),
        ProcessingItem(identifier="ganzhi_dns_fields", transformation=FieldMappingTransformation(DNS_FIELDS),
                       rule_conditions=[LogsourceCondition(category="dns")]),
        ProcessingItem(identifier="ganzhi_process_fields", transformation=FieldMappingTransformation(PROCESS_FIELDS),
                       rule_conditions=[LogsourceCondition(product="linux"), LogsourceCondition(product="macos")],
                       rule_condition_linking=any),
    ]
    for log, extra in ZEEK_LOG_FIELDS.items():
        items.append(ProcessingItem(identifier=f"ganzhi_zeek_{log}_fields", transformation=FieldMappingTransformation(
            extra), rule_conditions=[LogsourceCondition(product="zeek", service=log)]))
    items.append(ProcessingItem(identifier="ganzhi_zeek_fields", transformation=FieldMappingTransformation(ZEEK_FIELDS),
                                rule_conditions=[LogsourceCondition(product="zeek")]))
    return ProcessingPipeline(name="Ganzhi schema", priority=20, items=items)
