"""The five dashboards operators live in: situation overview, incidents, network, detections, pipeline health."""

from __future__ import annotations

from typing import Any

from dashboards.model import ALL, ORG_UNIT, SENSOR, Dashboard, Panel, Query, any_in_unit, in_unit, of_sensor
from pipeline.situation.baseline import ROW_UNITS

OPEN = "status NOT IN ('resolved', 'false_positive')"
SEVERITY_ORDER = "indexOf(['critical', 'high', 'medium', 'low', 'informational'], severity)"
ALL_UNITS = f"${{org_unit:sqlstring}} = '{ALL}'"
# the selected org unit's scores, or the extranet's when All is selected
SCOPE = (f"scope_kind = if({ALL_UNITS}, 'extranet', 'org_unit') "
         f"AND scope = if({ALL_UNITS}, '', ${{org_unit:sqlstring}})")
SERIES = f"if({ALL_UNITS}, 'index:extranet', concat('index:', ${{org_unit:sqlstring}}))"
ALERTS_IN_UNIT = f"({in_unit('src_org_unit')} OR {in_unit('dst_org_unit')})"
ADDRESS = "replaceRegexpOne(IPv6NumToString({}), '^::ffff:', '')"  # IPv4 back to a dotted quad
LEVEL_MAPPINGS = {"mappings": [{"type": "value", "options": {
    "0": {"text": "无 none", "color": "green", "index": 0}, "1": {"text": "I 特别重大", "color": "red", "index": 1},
    "2": {"text": "II 重大", "color": "orange", "index": 2}, "3": {"text": "III 较大", "color": "yellow", "index": 3},
    "4": {"text": "IV 一般", "color": "blue", "index": 4}}}], "color": {"mode": "fixed"}}
INDEX_THRESHOLDS = {"min": 0, "max": 100, "thresholds": {"mode": "absolute", "steps": [
    {"color": "green", "value": None}, {"color": "yellow", "value": 25}, {"color": "orange", "value": 50},
    {"color": "red", "value": 75}]}}
STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"}


def stat(title: str, sql: str, column: str, **kw: Any) -> Panel:
    return Panel("stat", title, (Query(sql, (column,), table=True),), width=6, height=5, options=STAT, **kw)


SITUATION = Dashboard(
    "ganzhi-situation", "Ganzhi · 态势总览 Situation overview",
    "Warning level, situation index and its forecast, incidents, most-affected org units and top threats.",
    time_from="now-7d", time_to="now+1d",
    panels=(
        stat("预警等级 Warning level",
             "SELECT argMax(level, at) AS level FROM warning_levels "
             f"WHERE scope = if({ALL_UNITS}, '', ${{org_unit:sqlstring}})", "level", defaults=LEVEL_MAPPINGS),
        stat("态势指数 Situation index",
             f"SELECT argMax(score, at) AS score FROM situation_history WHERE {SCOPE}", "score",
             defaults=INDEX_THRESHOLDS),
        stat("未关闭事件 Open incidents",
             f"SELECT count() AS open FROM incidents FINAL WHERE {OPEN} AND {any_in_unit('org_units')}", "open"),
        stat("流量异常 Anomalies in range",
             f"SELECT count() AS anomalies FROM anomalies FINAL WHERE $__timeFilter(hour) AND {in_unit('org_unit')}",
             "anomalies"),
        Panel("timeseries", "态势指数与预测 Situation index and forecast (90% interval)", (
            Query(f"SELECT at AS time, score AS index FROM situation_history WHERE {SCOPE} AND $__timeFilter(at) "
                  "ORDER BY time", ("time", "index")),
            Query(f"SELECT ts AS time, mean AS forecast, low AS forecast_low, high AS forecast_high FROM forecasts "
                  f"FINAL WHERE series = {SERIES} AND made_at = (SELECT max(made_at) FROM forecasts "
                  f"WHERE series = {SERIES}) ORDER BY time", ("time", "forecast", "forecast_low", "forecast_high"),
                  ref="B"),
        ), width=16, height=9, defaults=INDEX_THRESHOLDS),
        Panel("piechart", "未关闭事件 Open incidents by severity", (Query(
            f"SELECT severity, count() AS incidents FROM incidents FINAL WHERE {OPEN} AND {any_in_unit('org_units')} "
            f"GROUP BY severity ORDER BY {SEVERITY_ORDER}", ("severity", "incidents"), table=True),),
            width=8, height=9),
        Panel("bargauge", "受影响最大的单位 Most-affected org units", (Query(
            "SELECT scope AS org_unit, score FROM situation_history WHERE scope_kind = 'org_unit' "
            f"AND at = (SELECT max(at) FROM situation_history) AND {in_unit('scope')} "
            "ORDER BY score DESC LIMIT 10", ("org_unit", "score"), table=True),),
            defaults=INDEX_THRESHOLDS, options={"orientation": "horizontal", "displayMode": "gradient"}),
        Panel("table", "主要威胁 Top threats (their share of the index)", (Query(
            "SELECT JSONExtractString(f, 'kind') AS kind, JSONExtractString(f, 'title') AS threat, "
            "JSONExtractFloat(f, 'contribution') AS contribution FROM situation_history "
            f"ARRAY JOIN JSONExtractArrayRaw(factors) AS f WHERE {SCOPE} "
            "AND at = (SELECT max(at) FROM situation_history) ORDER BY contribution DESC",
            ("kind", "threat", "contribution"), table=True),)),
        Panel("table", "各单位预警 Warning levels by org unit", (Query(
            "SELECT if(scope = '', 'extranet', scope) AS org_unit, argMax(level, at) AS level, max(at) AS since "
            f"FROM warning_levels GROUP BY scope HAVING level > 0 AND {in_unit('scope')} ORDER BY level, org_unit",
            ("org_unit", "level", "since"), table=True),), width=24, height=6, defaults=LEVEL_MAPPINGS),
    ))

