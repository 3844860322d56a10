"""Sigma rule packs, the field-mapping pipeline and golden events per rule. Not built yet: see issue 10."""
