"""The literal prefilter: what a rule needs, and that the engine with it finds what the plain SQL finds."""

from __future__ import annotations

from pipeline import native
from pipeline.detect.compile import CompiledRule, compile_sources, rule_files
from pipeline.detect.engine import Detector, Selector
from pipeline.detect.prefilter import hyperscan_literal, regex_clauses
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
    # a NOT branch under OR, a regular expression without a literal, a value without ASCII text: evaluate the
    # rule on every row
    assert _needs("""  a:
    Image|endswith: '\\\\cmd.exe'
  b:
    User: 'SYSTEM'
  condition: a or not b
""") is None
    assert _needs("""  sel:
    CommandLine|re: '[a-z]+\\d{2,}'
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
    assert _contains("['🔥', '🛡️']") == ((("`process_command_line`", "🔥"), ("`process_command_line`", "🛡\ufe0f")),)
    # ... as are the emoji presentation selector U+FE0F and the joiner U+200D (marks and format characters)
    assert _contains("'Ⓜ️'") == ((("`process_command_line`", "\ufe0f"),),)  # a circled M has case forms


def test_regular_expressions_need_their_literal_runs() -> None:
    assert regex_clauses(r"ipconfig\s+/all") == [frozenset({"ipconfig"}), frozenset({"/all"})]
    # groups, repeats of at least one, alternations (each branch's best), but not optional parts
    assert regex_clauses(r"(?:Invoke-|iex)(Expression)+x?yz") == [
        frozenset({"expression"}), frozenset({"yz"}), frozenset({"invoke-", "iex"})]
    assert regex_clauses(r"(abc)?d{0,3}[ef]") == []
    # under (?i) RE2 matches k and s against the Kelvin sign and the long s: runs break there
    assert regex_clauses(r"(?i)kerberos") == [frozenset({"erbero"})]
    assert regex_clauses(r"kerberos") == [frozenset({"kerberos"})]
    assert regex_clauses(r"x(?i:desk)y") == [frozenset({"de"}), frozenset({"x"}), frozenset({"y"})]
    # where Python's parser may read the text otherwise than RE2: POSIX classes, verbose mode; errors
    assert regex_clauses(r"[[:alpha:]]]abc") == []
    assert regex_clauses(r"(?x) a b c") == []
    assert regex_clauses(r"ab(?") == []
    assert regex_clauses(r"\Qa.b\E") == []
    assert _needs("""  sel:
    CommandLine|re|i: 'Mimi.?katz'
  condition: sel
""") == ((("`process_command_line`", "mimi"),), (("`process_command_line`", "atz"),))


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
        "r7.yml": HEAD.format(id="00000000-0000-0000-0000-000000000017") + """  sel:
    CommandLine|re|i: 'who(ami|ami\\.exe) /(all|priv)'
  condition: sel
""",
        "r8.yml": HEAD.format(id="00000000-0000-0000-0000-000000000018") + """  sel:
    CommandLine|re: 'MimiKatz|sekurlsa::'
  condition: sel
""",
    }
    ruleset = compile_sources(rules)
    assert not ruleset.errors and all(r.needs for r in ruleset.rules)
    lines = ['"C:\\Windows\\System32\\CMD.EXE" /c whoami /all', "cmd /c echo 100% done", "x a_b y", "x aXb y",
             "copy C:\\TEMP\\X.EXE .", "copy C:\\TEMP\\Y.EXE .", "sekurlsa::logonpasswords # MimiKatz", "dir",
             "net localgroup 管理员ADMIN组 u /add", "net localgroup 管理员admin u /add", "echo 🔥BURN it",
             "echo 🔥 burn", "echo \u203c\ufe0f done", "echo \u203c done", "WhoAmI /PRIV", "run mimikatz now",
             "ДИР & WhoAmI /all"]
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
    # a live batch in memory: the native module searches the events' fields for the literals, ClickHouse only
    # those it cannot lower-case for certain (the Cyrillic line); both find the same literals
    detector, batch = Detector(embedded_store, ruleset), Selector.batch(events)
    assert {(h.rule_id, h.event_id) for h in detector.run_live(batch, events)} == plain
    if native.available():
        found, unsure = detector._literal_scan(events)
        assert {events[i]["process_command_line"] for i in unsure} == {lines[-1]}
        sure = [e for i, e in enumerate(events) if i not in unsure]
        assert sorted(found) == sorted(detector._found_literals(Selector.batch(sure), None))
        assert set(detector._literals.keys) == {"extra", "process_command_line", "process_image", "raw", "message"}
        every_literal = " ".join(detector._literals.literals)  # in a field no rule reads: nothing found
        assert detector._literal_scan([{"host_name": every_literal}]) == ([], [])
        assert len(detector._literal_scan([{"raw": every_literal}])[0]) == len(detector._literals.literals)
    per_rule = {rid: sum(1 for r, _ in plain if r == rid) for rid in (r.rule_id for r in ruleset.rules)}
    # r1: the CMD.EXE whoami line with the cmd.exe image; r2: 100%, a_b (not aXb), C:\TEMP\X.EXE, 2 images each;
    # r3: extra IntegrityLevel HIGH on even lines; r4: the MimiKatz line, 2 images; r5: the 管理员ADMIN组 line;
    # r6: 🔥BURN (case-insensitive after the emoji) and ‼️, 2 images each; r7 (a case-insensitive regex): whoami /all
    # and WhoAmI /PRIV; r8 (a case-sensitive one): MimiKatz, not mimikatz; the Cyrillic line for r1, r3 and r7
    assert list(per_rule.values()) == [3, 6, 18, 4, 2, 4, 6, 2], per_rule


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


def _sigmahq_regexes() -> list[str]:
    """Every regular expression of the SigmaHQ rules, as `match` gets it (with Sigma's flags inline)."""
    from sigma.collection import SigmaCollection
    from sigma.rule import SigmaDetection, SigmaRule
    from sigma.types import SigmaRegularExpression

    from pipeline.detect.backend import regex_sql
    from tests.conftest import SHARED_DATA

    def walk(item: object) -> list[str]:
        if isinstance(item, SigmaDetection):
            return [p for sub in item.detection_items for p in walk(sub)]
        return [regex_sql(v) for v in getattr(item, "value", []) if isinstance(v, SigmaRegularExpression)]

    folders = sorted((SHARED_DATA / "sigma" / "sigmahq").glob("rules*"))
    out: set[str] = set()
    for path in rule_files(folders):
        for rule in SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_errors=True).rules:
            if isinstance(rule, SigmaRule) and not rule.errors:
                out.update(p for d in rule.detection.detections.values() for p in walk(d))
    return sorted(out)


OWN_REGEXES = [r"(?i)kerberos.{0,9}tgt", r"(?i)s\w+ass", r"ipconfig\s+/all", r"(?i)(?:iex|invoke-expression)\s*\(",
               r"(?s)a.b|c(d)+e", r"-[Ee]nc(odedCommand)?\s+[A-Za-z0-9+/=]{20,}", r"管理员(?i:admin)"]


def test_regex_literals_occur_in_whatever_clickhouse_matches(embedded_store) -> None:
    """The property the prefilter rests on, checked against RE2 itself (ClickHouse's `match`): a text the
    pattern matches contains, lower-cased with lowerUTF8, a literal of every clause. Texts are generated from
    SigmaHQ's own regexes, then case-flipped or given the letters (?i) folds into ASCII (Kelvin sign, long s)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    sigmahq = _sigmahq_regexes()  # none without ../shared: the own ones still run
    patterns = [p for p in OWN_REGEXES + sigmahq if regex_clauses(p)]
    assert all(regex_clauses(p) for p in OWN_REGEXES) and (not sigmahq or len(patterns) > 100)
    twists = [lambda s: s, str.swapcase, str.upper, lambda s: s.replace("k", "\u212a").replace("K", "\u212a"),
              lambda s: s.replace("s", "\u017f").replace("S", "\u017f"), lambda s: f"Ⅹ{s}\u0130"]
    matched = []

    @settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        pattern = data.draw(st.sampled_from(patterns))
        base = data.draw(st.from_regex(pattern, fullmatch=False), label="text")
        texts = [twist(base) for twist in twists]
        rows = embedded_store.query("SELECT match(x, {p:String}), lowerUTF8(x) FROM "
                                    "(SELECT arrayJoin({xs:Array(String)}) AS x)", {"p": pattern, "xs": texts}).rows
        for (hit, lowered), text in zip(rows, texts, strict=True):
            if hit:
                matched.append(text)
                missing = [c for c in regex_clauses(pattern) if not any(x in lowered for x in c)]
                assert not missing, (pattern, text, missing)

    check()
    assert len(matched) > 1000  # the texts mostly match: the property was tested, not skipped


_NEEDS_DIGEST = """
import hashlib, sys
from pathlib import Path
from pipeline.detect.compile import compile_rules
from pipeline.detect.engine import Detector
from rules import PACK
folders = sorted(Path(sys.argv[1]).glob("rules*"))
detector = Detector(None, compile_rules([*folders, PACK]))
print(hashlib.sha256(repr([(r.rule_id, r.needs) for r in detector.alerting]).encode()
                     + detector._literals.found_sql.encode()).hexdigest())
"""


def test_the_prefilter_is_the_same_in_every_process() -> None:
    """Auditors rerun a rule set in other processes: the literals it searches (and so the SQL) must not depend on
    Python's per-process string hashing, which orders sets; equal-cost choices break ties on the literals."""
    import os
    import subprocess
    import sys

    from tests.conftest import SHARED_DATA

    digests = {subprocess.run([sys.executable, "-c", _NEEDS_DIGEST, str(SHARED_DATA / "sigma" / "sigmahq")],
                              env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True,
                              check=True).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_log_source_filters_read_only_what_the_in_memory_check_knows() -> None:
    from pipeline.detect.compile import compile_rules
    from pipeline.detect.engine import reads_only_logsource_columns
    from rules import PACK

    sources = {r.logsource for r in compile_rules([PACK]).rules}
    assert sources and all(reads_only_logsource_columns(s) for s in sources)
    assert reads_only_logsource_columns("source_type = 'windows' AND lowerUTF8(extra['Channel']) IN ('a', 'b''c')")
    assert not reads_only_logsource_columns("dst_port = 22")
    assert not reads_only_logsource_columns("lowerUTF8(extra['EventID']) = '1'")
    assert not reads_only_logsource_columns("source_type = 'x' OR host_name = 'source_type'")


def test_log_sources_of_a_batch_in_memory_and_in_clickhouse_agree(embedded_store) -> None:  # type: ignore[no-untyped-def]
    """Which log sources a live batch has rows of, from its distinct (source_type, event_category, Channel) in
    memory, is what the scan of its stored rows says, for every log source of SigmaHQ and the pack."""
    from pipeline.detect.compile import compile_rules
    from rules import PACK
    from tests.conftest import SHARED_DATA

    ruleset = compile_rules([*sorted((SHARED_DATA / "sigma" / "sigmahq").glob("rules*")), PACK])
    detector = Detector(embedded_store, ruleset)
    kinds = [("windows", "process_creation", "Microsoft-Windows-Sysmon/Operational"),
             ("windows", "windows_event", "Security"),
             ("windows", "ps_script", "microsoft-windows-powershell/operational"), ("windows", "windows_event", ""),
             ("zeek_dns", "dns", ""), ("nginx_access", "http", ""), ("squid", "http", ""), ("sshd", "auth", ""),
             ("linux", "process_creation", ""), ("zeek_conn", "network_connection", "")]
    events = [normalize({"ts": 1_714_550_400_000 + i, "event_id": event_id("ls", str(i), i), "sensor": "t",
                         "source_type": st, "event_category": cat, **({"extra": {"Channel": ch}} if ch else {})})
              for i, (st, cat, ch) in enumerate(kinds * 3)]
    embedded_store.insert_events(events)
    batch, sources = Selector.batch(events), [source for source, _ in detector.groups]
    in_memory = detector.sources_present(batch, sources, events).result()
    assert 5 < sum(in_memory) < len(sources) // 2  # some log sources have rows, most do not
    assert in_memory == detector.sources_present(batch, sources, None).result()
