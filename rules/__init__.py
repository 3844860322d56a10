"""Sigma rule packs, the field-mapping pipeline (mapping.py) and golden test events per rule.

`rules/ganzhi/` is Ganzhi's own pack for a government extranet; each rule file `x.yml` has its golden
events in `x.tests.yml`. SigmaHQ rules are not copied here: `ganzhi rules import PATH` takes a checkout.
"""

from pathlib import Path

PACK = Path(__file__).parent / "ganzhi"
