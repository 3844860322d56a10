"""The literal prefilter: what a rule needs, and that the engine with it finds what the plain SQL finds."""

from __future__ import annotations

from pipeline.detect.compile import CompiledRule, compile_sources
from pipeline.detect.engine import Detector, Selector
from pipeline.detect.prefilter import hyperscan_literal
from pipeline.schema import event_id, normalize

HEAD = """title: t
id: {id}
status: test
logsource: {{product: windows, category: process_creation}}
level: high
detection:
"""


def _needs(detection: str, rule_id: str = "00000000-0000-0000-0000-000000000001") -> object:
    ruleset = compile_sources({"r.yml": HEAD.format(id=rule_id) + detection})
    assert not ruleset.errors, ruleset.errors
    return ruleset.rules[0].needs


def _contains(value: str) -> object:
    """What a rule needs whose one condition is `CommandLine|contains: <value>` (a YAML scalar or list)."""
    return _needs(f"  sel:\n    CommandLine|contains: {value}\n  condition: sel\n")


def test_and_needs_a_literal_of_each_operand() -> None:
    needs = _needs("""  sel:
    CommandLine|contains: 'whoami'
    Image|endswith: '\\\\net.exe'
  condition: sel
""")
    # the most selective clause first
    assert needs == ((("`process_image`", "\\net.exe"),), (("`process_command_line`", "whoami"),))


def test_or_and_lists_take_the_union() -> None:
    needs = _needs("""  a:
    CommandLine|contains|all: ['-enc', 'hidden']
  b:
    Image|endswith: ['\\\\psexec.exe', '\\\\paexec.exe']
  condition: a or b
""")
    # an OR branch gives its most selective clause ('hidden' over '-enc' of the |all)
    assert needs == ((("`process_command_line`", "hidden"), ("`process_image`", "\\paexec.exe"),
                      ("`process_image`", "\\psexec.exe")),)


def test_wildcards_keep_the_longest_plain_piece() -> None:
    assert _needs("""  sel:
    CommandLine: '*a*certutil?*'
  condition: sel
""") == ((("`process_command_line`", "certutil"),),)


def test_nothing_derivable_means_no_prefilter() -> None:
    # a NOT branch under OR, a regular expression, a value without ASCII text: evaluate the rule on every row
    assert _needs("""  a:
    Image|endswith: '\\\\cmd.exe'
  b:
    User: 'SYSTEM'
  condition: a or not b
""") is None
    assert _needs("""  sel:
    CommandLine|re: 'who.mi'
  condition: sel
""") is None
    assert _contains("'Администратор'") is None  # cased non-ASCII letters only: foldings may disagree on them
    assert _contains("'adminÉcole'") == ((("`process_command_line`", "admin"),),)
    # ... while AND with a NOT still needs what its positive side needs
    assert _needs("""  a:
    Image|endswith: '\\\\cmd.exe'
  b:
    User: 'SYSTEM'
  condition: a and not b
""") == ((("`process_image`", "\\cmd.exe"),),)


def test_caseless_characters_are_literals_too() -> None:
    # CJK, emoji, symbols: no case forms, every folding leaves them as they are
    assert _contains("'管理员'") == ((("`process_command_line`", "管理员"),),)
    assert _contains("'管理员Admin组'") == ((("`process_command_line`", "管理员admin组"),),)
    # the emoji presentation selector U+FE0F (a combining mark) splits
    assert _contains("['🔥', '🛡️']") == ((("`process_command_line`", "🔥"), ("`process_command_line`", "🛡")),)


def test_keywords_need_the_raw_record_or_the_message() -> None:
    assert _needs("""  keywords:
    - 'mimikatz'
  condition: keywords
""") == ((("`message`", "mimikatz"), ("`raw`", "mimikatz")),)


def test_hyperscan_literals_are_escaped() -> None:
    assert hyperscan_literal("a.b\\c*d(") == "a\\x2eb\\x5cc\\x2ad\\x28"
    assert hyperscan_literal("管理员🔥(") == "管理员🔥\\x28"


