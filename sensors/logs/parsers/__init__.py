"""Parsers, one module per log family; each maps into the schema through rules.mapping."""
