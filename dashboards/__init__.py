"""Grafana dashboards as code (model.py, definitions.py), rendered to `generated/` and provisioned through the
Grafana HTTP API (provision.py) or Grafana's file provisioning (`provisioning/`)."""
