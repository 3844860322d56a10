"""Exports (CSV or JSON attachments) of already masked rows; the routes that call this are audited."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from fastapi import Response


def export_response(rows: list[dict[str, Any]], fmt: str, name: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "json":
        return Response(orjson.dumps(rows), media_type="application/json", headers=headers)
    out = io.StringIO()
    columns = sorted({k for r in rows for k in r})
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return Response(out.getvalue(), media_type="text/csv", headers=headers)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):  # no formula injection into spreadsheets
        return "'" + value
    return value