INCIDENTS = Dashboard(
    "ganzhi-incidents", "Ganzhi · 事件 Incidents",
    "The incident queue, how old it is, who holds what, and how fast incidents are acknowledged and resolved.",
    time_from="now-30d",
    panels=(
        Panel("table", "待处理 Queue (open incidents)", (Query(
            "SELECT incident_id, severity, status, title, arrayStringConcat(org_units, ', ') AS units, assignee, "
            "dateDiff('hour', opened_at, now64(3)) AS age_hours, last_seen FROM incidents FINAL "
            f"WHERE {OPEN} AND {any_in_unit('org_units')} ORDER BY {SEVERITY_ORDER}, last_seen DESC LIMIT 200",
            ("incident_id", "severity", "status", "title", "units", "assignee", "age_hours", "last_seen"),
            table=True),), width=24, height=10),
        Panel("timeseries", "新事件 Incidents opened", (Query(
            "SELECT $__timeInterval(opened_at) AS time, severity, count() AS incidents FROM incidents FINAL "
            f"WHERE $__timeFilter(opened_at) AND {any_in_unit('org_units')} GROUP BY time, severity ORDER BY time",
            ("time", "severity", "incidents")),), width=12),
        Panel("barchart", "事件时长 Ageing of open incidents", (Query(
            "SELECT multiIf(age < 1, '< 1 h', age < 24, '1-24 h', age < 168, '1-7 d', '> 7 d') AS age_band, "
            "count() AS incidents FROM (SELECT dateDiff('hour', opened_at, now64(3)) AS age FROM incidents FINAL "
            f"WHERE {OPEN} AND {any_in_unit('org_units')}) GROUP BY age_band "
            "ORDER BY indexOf(['< 1 h', '1-24 h', '1-7 d', '> 7 d'], age_band)", ("age_band", "incidents"),
            table=True),), width=12),
        Panel("table", "按处置人 By assignee", (Query(
            "SELECT if(assignee = '', '(unassigned)', assignee) AS assignee, countIf(status = 'new') AS new, "
            "countIf(status IN ('acknowledged', 'investigating')) AS working, "
            "countIf(status = 'contained') AS contained, "
            f"count() AS open FROM incidents FINAL WHERE {OPEN} AND {any_in_unit('org_units')} "
            "GROUP BY assignee ORDER BY open DESC", ("assignee", "new", "working", "contained", "open"),
            table=True),), width=12),
        stat("平均响应 MTTA (hours, opened in range)",
             "SELECT round(avg(hours), 2) AS mtta_hours FROM (SELECT dateDiff('second', any(i.opened_at), "
             "min(t.at)) / 3600 AS hours FROM incident_timeline AS t INNER JOIN (SELECT incident_id, opened_at "
             f"FROM incidents FINAL WHERE $__timeFilter(opened_at) AND {any_in_unit('org_units')}) AS i "
             "ON t.incident_id = i.incident_id WHERE t.action IN ('status', 'acknowledged') GROUP BY t.incident_id)",
             "mtta_hours", unit="h"),
        stat("平均处置 MTTR (hours, opened in range)",
             "SELECT round(avg(hours), 2) AS mttr_hours FROM (SELECT dateDiff('second', any(i.opened_at), "
             "min(t.at)) / 3600 AS hours FROM incident_timeline AS t INNER JOIN (SELECT incident_id, opened_at "
             f"FROM incidents FINAL WHERE $__timeFilter(opened_at) AND {any_in_unit('org_units')}) AS i "
             "ON t.incident_id = i.incident_id WHERE t.action = 'status' "
             "AND JSONExtractString(t.detail, 'to') IN ('resolved', 'false_positive') GROUP BY t.incident_id)",
             "mttr_hours", unit="h"),
    ))

