"""The asset inventory: which department, street and residential committee (部门-街道-居委会) owns an address.

A YAML or CSV file of blocks (CIDRs or single addresses, IPv4 or IPv6) with their org unit, asset name,
owner, criticality 1-5 and zone. YAML:

    networks:
      - cidr: 10.20.0.0/16
        department: 民政局
        zone: internal
      - cidr: 10.20.3.0/24
        street: 东城街道
        committee: 花园社区居委会
      - cidr: 10.20.3.15
        asset: 低保审批系统
        owner: 张伟
        criticality: 4

CSV: a header row `cidr,department,street,committee,asset,owner,criticality,zone,hostname` (any order; only
`cidr` required). `hostname` names the asset's host: events a host logged about itself (sshd, Windows logons)
carry its name but no address, and are enriched as the destination by it.

Blocks nest: an address gets its most specific block, and that block inherits what it leaves empty from the
block around it. Org levels inherit from the top down to the first level a block names: above, 10.20.3.15 is
民政局/东城街道/花园社区居委会, zone internal.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.enrich.iptable import PrefixTable

ZONES = ("internal", "dmz", "external", "backbone")
COLUMNS = ("cidr", "department", "street", "committee", "asset", "owner", "criticality", "zone", "hostname")
_LEVELS = ("department", "street", "committee")


class InventoryError(ValueError):
    """The inventory file cannot be used; the message names the file, the entry and the problem."""


@dataclass(frozen=True)
class Block:
    department: str = ""
    street: str = ""
    committee: str = ""
    asset: str = ""
    owner: str = ""
    criticality: int = 0
    zone: str = ""
    cidr: str = ""
    hostname: str = ""  # the asset's host name: events a host logged about itself (sshd, Windows) carry only that
    # event columns this block sets, per side ("src"/"dst"); filled by Inventory
    columns: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def org_unit(self) -> str:
        """The org unit path, e.g. 民政局/东城街道/花园社区居委会 (empty levels left out)."""
        return "/".join(level for level in (self.department, self.street, self.committee) if level)

    def inherit(self, outer: Block) -> Block:
        levels = [getattr(self, name) for name in _LEVELS]
        first_named = next((i for i, level in enumerate(levels) if level), len(levels))
        for i in range(first_named):
            levels[i] = getattr(outer, _LEVELS[i])
        return replace(
            self, department=levels[0], street=levels[1], committee=levels[2],
            asset=self.asset or outer.asset, owner=self.owner or outer.owner,
            criticality=self.criticality or outer.criticality, zone=self.zone or outer.zone,
        )


def _block(raw: dict[str, Any], where: str) -> tuple[str, Block]:
    unknown = set(raw) - set(COLUMNS)
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(COLUMNS)}")
    cidr = str(raw.get("cidr") or "").strip()
    if not cidr:
        raise InventoryError(f"{where}: 'cidr' is missing (a CIDR block or a single address)")
    text = {k: str(raw.get(k) or "").strip() for k in COLUMNS if k not in ("cidr", "criticality")}
    zone = text["zone"].lower()
    if zone and zone not in ZONES:
        raise InventoryError(f"{where}: zone {zone!r} is not one of {', '.join(ZONES)}")
    try:
        criticality = int(raw.get("criticality") or 0)
    except (TypeError, ValueError):
        criticality = -1
    if not 0 <= criticality <= 5:
        raise InventoryError(f"{where}: criticality must be 1-5 (or empty), got {raw.get('criticality')!r}")
    for level in _LEVELS:
        if "/" in text[level]:
            raise InventoryError(f"{where}: {level} {text[level]!r} must not contain '/' (it separates org levels)")
    return cidr, Block(text["department"], text["street"], text["committee"], text["asset"], text["owner"],
                       criticality, zone, cidr, text["hostname"].lower())


def read_blocks(path: Path) -> list[tuple[str, Block]]:
    """The blocks of a .yaml/.yml or .csv inventory file, in file order."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            entries = doc.get("networks") if isinstance(doc, dict) else None
            if not isinstance(entries, list):
                raise InventoryError(f"{path}: expected a top-level 'networks:' list of blocks")
            return [_block(e if isinstance(e, dict) else {}, f"{path}: networks[{i}]") for i, e in enumerate(entries)]
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = csv.DictReader(fh)
                if rows.fieldnames is None or "cidr" not in rows.fieldnames:
                    raise InventoryError(f"{path}: the first row must be a header naming at least 'cidr'")
                return [_block({k: v for k, v in row.items() if k}, f"{path}:{line}")
                        for line, row in enumerate(rows, start=2)]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as exc:
        raise InventoryError(f"{path}: cannot read inventory: {exc}") from None
    raise InventoryError(f"{path}: inventory must be .yaml, .yml or .csv")


class Inventory:
    """Address -> Block by longest-prefix match, with each block's event columns precomputed."""

    def __init__(self, blocks: list[tuple[str, Block]], origin: str = ""):
        self.origin = origin
        try:
            self._table: PrefixTable[Block] = PrefixTable(blocks, merge=Block.inherit)
        except ValueError as exc:
            raise InventoryError(f"{origin or 'inventory'}: bad block: {exc}") from None
        for block in self._table.values():
            for side in ("src", "dst"):
                columns: dict[str, Any] = {}
                if block.org_unit:
                    columns[f"{side}_org_unit"] = block.org_unit
                if block.asset:
                    columns[f"{side}_asset"] = block.asset
                if block.zone:
                    columns[f"{side}_zone"] = block.zone
                if block.criticality:
                    columns[f"{side}_criticality"] = block.criticality
                block.columns[side] = columns
        self._hosts = {b.hostname: b for b in self._table.values() if b.hostname}
        self._hosts.update({b.hostname.split(".", 1)[0]: b for b in self._table.values() if b.hostname})
    @classmethod
    def load(cls, path: Path) -> Inventory:
        return cls(read_blocks(path), str(path))

    def __len__(self) -> int:
        return len(self._table)

    def blocks(self) -> list[Block]:
        """Every block with what it inherited (the asset and org unit lists of the API read these)."""
        return list(self._table.values())

    def lookup(self, address: str) -> Block | None:
        return self._table.lookup(address)

    def lookup_host(self, name: str) -> Block | None:
        """The block whose `hostname` is this name (case-insensitive; the first label also matches)."""
        name = name.lower()
        return self._hosts.get(name) or self._hosts.get(name.split(".", 1)[0])
