"""Incidents: alerts grouped by entity and time (correlate.py), worked through a lifecycle (lifecycle.py).

Both read and write the `incidents`, `incident_alerts` and `incident_timeline` tables (pipeline/store/ddl.py)
and nothing else: ClickHouse is the only database.
"""

from pipeline.incidents.model import CLOSED, LEVELS, STATUSES, Incident, IncidentError, IncidentNotFound

__all__ = ["CLOSED", "LEVELS", "STATUSES", "Incident", "IncidentError", "IncidentNotFound"]
