"""Runtime configuration: environment variables, overridden by CLI options.

| variable | meaning | default |
|---|---|---|
| GANZHI_HOME | data directory for embedded mode | ./.ganzhi |
| GANZHI_KAFKA | Kafka bootstrap servers (host:port,...) — unset: in-process bus | unset |
| GANZHI_CLICKHOUSE | ClickHouse URL clickhouse://host:9000/db — unset: embedded chDB | unset |
| GANZHI_RETENTION_DAYS | days rows are kept after they were received (0 = forever) | 180 |
| GANZHI_EVENTS_PARTITIONS | partitions of ganzhi.events when Ganzhi creates it | 6 |
| GANZHI_TOPIC_PREFIX | topic names are <prefix>.events, <prefix>.deadletter, <prefix>.alerts | ganzhi |
| GANZHI_INVENTORY | asset inventory (.yaml/.csv) for org unit / asset enrichment | unset |
| GANZHI_IOC | indicator files or directories (CSV, STIX 2.1, MISP JSON), comma-separated | unset |
| GANZHI_GEOIP | MaxMind-format .mmdb databases (country/city, ASN), comma-separated | unset |
| GANZHI_SPOOL_MB | on-disk spool per sensor for Kafka outages, MiB | 1024 |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_RETENTION_DAYS = 180  # MLPS 2.0 level 3: logs kept at least six months
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class UsageProblem(Exception):
    """A problem the user can fix; the message says how (the CLI prints it and exits with 2)."""


class ConfigError(ValueError):
    """Configuration that cannot work; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    home: Path
    kafka: str | None = None
    clickhouse: str | None = None
    database: str = "ganzhi"
    retention_days: int = DEFAULT_RETENTION_DAYS
    events_partitions: int = 6
    topic_prefix: str = "ganzhi"
    inventory: Path | None = None
    ioc: tuple[Path, ...] = ()
    geoip: tuple[Path, ...] = ()
    spool_mb: int = 1024

    @property
    def embedded(self) -> bool:
        return not self.kafka and not self.clickhouse

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        try:
            settings = cls(
                home=Path(env.get("GANZHI_HOME", ".ganzhi")),
                kafka=env.get("GANZHI_KAFKA") or None,
                clickhouse=env.get("GANZHI_CLICKHOUSE") or None,
                retention_days=int(env.get("GANZHI_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)),
                events_partitions=int(env.get("GANZHI_EVENTS_PARTITIONS", 6)),
                topic_prefix=env.get("GANZHI_TOPIC_PREFIX", "ganzhi"),
                inventory=Path(env["GANZHI_INVENTORY"]) if env.get("GANZHI_INVENTORY") else None,
                ioc=_paths(env.get("GANZHI_IOC")),
                geoip=_paths(env.get("GANZHI_GEOIP")),
                spool_mb=int(env.get("GANZHI_SPOOL_MB", 1024)),
            )
        except ValueError as exc:
            raise ConfigError(f"bad numeric environment setting: {exc}") from None
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        if not _IDENT.match(self.database):
            raise ConfigError(f"database name {self.database!r} must be a plain identifier")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.topic_prefix):
            raise ConfigError(f"topic prefix {self.topic_prefix!r} may hold only letters, digits, '.', '_' and '-'")
        if self.retention_days < 0:
            raise ConfigError("retention days must be >= 0 (0 keeps data forever)")
        for path in (self.inventory, *self.ioc, *self.geoip):
            if path is not None and not path.exists():
                raise ConfigError(f"enrichment source {path} does not exist (check GANZHI_INVENTORY/IOC/GEOIP)")
        if self.clickhouse and not self.clickhouse.startswith(("clickhouse://", "clickhouses://")):
            raise ConfigError(f"--clickhouse must look like clickhouse://host:9000/db, got {self.clickhouse!r}")


def _paths(text: str | None) -> tuple[Path, ...]:
    return tuple(Path(p.strip()) for p in (text or "").split(",") if p.strip())
