"""Country and autonomous system of external addresses, from offline MaxMind-format (.mmdb) databases.

The user supplies the databases (GeoLite2-Country/City and GeoLite2-ASN, or any MMDB with the same
record layout, e.g. ipinfo's `country`/`asn` fields); nothing is downloaded. Private, loopback,
link-local and other non-global addresses are never looked up.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import maxminddb

_CACHE_LIMIT = 200_000


class GeoError(ValueError):
    """A geo database cannot be opened; the message names the file."""


def _country(record: dict[str, Any]) -> str:
    country = record.get("country")
    if isinstance(country, dict):
        return str(country.get("iso_code") or "")
    return str(country or record.get("country_code") or "")


def _asn(record: dict[str, Any]) -> int:
    number = record.get("autonomous_system_number")
    if number is None:
        text = str(record.get("asn") or "")
        number = text[2:] if text[:2].upper() == "AS" else text
    try:
        return int(number or 0)
    except (TypeError, ValueError):
        return 0


class GeoDatabases:
    """One or more .mmdb files; the first that knows a field answers it."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._readers = []
        for path in paths:
            try:
                self._readers.append(maxminddb.open_database(str(path)))
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                self.close()
                raise GeoError(f"{path}: cannot open as a MaxMind database: {exc}") from None
        self._cache: dict[str, tuple[str, int]] = {}

    def lookup(self, address: str) -> tuple[str, int]:
        """(ISO country code, ASN) of a global address; ('', 0) when unknown or not global."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        country, asn = "", 0
        try:
            is_global = ipaddress.ip_address(address).is_global
        except ValueError:
            is_global = False
        if is_global:
            for reader in self._readers:
                record = reader.get(address)
                if isinstance(record, dict):
                    country = country or _country(record)
                    asn = asn or _asn(record)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = (country, asn)
        return country, asn

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = []
