"""Detection: Sigma rules compiled to ClickHouse SQL (backend.py), run live per batch and over history."""
