"""Enrichment before the write: org unit and asset (inventory), threat intelligence (IOCs), geo/ASN.

`Enricher.enrich(events)` fills, in place, the `src_*`/`dst_*` org, asset, zone, criticality, country
and ASN columns and the `ioc_*` columns of canonical events. Its sources are files the operator
maintains; they are re-read when they change (checked every few seconds), without a restart, and a
file that fails to load keeps the previous version in use (the error is logged and counted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipeline.config import Settings, UsageProblem
from pipeline.enrich.geo import GeoDatabases, GeoError
from pipeline.enrich.inventory import Inventory, InventoryError
from pipeline.enrich.ioc import IocError, load_paths

log = logging.getLogger(__name__)
T = TypeVar("T")
_SIDES = (("src_ip", "src", "src_country", "src_asn"), ("dst_ip", "dst", "dst_country", "dst_asn"))
LOAD_ERRORS = (InventoryError, IocError, GeoError, OSError)


@dataclass
class EnrichStats:
    events: int = 0
    inventory_hits: int = 0  # addresses (src and dst counted apiece) found in the inventory
    ioc_hits: int = 0  # events that hit at least one indicator
    geo_hits: int = 0  # addresses given a country or ASN
    reloads: int = 0
    reload_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Watched(Generic[T]):
    """A value loaded from files, reloaded when any of them changes (size or modification time)."""

    def __init__(self, paths: Sequence[Path], load: Callable[[list[Path]], T]):
        self.paths = list(paths)
        self._load = load
        self._signature = self._stat()
        self.value: T = load(self.paths)  # a broken file at start is the user's to fix: let it raise

    def _stat(self) -> tuple[tuple[float, int], ...]:
        out = []
        for path in self.paths:
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for file in files:
                st = file.stat()
                out.append((st.st_mtime, st.st_size))
        return tuple(out)

    def reload_if_changed(self) -> bool:
        """True if reloaded; raises the loader's error (the old value stays) if the new files are bad."""
        signature = self._stat()
        if signature == self._signature:
            return False
        value = self._load(self.paths)
        self.value, self._signature = value, signature
        return True


class Enricher:
    def __init__(self, inventory: Path | None = None, ioc: Sequence[Path] = (), geoip: Sequence[Path] = (),
                 reload_check_s: float = 5.0):
        self.stats = EnrichStats()
        self.reload_check_s = reload_check_s
        self._inventory = Watched([inventory], lambda p: Inventory.load(p[0])) if inventory else None
        self._ioc = Watched(list(ioc), lambda p: load_paths(p)[0]) if ioc else None
        self._geo = Watched(list(geoip), GeoDatabases) if geoip else None
        self._next_check = time.monotonic() + reload_check_s

    @property
    def active(self) -> bool:
        return bool(self._inventory or self._ioc or self._geo)

    def describe(self) -> str:
        parts = []
        if self._inventory:
            parts.append(f"inventory {len(self._inventory.value):,} blocks")
        if self._ioc:
            parts.append(f"{len(self._ioc.value):,} indicators")
        if self._geo:
            parts.append(f"geo {', '.join(p.name for p in self._geo.paths)}")
        return "; ".join(parts) or "no enrichment sources"

    def maybe_reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + self.reload_check_s
        for source in (self._inventory, self._ioc, self._geo):
            if source is None:
                continue
            old = source.value
            try:
                if source.reload_if_changed():
                    self.stats.reloads += 1
                    log.info("enrichment reloaded %s", ", ".join(map(str, source.paths)))
                    if isinstance(old, GeoDatabases):
                        old.close()
            except LOAD_ERRORS as exc:
                self.stats.reload_errors += 1
                log.error("enrichment source changed but cannot be loaded, keeping the previous one: %s", exc)

    def enrich(self, events: list[dict[str, Any]]) -> None:
        """Fill enrichment columns of canonical events in place."""
        if not self.active or not events:
            return
        self.maybe_reload()
        inventory = self._inventory.value if self._inventory else None
        iocs = self._ioc.value if self._ioc else None
        geo = self._geo.value if self._geo else None
        stats = self.stats
        for event in events:
            for ip_field, side, country_field, asn_field in _SIDES:
                address = event.get(ip_field)
                if not address:
                    continue
                block = inventory.lookup(address) if inventory is not None else None
                if block is not None:
                    event.update(block.columns[side])
                    stats.inventory_hits += 1
                if geo is not None and (block is None or block.zone in ("", "external")):
                    country, asn = geo.lookup(address)
                    if country or asn:
                        stats.geo_hits += 1
                        if country:
                            event[country_field] = country
                        if asn:
                            event[asn_field] = asn
            if inventory is not None and not event.get("dst_ip") and event.get("host_name") and \
                    (block := inventory.lookup_host(event["host_name"])) is not None:
                event.update(block.columns["dst"])  # a host's own log (sshd, Windows logon): it is the target
                stats.inventory_hits += 1
            if iocs is not None and (hits := iocs.match(event)):
                stats.ioc_hits += 1
                event["ioc_ids"] = sorted({*event.get("ioc_ids", ()), *(h.id for h in hits)})
                event["ioc_sources"] = sorted({*event.get("ioc_sources", ()), *(h.source for h in hits)})
                event["ioc_confidence"] = max(event.get("ioc_confidence", 0), *(h.confidence for h in hits))
        stats.events += len(events)


def open_enricher(settings: Settings) -> Enricher | None:
    """The enricher the settings ask for, None without sources; a broken source raises UsageProblem."""
    if not (settings.inventory or settings.ioc or settings.geoip):
        return None
    try:
        return Enricher(settings.inventory, settings.ioc, settings.geoip)
    except LOAD_ERRORS as exc:
        raise UsageProblem(f"cannot load an enrichment source: {exc}") from None
