"""The situation bulletin (态势通报): HTML and PDF, with real charts, for a day or a week.

Sections: warning level (预警等级), situation index with its forecast (态势指数), alert volumes with their
forecast and its measured error (告警趋势与预测), top incidents (重点事件), most-targeted org units (受攻击单位),
vulnerability exposures (脆弱性暴露), anomalies (流量异常) and rule activity (规则活跃度).

Charts are drawn by matplotlib, the PDF laid out by reportlab; both need a CJK font (Debian
`fonts-wqy-zenhei`, installed by `make system-deps`; GANZHI_REPORT_FONT names another TrueType file).
Times are shown in Beijing time (UTC+8).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.enrich.inventory import Inventory
from pipeline.incidents.model import CLOSED, load_incidents
from pipeline.situation import assess, baseline, early_warning, elements, exposure, forecast
from pipeline.store.base import Store

HOUR_MS = 3_600_000
PERIODS = {"day": 24 * HOUR_MS, "week": 7 * 24 * HOUR_MS}
BEIJING = timezone(timedelta(hours=8))
FONT_CANDIDATES = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
                   "/usr/share/fonts/truetype/arphic/uming.ttc")
SECTIONS = ("预警等级 Warning level", "态势指数 Situation index", "告警趋势与预测 Alert volume and forecast",
            "重点事件 Top incidents", "受攻击单位 Most-targeted org units", "脆弱性暴露 Vulnerability exposures",
            "流量异常 Traffic anomalies", "规则活跃度 Rule activity")
LEVEL_COLOURS = {0: "#2e7d32", 1: "#c62828", 2: "#ef6c00", 3: "#f9a825", 4: "#1565c0"}


class ReportError(RuntimeError):
    """The bulletin cannot be rendered; the message says what to install or fix."""


def font_path() -> Path:
    configured = os.environ.get("GANZHI_REPORT_FONT")
    for candidate in ([configured] if configured else FONT_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ReportError("no CJK font for the bulletin: install Debian's fonts-wqy-zenhei (`make system-deps`) "
                      "or set GANZHI_REPORT_FONT to a TrueType font with Chinese glyphs")


def _fmt(ms: int, with_time: bool = True) -> str:
    return datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


# -- data ---------------------------------------------------------------------------------------------------


def gather(store: Store, period: str, end_ms: int, inventory: Inventory | None = None) -> dict[str, Any]:
    """Everything the bulletin shows, as plain data (also what the API returns for a report's summary)."""
    if period not in PERIODS:
        raise ReportError(f"period must be one of {', '.join(PERIODS)}")
    start_ms = end_ms - PERIODS[period]
    params = {"since": start_ms, "until": end_ms}
    window = ("window_start >= fromUnixTimestamp64Milli({since:Int64}) "
              "AND window_start < fromUnixTimestamp64Milli({until:Int64}) AND suppression_id = ''")
    levels = early_warning.current(store)
    incidents = load_incidents(
        store, "last_seen >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND first_seen < fromUnixTimestamp64Milli({until:Int64})", params)
    order = ("critical", "high", "medium", "low", "informational")
    incidents.sort(key=lambda i: (order.index(i.severity), i.status in CLOSED, -i.last_seen))
    units = store.query(
        f"SELECT unit, uniqExact(alert_id) AS alerts, uniqExact(rule_id) AS rules FROM alert_hits "
        f"ARRAY JOIN {baseline.ROW_UNITS} AS unit WHERE {window} "
        "GROUP BY unit ORDER BY alerts DESC, unit LIMIT 10", params).rows
    rules = store.query(
        # an anomaly's title is about its hour; the rule is the baseline of a metric
        "SELECT rule_id, if(any(kind) = 'anomaly', concat('traffic baseline: ', substring(rule_id, 17)), "
        f"any(rule_title)), any(level), uniqExact(alert_id) AS alerts FROM alert_hits WHERE {window} "
        "GROUP BY rule_id ORDER BY alerts DESC, rule_id LIMIT 10", params).rows
    index_points = forecast.index_series(store, start_ms // 1000, end_ms // 1000)
    alert_points = forecast.alert_series(store, start_ms // 1000, end_ms // 1000)
    latest = {(s["scope_kind"], s["scope"]): s for s in assess.latest(store)}
    exposures = exposure.exposures(store, end_ms, inventory)
    return {
        "period": period, "start_ms": start_ms, "end_ms": end_ms,
        "generated_ms": int(datetime.now(UTC).timestamp() * 1000),
        "level": levels.get("", {"level": 0, "level_name": "none", "reasons": []}),
        "unit_levels": [v for k, v in levels.items() if k and v["level"]],
        "level_changes": early_warning.history(store, start_ms),
        "index": latest.get(("extranet", ""), {"score": 0.0, "band": "low", "factors": []}),
        "unit_index": sorted((s for (kind, _), s in latest.items() if kind == "org_unit"),
                             key=lambda s: -s["score"])[:10],
        "index_history": {k: sorted(v.items()) for k, v in index_points.items()},
        "alert_history": {k: sorted(v.items()) for k, v in alert_points.items()},
        "forecasts": forecast.latest_forecasts(store),
        "incidents": [i.as_json() for i in incidents[:15]], "incident_count": len(incidents),
        "units": [{"org_unit": u, "alerts": a, "rules": r} for u, a, r in units],
        "rules": [{"rule_id": r, "title": t, "level": lv, "alerts": a} for r, t, lv, a in rules],
        "exposures": exposures[:20],
        "tactics": elements.elements(store, start_ms, end_ms, "", inventory, exposures)["threats"]["by_tactic"],
        "anomalies": baseline.stored_anomalies(store, start_ms, end_ms, limit=20),
    }


# -- charts -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # WenQuanYi has no "normal" weight

    path = str(font_path())
    font_manager.fontManager.addfont(path)
    plt.rcParams["font.family"] = font_manager.FontProperties(fname=path).get_name()
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _series_chart(history: dict[str, list[tuple[int, float]]], forecasts: list[dict[str, Any]], prefix: str,
                  title: str, ylabel: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    names = sorted((k for k in history if k.startswith(prefix)), key=lambda k: (k != f"{prefix}extranet", k))[:5]
    for name in names:
        points = history[name]
        times = [datetime.fromtimestamp(t, BEIJING) for t, _ in points]
        line, = ax.plot(times, [v for _, v in points], label=name.removeprefix(prefix), linewidth=1.4)
        f = next((f for f in forecasts if f["series"] == name), None)
        if f:
            ahead = f["points"][:48]
            ft = [datetime.fromtimestamp(p["ts"] / 1000, BEIJING) for p in ahead]
            ax.plot(ft, [p["mean"] for p in ahead], linestyle="--", color=line.get_color(), linewidth=1.2)
            ax.fill_between(ft, [p["low"] for p in ahead], [p["high"] for p in ahead], color=line.get_color(),
                            alpha=0.15)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "无数据 no data", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    return _png(fig)


def _bar_chart(labels: list[str], values: list[float], title: str, colour: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.4 * max(3, len(labels)) + 0.8))
    ax.barh(labels[::-1], values[::-1], color=colour)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if not labels:
        ax.text(0.5, 0.5, "无数据 no data", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def charts(data: dict[str, Any]) -> dict[str, bytes]:
    return {
        "index": _series_chart(data["index_history"], data["forecasts"], "index:",
                               "态势指数与预测 Situation index and forecast (90% interval)", "0-100"),
        "alerts": _series_chart(data["alert_history"], data["forecasts"], "alerts:",
                                "每小时告警与预测 Alerts per hour and forecast (90% interval)", "alerts/h"),
        "units": _bar_chart([u["org_unit"] for u in data["units"]], [u["alerts"] for u in data["units"]],
                            "受攻击最多的单位 Alerts by org unit", "#c62828"),
        "rules": _bar_chart([r["title"][:40] for r in data["rules"]], [r["alerts"] for r in data["rules"]],
                            "规则活跃度 Alerts by rule", "#1565c0"),
    }


# -- tables shared by both renderers ---------------------------------------------------------------------------


def tables(data: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    def error_text(e: dict[str, Any]) -> str:
        if not e.get("held_back_hours"):
            return e.get("note", "-")
        return (f"MAPE {e['mape_pct']}% · sMAPE {e['smape_pct']}% · MAE {e['mae']} "
                f"(naive {e['seasonal_naive_mae']}) · coverage {e['interval_coverage_pct']}%")

    return {
        "levels": (["范围 Scope", "等级 Level", "自 Since", "原因 Reasons"],
                   [[v["scope"], v["level_name"], _fmt(v["since"]), "; ".join(r["detail"] for r in v["reasons"][:3])]
                    for v in [data["level"], *data["unit_levels"]] if "since" in v]),
        "index": (["范围 Scope", "指数 Index", "等级 Band", "主要因素 Top factors"],
                  [["extranet", f"{data['index']['score']:.1f}", data["index"]["band"],
                    "; ".join(f"{f['title']} (+{f['contribution']})" for f in data["index"]["factors"][:3])]]
                  + [[s["scope"], f"{s['score']:.1f}", s["band"],
                      "; ".join(f"{f['title']} (+{f['contribution']})" for f in s["factors"][:2])]
                     for s in data["unit_index"]]),
        "forecast": (["序列 Series", "模型 Model", "回测误差 Held-back error"],
                     [[f["series"], f["model"], error_text(f["error"])] for f in data["forecasts"]]),
        "incidents": (["严重性 Severity", "事件 Incident", "单位 Org units", "状态 Status", "最近 Last seen"],
                      [[i["severity"], i["title"][:60], ", ".join(i["org_units"]), i["status"], _fmt(i["last_seen"])]
                       for i in data["incidents"]]),
        "units": (["单位 Org unit", "告警 Alerts", "规则 Rules"],
                  [[u["org_unit"], str(u["alerts"]), str(u["rules"])] for u in data["units"]]),
        "exposures": (["CVE", "KEV", "CVSS", "资产 Asset", "单位 Org unit", "软件 Software"],
                      [[e["cve_id"], "yes" if e["kev"] else "", f"{e['cvss']:.1f}", e["asset"] or e["ip"],
                        e["org_unit"], e["product"][:40]] for e in data["exposures"]]),
        "anomalies": (["时间 Hour", "单位 Org unit", "指标 Metric", "观测 Observed", "预期 Expected range"],
                      [[_fmt(a["hour_ms"]), a["org_unit"] or "extranet", a["metric"], f"{a['observed']:,.0f}",
                        f"{a['low']:,.0f} - {a['high']:,.0f}"] for a in data["anomalies"]]),
        "tactics": (["ATT&CK 战术 Tactic", "告警 Alerts"], [[t, str(n)] for t, n in data["tactics"].items()]),
        "rules": (["规则 Rule", "级别 Level", "告警 Alerts"],
                  [[f"{r['title'][:50]} ({r['rule_id'][:20]})", r["level"], str(r["alerts"])] for r in data["rules"]]),
    }


# -- HTML ---------------------------------------------------------------------------------------------------


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class='empty'>无 none</p>"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + cells + "</tbody></table>")


def render_html(data: dict[str, Any], images: dict[str, bytes], t: dict[str, Any]) -> str:
    level = data["level"]["level"]
    colour = LEVEL_COLOURS.get(level, "#2e7d32")

    def img(name: str) -> str:
        return f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(images[name]).decode()}'>"

    blocks = [
        (SECTIONS[0], f"<div class='level' style='background:{colour}'>{html.escape(data['level']['level_name'])}"
                      "</div>" + _html_table(*t["levels"])),
        (SECTIONS[1], img("index") + _html_table(*t["index"])),
        (SECTIONS[2], img("alerts") + _html_table(*t["forecast"])),
        (SECTIONS[3], f"<p>{data['incident_count']} incidents active in the period</p>" + _html_table(*t["incidents"])),
        (SECTIONS[4], img("units") + _html_table(*t["units"])),
        (SECTIONS[5], _html_table(*t["exposures"])),
        (SECTIONS[6], _html_table(*t["anomalies"])),
        (SECTIONS[7], img("rules") + _html_table(*t["rules"]) + _html_table(*t["tactics"])),
    ]
    body = "".join(f"<section><h2>{i}. {html.escape(title)}</h2>{content}</section>"
                   for i, (title, content) in enumerate(blocks, 1))
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>网络安全态势通报 {_fmt(data['end_ms'], False)}</title>
<style>body{{font-family:"WenQuanYi Zen Hei","Noto Sans CJK SC",sans-serif;max-width:1000px;margin:2em auto;color:#222}}
h1{{border-bottom:3px solid {colour}}} table{{border-collapse:collapse;width:100%;font-size:13px;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:4px 6px;text-align:left}} th{{background:#f3f3f3}} img{{max-width:100%}}
.level{{display:inline-block;color:#fff;padding:.4em 1em;font-size:1.3em;border-radius:4px}}
.empty{{color:#888}}</style>
</head><body><h1>网络安全态势通报 Situation bulletin</h1>
<p>周期 Period: {data['period']} · {_fmt(data['start_ms'])} – {_fmt(data['end_ms'])} (北京时间) ·
生成 Generated {_fmt(data['generated_ms'])}</p>{body}</body></html>"""


# -- PDF ----------------------------------------------------------------------------------------------------


def render_pdf(data: dict[str, Any], images: dict[str, bytes], t: dict[str, Any]) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    path = font_path()
    if "GanzhiCJK" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("GanzhiCJK", str(path), subfontIndex=0))
    body = ParagraphStyle("body", fontName="GanzhiCJK", fontSize=9.5, leading=13, wordWrap="CJK")
    cell = ParagraphStyle("cell", parent=body, fontSize=8, leading=10)
    h1 = ParagraphStyle("h1", parent=body, fontSize=18, leading=24, spaceAfter=6)
    h2 = ParagraphStyle("h2", parent=body, fontSize=13, leading=18, spaceBefore=8, spaceAfter=4)
    width = A4[0] - 30 * mm

    def table(head: list[str], rows: list[list[str]]) -> Any:
        if not rows:
            return Paragraph("无 none", body)
        grid = [[Paragraph(html.escape(str(c)), cell) for c in row] for row in [head, *rows]]
        # the last column holds the free text (reasons, factors, software): give it the room
        narrow = width * (0.55 if len(head) >= 4 else 1.0) / (len(head) - 1 if len(head) >= 4 else len(head))
        widths = [narrow] * (len(head) - 1) + [width - narrow * (len(head) - 1)] if len(head) >= 4 \
            else [width / len(head)] * len(head)
        out = Table(grid, colWidths=widths, repeatRows=1)
        out.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                                 ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                                 ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        return out

    def image(name: str) -> Any:
        picture = Image(io.BytesIO(images[name]))
        scale = width / picture.drawWidth
        picture.drawWidth, picture.drawHeight = width, picture.drawHeight * scale
        return picture

    level = data["level"]["level"]
    badge = Table([[Paragraph(html.escape(data["level"]["level_name"]),
                              ParagraphStyle("badge", parent=h2, textColor=colors.white))]], colWidths=[70 * mm])
    badge.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(LEVEL_COLOURS.get(level, "#2e7d32")))]))
    story: list[Any] = [
        Paragraph("网络安全态势通报 Situation bulletin", h1),
        Paragraph(f"周期 Period: {data['period']} · {_fmt(data['start_ms'])} – {_fmt(data['end_ms'])} (北京时间) · "
                  f"生成 Generated {_fmt(data['generated_ms'])}", body),
        Paragraph(f"1. {SECTIONS[0]}", h2), badge, Spacer(1, 4), table(*t["levels"]),
        Paragraph(f"2. {SECTIONS[1]}", h2), image("index"), table(*t["index"]),
        Paragraph(f"3. {SECTIONS[2]}", h2), image("alerts"), table(*t["forecast"]),
        Paragraph(f"4. {SECTIONS[3]}", h2), Paragraph(f"{data['incident_count']} incidents active in the period",
                                                      body), table(*t["incidents"]),
        Paragraph(f"5. {SECTIONS[4]}", h2), image("units"), table(*t["units"]),
        Paragraph(f"6. {SECTIONS[5]}", h2), table(*t["exposures"]),
        Paragraph(f"7. {SECTIONS[6]}", h2), table(*t["anomalies"]),
        Paragraph(f"8. {SECTIONS[7]}", h2), image("rules"), table(*t["rules"]), Spacer(1, 4), table(*t["tactics"]),
    ]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title="网络安全态势通报", author="Ganzhi 感知")
    doc.build(story)
    return buffer.getvalue()


@dataclass
class Bulletin:
    data: dict[str, Any]
    html: str
    pdf: bytes


_RENDER_LOCK = threading.Lock()  # pyplot's state is global: one bulletin drawn at a time (the API serves threads)


def render(store: Store, period: str, end_ms: int, inventory: Inventory | None = None) -> Bulletin:
    data = gather(store, period, end_ms, inventory)
    t = tables(data)
    with _RENDER_LOCK:
        images = charts(data)
        return Bulletin(data, render_html(data, images, t), render_pdf(data, images, t))


def save(store: Store, bulletin: Bulletin, report_id: str, by: str) -> None:
    d = bulletin.data
    store.insert_columns("reports", {
        "report_id": [report_id], "period": [d["period"]], "period_start": [d["start_ms"]],
        "period_end": [d["end_ms"]], "generated_at": [d["generated_ms"]], "generated_by": [by],
        "html": [bulletin.html], "pdf": [base64.b64encode(bulletin.pdf).decode()]},
        {"report_id": "str", "period": "str", "period_start": "ts", "period_end": "ts", "generated_at": "ts",
         "generated_by": "str", "html": "str", "pdf": "str"})
