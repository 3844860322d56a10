"""Grafana dashboards as code and their provisioning. Not built yet: see issue 9."""