def test_prefilter_and_plain_sql_find_the_same(embedded_store) -> None:
    """Case, wildcards, escapes, extra fields and keywords: every row either way, with and without it."""
    rules = {
        "r1.yml": HEAD.format(id="00000000-0000-0000-0000-000000000011") + """  sel:
    CommandLine|contains: 'WhoAmI'
    Image|endswith: '\\\\cmd.exe'
  condition: sel
""",
        "r2.yml": HEAD.format(id="00000000-0000-0000-0000-000000000012") + """  sel:
    CommandLine|contains: ['100%', 'a_b', 'c:\\\\temp\\\\x.exe']
  condition: sel
""",
        "r3.yml": HEAD.format(id="00000000-0000-0000-0000-000000000013") + """  sel:
    IntegrityLevel: 'High'
  condition: sel
""",
        "r4.yml": HEAD.format(id="00000000-0000-0000-0000-000000000014") + """  keywords:
    - 'MIMIKATZ'
  condition: keywords
""",
        "r5.yml": HEAD.format(id="00000000-0000-0000-0000-000000000015") + """  sel:
    CommandLine|contains: '管理员Admin组'
  condition: sel
""",
        "r6.yml": HEAD.format(id="00000000-0000-0000-0000-000000000016") + """  sel:
    CommandLine|contains: ['🔥burn', '‼️']
  condition: sel
""",
    }
    ruleset = compile_sources(rules)
    assert not ruleset.errors and all(r.needs for r in ruleset.rules)
    lines = ['"C:\\Windows\\System32\\CMD.EXE" /c whoami /all', "cmd /c echo 100% done", "x a_b y", "x aXb y",
             "copy C:\\TEMP\\X.EXE .", "copy C:\\TEMP\\Y.EXE .", "sekurlsa::logonpasswords # MimiKatz", "dir",
             "net localgroup 管理员ADMIN组 u /add", "net localgroup 管理员admin u /add", "echo 🔥BURN it",
             "echo 🔥 burn", "echo \u203c\ufe0f done", "echo \u203c done"]
    events = []
    for i, line in enumerate(lines):
        for image in ("C:\\Windows\\System32\\cmd.exe", "C:\\x\\powershell.exe"):
            events.append(normalize({
                "ts": 1_714_550_400_000 + len(events), "event_id": event_id("t", line + image, i), "sensor": "t",
                "source_type": "windows", "event_category": "process_creation", "process_command_line": line,
                "process_image": image, "raw": line, "extra": {"IntegrityLevel": ("HIGH", "Low")[i % 2]}}))
    embedded_store.insert_events(events)
    everything = Selector(0, 2**41)
    plain = {(h.rule_id, h.event_id) for h in Detector(embedded_store, ruleset, prefilter=False).run_rules(everything)}
    filtered = {(h.rule_id, h.event_id) for h in Detector(embedded_store, ruleset).run_rules(everything)}
    assert filtered == plain
    per_rule = {rid: sum(1 for r, _ in plain if r == rid) for rid in (r.rule_id for r in ruleset.rules)}
    # r1: the CMD.EXE whoami line with the cmd.exe image; r2: 100%, a_b (not aXb), C:\TEMP\X.EXE, 2 images each;
    # r3: extra IntegrityLevel HIGH on even lines; r4: the MimiKatz line, 2 images; r5: the 管理员ADMIN组 line;
    # r6: 🔥BURN (case-insensitive after the emoji) and ‼️, 2 images each
    assert list(per_rule.values()) == [1, 6, 14, 2, 2, 4], per_rule


def test_expanded_values_take_the_union() -> None:
    # windash expands '-encodedcommand' into its dash variants, OR-linked
    needs = _needs("""  sel:
    CommandLine|windash|contains: '-encodedcommand'
  condition: sel
""")
    assert needs is not None and len(needs) == 1 and len(needs[0]) >= 2
    # the Unicode dashes are caseless punctuation: part of their literal
    assert {literal for _, literal in needs[0]} >= {"-encodedcommand", "/encodedcommand", "\u2013encodedcommand",
                                                    "\u2014encodedcommand", "\u2015encodedcommand"}


def test_a_rule_is_a_candidate_only_when_each_clause_has_a_literal_found() -> None:
    from pipeline.detect.prefilter import literal_index

    f = "`process_command_line`"
    index = literal_index([(((f, "whoami"),), ((f, "net.exe"), (f, "net1.exe"))),  # whoami AND (net or net1)
                           (((f, "whoami"), (f, "certutil")),),  # whoami OR certutil
                           None])  # no prefilter: never in the index, always run
    number = {literal: i + 1 for i, literal in enumerate(index.literals)}
    assert index.rules_found([number["whoami"]]) == {1}
    assert index.rules_found([number["net1.exe"]]) == set()
    assert index.rules_found([number["whoami"], number["net1.exe"]]) == {0, 1}
    assert index.rules_found([number["certutil"], number["net.exe"]]) == {1}


def test_small_groups_share_one_scan_and_keep_their_log_sources() -> None:
    from pipeline.detect.engine import SMALL_GROUP, merge_small_groups

    def rule(n: int, source: str) -> CompiledRule:
        return CompiledRule(rule_id=f"r{n}", title="t", level="high", tags=(), where=f"x = {n}", logsource=source,
                            path="p")

    big = [rule(100 + i, "source_type = 'windows'") for i in range(SMALL_GROUP + 1)]
    groups = [("source_type = 'windows'", big), ("event_category = 'dns'", [rule(1, "event_category = 'dns'")]),
              ("event_category = 'tls'", [rule(2, "event_category = 'tls'")])]
    merged = merge_small_groups(groups)
    assert merged[0] == groups[0]
    source, rules = merged[1]
    assert source == "(event_category = 'dns') OR (event_category = 'tls')"
    assert [r.where for r in rules] == ["(event_category = 'dns') AND (x = 1)", "(event_category = 'tls') AND (x = 2)"]
    assert merge_small_groups(groups[:2]) == groups[:2]  # one small group: nothing to merge
