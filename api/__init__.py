"""The responders' API (FastAPI): incidents, alerts, events, rules, replays, assets — behind API tokens,
roles, department isolation, field masking and a hash-chained audit log. `create_app` in api/app.py."""
