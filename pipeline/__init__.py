"""Ganzhi's pipeline: event schema, bus, store, writer, and the `ganzhi` CLI."""

__version__ = "0.1.0"