_TRAFFIC_UNIT = f"ARRAY JOIN {ROW_UNITS} AS u"
_EVENTS = f"$__timeFilter(ts) AND {of_sensor()}"
NETWORK = Dashboard(
    "ganzhi-network", "Ganzhi · 网络 Network",
    "Traffic per org unit, top talkers, protocols, DNS, TLS, services newly seen answering, traffic anomalies.",
    variables=(ORG_UNIT, SENSOR),
    panels=(
        Panel("timeseries", "流量 Traffic per org unit", (Query(
            f"SELECT $__timeInterval(ts) AS time, u AS org_unit, sum(bytes_in + bytes_out) AS bytes FROM events "
            f"{_TRAFFIC_UNIT} WHERE {_EVENTS} AND {in_unit('u')} GROUP BY time, org_unit ORDER BY time",
            ("time", "org_unit", "bytes")),), width=24, unit="decbytes"),
        Panel("table", "流量大户 Top talkers", (Query(
            f"SELECT {ADDRESS.format('src_ip')} AS source, any(src_org_unit) AS org_unit, "
            "sum(bytes_in + bytes_out) AS bytes, count() AS connections, uniqExact(dst_ip) AS peers FROM events "
            f"WHERE {_EVENTS} AND event_category = 'network_connection' "
            f"AND ({in_unit('src_org_unit')} OR {in_unit('dst_org_unit')}) GROUP BY src_ip ORDER BY bytes DESC "
            "LIMIT 20", ("source", "org_unit", "bytes", "connections", "peers"), table=True),)),
        Panel("piechart", "协议 Protocols", (Query(
            "SELECT if(app_protocol = '', protocol, app_protocol) AS proto, count() AS events FROM events "
            f"WHERE {_EVENTS} AND ({in_unit('src_org_unit')} OR {in_unit('dst_org_unit')}) AND proto != '' "
            "GROUP BY proto ORDER BY events DESC LIMIT 12", ("proto", "events"), table=True),)),
        Panel("timeseries", "DNS 查询 DNS queries", (Query(
            "SELECT $__timeInterval(ts) AS time, countIf(dns_rcode != 'NXDOMAIN') AS answered, "
            "countIf(dns_rcode = 'NXDOMAIN') AS nxdomain FROM events "
            f"WHERE {_EVENTS} AND event_category = 'dns' AND {in_unit('src_org_unit')} GROUP BY time ORDER BY time",
            ("time", "answered", "nxdomain")),)),
        Panel("table", "热门域名 Top queried domains", (Query(
            "SELECT dns_query AS domain, count() AS queries, uniqExact(src_ip) AS clients FROM events "
            f"WHERE {_EVENTS} AND event_category = 'dns' AND dns_query != '' AND {in_unit('src_org_unit')} "
            "GROUP BY domain ORDER BY queries DESC LIMIT 20", ("domain", "queries", "clients"), table=True),)),
        Panel("barchart", "TLS 版本 TLS versions", (Query(
            "SELECT tls_version AS version, count() AS sessions FROM events "
            f"WHERE {_EVENTS} AND event_category = 'tls' AND tls_version != '' "
            f"AND ({in_unit('src_org_unit')} OR {in_unit('dst_org_unit')}) GROUP BY version ORDER BY sessions DESC",
            ("version", "sessions"), table=True),)),
        Panel("table", "新应答服务 Services first seen answering in range", (Query(
            f"SELECT {ADDRESS.format('ip')} AS address, port, kind, product, org_unit, min(first_seen) AS since, "
            f"sum(hits) AS hits FROM software_inventory WHERE {in_unit('org_unit')} "
            "GROUP BY ip, port, kind, product, org_unit HAVING $__timeFilter(since) ORDER BY since DESC LIMIT 50",
            ("address", "port", "kind", "product", "org_unit", "since", "hits"), table=True),)),
        Panel("table", "流量异常 Traffic anomalies (observed vs expected range)", (Query(
            "SELECT hour AS time, if(org_unit = '', 'extranet', org_unit) AS scope, metric, observed, low, high "
            f"FROM anomalies FINAL WHERE $__timeFilter(hour) AND {in_unit('org_unit')} ORDER BY hour DESC LIMIT 100",
            ("time", "scope", "metric", "observed", "low", "high"), table=True),), width=24),
    ))

