"""Who is calling: roles, clearance and the org unit a user is bound to.

Roles (enforced server-side on every route, see api/deps.py `allow`):
- operator: reads dashboards data, incidents, alerts, events
- responder: works incidents and alerts, exports
- auditor: reads everything including the audit log, runs replays, changes nothing else
- admin: users, tokens, rules — and, separation of duties (三员分立), not the audit log
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.schema import FIELD_BY_NAME, Sensitivity


class Role(StrEnum):
    OPERATOR = "operator"
    RESPONDER = "responder"
    AUDITOR = "auditor"
    ADMIN = "admin"


# what each role sees unmasked unless its user is given another clearance
DEFAULT_CLEARANCE = {
    Role.OPERATOR: Sensitivity.INTERNAL,
    Role.RESPONDER: Sensitivity.SENSITIVE,
    Role.AUDITOR: Sensitivity.SECRET,
    Role.ADMIN: Sensitivity.INTERNAL,
}

READERS = (Role.OPERATOR, Role.RESPONDER, Role.AUDITOR, Role.ADMIN)
WORKERS = (Role.RESPONDER,)
EXPORTERS = (Role.RESPONDER, Role.AUDITOR)
AUDITORS = (Role.AUDITOR,)
REPLAYERS = (Role.AUDITOR, Role.ADMIN)
ADMINS = (Role.ADMIN,)
MASK = "***"
KEYED_FIELDS = frozenset({"entity", "group_key"})


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role
    org_unit: str  # "" = the whole network
    clearance: Sensitivity
    token_id: str

    def sees_unit(self, unit: str) -> bool:
        return not self.org_unit or unit == self.org_unit or unit.startswith(self.org_unit + "/")

    def mask(self, record: dict[str, Any]) -> dict[str, Any]:
        """A copy with every schema field above this caller's clearance masked (names outside the schema pass:
        they are Ganzhi's own, e.g. incident fields). `extra` and `raw` are sensitive as a whole."""
        out = {}
        for key, value in record.items():
            spec = FIELD_BY_NAME.get(key)
            if spec is not None and spec.sensitivity > self.clearance and value:
                value = MASK
            elif key in KEYED_FIELDS and isinstance(value, str):
                value = self._mask_keyed(value)
            out[key] = value
        return out

    def _mask_keyed(self, text: str) -> str:
        """`user_name=alice` style values (alert entities, incident group keys; correlations join several with
        ", ") mask like the field they name; a name outside the schema (a Sigma field) counts as sensitive."""
        parts = []
        for part in text.split(", "):
            name, sep, _ = part.partition("=")
            if sep:
                spec = FIELD_BY_NAME.get(name)
                level = spec.sensitivity if spec is not None else Sensitivity.SENSITIVE
                if level > self.clearance:
                    part = f"{name}={MASK}"
            parts.append(part)
        return ", ".join(parts)