_ALERTS = f"$__timeFilter(window_start) AND suppression_id = '' AND {ALERTS_IN_UNIT}"
DETECTIONS = Dashboard(
    "ganzhi-detections", "Ganzhi · 检测 Detections",
    "Alerts by level, rule and ATT&CK tactic; rules that stopped firing; suppressions and disabled rules.",
    panels=(
        Panel("timeseries", "告警 Alerts by level", (Query(
            "SELECT $__timeInterval(window_start) AS time, level, uniqExact(alert_id) AS alerts FROM alert_hits "
            f"WHERE {_ALERTS} GROUP BY time, level ORDER BY time", ("time", "level", "alerts")),), width=16),
        Panel("piechart", "ATT&CK 战术 Alerts by tactic", (Query(
            "SELECT replaceAll(substring(tag, 8), '-', '_') AS tactic, uniqExact(alert_id) AS alerts FROM alert_hits "
            f"ARRAY JOIN tags AS tag WHERE {_ALERTS} AND startsWith(tag, 'attack.') "
            "AND NOT match(tag, '^attack\\\\.[tgs]\\\\d') GROUP BY tactic ORDER BY alerts DESC",
            ("tactic", "alerts"), table=True),), width=8),
        Panel("table", "按规则 Alerts by rule", (Query(
            "SELECT rule_id, any(rule_title) AS title, any(level) AS level, any(kind) AS kind, "
            f"uniqExact(alert_id) AS alerts, max(event_ts) AS last_hit FROM alert_hits WHERE {_ALERTS} "
            "GROUP BY rule_id ORDER BY alerts DESC LIMIT 50", ("rule_id", "title", "level", "kind", "alerts",
                                                              "last_hit"), table=True),), width=24),
        Panel("table", "规则心跳 Rules that stopped firing (alerted in the 7 days before the range, not in it)", (Query(
            "SELECT rule_id, any(rule_title) AS title, max(window_start) AS last_alert, "
            "uniqExact(alert_id) AS alerts_before FROM alert_hits WHERE suppression_id = '' "
            "AND window_start >= $__fromTime - INTERVAL 7 DAY AND window_start <= $__toTime GROUP BY rule_id "
            "HAVING last_alert < $__fromTime ORDER BY last_alert DESC", ("rule_id", "title", "last_alert",
                                                                         "alerts_before"), table=True),)),
        Panel("table", "抑制 Active suppressions", (Query(
            "SELECT suppression_id, if(rule_id = '', '(every rule)', rule_id) AS rule, scope, value, owner, reason, "
            "expires_at FROM suppressions FINAL WHERE revoked = 0 AND expires_at > now64(3) ORDER BY expires_at",
            ("suppression_id", "rule", "scope", "value", "owner", "reason", "expires_at"), table=True),)),
        stat("被抑制 Alerts suppressed in range",
             "SELECT uniqExact(alert_id) AS suppressed FROM alert_hits WHERE suppression_id != '' "
             f"AND $__timeFilter(window_start) AND {ALERTS_IN_UNIT}", "suppressed"),
        Panel("table", "停用规则 Disabled rules", (Query(
            "SELECT rule_id, argMax(enabled, version) AS enabled, argMax(changed_by, version) AS changed_by, "
            "max(changed_at) AS changed_at FROM rule_state GROUP BY rule_id HAVING enabled = 0 "
            "ORDER BY changed_at DESC",
            ("rule_id", "enabled", "changed_by", "changed_at"), table=True),), width=18, height=5),
    ))

_DROPS = ("toUInt64OrZero(extra['drops']) + arraySum(arrayMap(k -> toUInt64OrZero(extra[k]), "
          "arrayFilter(k -> startsWith(k, 'drops.'), mapKeys(extra))))")
PIPELINE = Dashboard(
    "ganzhi-pipeline", "Ganzhi · 管道健康 Pipeline health",
    "Events per second, dead letters, consumer lag and insert latency per writer, sensor drops and heartbeats.",
    variables=(SENSOR,), time_from="now-6h", refresh="30s",
    panels=(
        Panel("timeseries", "入库速率 Events stored per second", (Query(
            "SELECT $__timeInterval(ingested_at) AS time, count() / $__interval_s AS events_per_s FROM events "
            f"WHERE $__timeFilter(ingested_at) AND {of_sensor()} GROUP BY time ORDER BY time",
            ("time", "events_per_s")),), unit="ops"),
        Panel("timeseries", "死信 Dead letters per second", (Query(
            "SELECT $__timeInterval(ts) AS time, stage, count() / $__interval_s AS per_s FROM deadletter "
            "WHERE $__timeFilter(ts) GROUP BY time, stage ORDER BY time", ("time", "stage", "per_s")),), unit="ops"),
        Panel("timeseries", "消费滞后 Consumer lag per writer", (Query(
            "SELECT $__timeInterval(ts) AS time, instance, max(lag) AS lag FROM writer_stats "
            "WHERE $__timeFilter(ts) GROUP BY time, instance ORDER BY time", ("time", "instance", "lag")),)),
        Panel("timeseries", "写入延迟 Insert latency per writer (last batch)", (Query(
            "SELECT $__timeInterval(ts) AS time, instance, max(last_insert_seconds) AS insert_seconds "
            "FROM writer_stats WHERE $__timeFilter(ts) GROUP BY time, instance ORDER BY time",
            ("time", "instance", "insert_seconds")),), unit="s"),
        Panel("timeseries", "探针丢包 Sensor drops", (Query(
            "SELECT $__timeInterval(ts) AS time, sensor, max(drops) - min(drops) AS dropped FROM (SELECT ts, sensor, "
            f"{_DROPS} AS drops FROM events WHERE event_category = 'sensor_health' AND {_EVENTS}) "
            "GROUP BY time, sensor ORDER BY time", ("time", "sensor", "dropped")),)),
        Panel("table", "探针 Sensors (last event, heartbeats)", (Query(
            "SELECT sensor, max(ts) AS last_event, count() AS events, countIf(event_category = 'sensor_health') "
            f"AS heartbeats FROM events WHERE {_EVENTS} GROUP BY sensor ORDER BY last_event",
            ("sensor", "last_event", "events", "heartbeats"), table=True),)),
        Panel("table", "死信原因 Dead-letter reasons", (Query(
            "SELECT stage, reason, count() AS n, max(ts) AS last FROM deadletter WHERE $__timeFilter(ts) "
            "GROUP BY stage, reason ORDER BY n DESC LIMIT 20", ("stage", "reason", "n", "last"), table=True),),
            width=24),
    ))

DASHBOARDS = (SITUATION, INCIDENTS, NETWORK, DETECTIONS, PIPELINE)
