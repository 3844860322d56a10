"""Necessary literals: a multi-pattern prefilter in front of each rule's exact SQL.

For a rule condition, `necessary()` finds clauses of (field, literal) pairs such that whenever the condition
holds, each clause has a pair whose field contains its literal (compared lower-cased): a conjunction of
alternatives. Before running the rules over a set of rows, the engine asks which literals occur there at all —
one query, one Hyperscan pass (`multiMatchAllIndices`) over every rule's literals — and then plans and runs
only the rules each of whose clauses had a literal occur, plus those without literals. Why this pays:
ClickHouse analyses and plans a query anew each time, and for the 1,415 Windows process-creation rules that
alone takes ~9 s on this machine, whatever the number of rows; a live batch of ordinary activity holds the
literals of a few percent of the rules. (A live batch still in memory is searched by the native module instead,
for the same literals: pipeline.native.literal_scanner.) The exact conditions still decide, so results are those
of the plain SQL (tests compare both on the SigmaHQ set).

Derivation, on the condition tree after field mapping:
- a string match (equality, wildcard pattern, `|cased`) needs its longest wildcard-free piece in the field,
  an expansion of values (`|windash`, `|base64offset`) one of theirs;
- a keyword needs its piece in `raw` or `message` (where the backend searches keywords);
- AND needs every clause of every operand (it holds only if they all do);
- OR needs one clause: the union of each branch's most selective clause (any branch may be the one that
  holds, and a branch that holds satisfies all its clauses);
- a regular expression needs the literal runs it cannot match without (`regex_clauses`);
- NOT, CIDR, numbers, existence and field references need nothing derivable: a rule whose condition has
  such a branch under an OR gets no prefilter and is evaluated on every row.
Literals are runs of ASCII and of caseless characters (a value's other characters split it): the row's field
is lower-cased with lowerUTF8, the folding the exact SQL uses; on ASCII that is plain lower-casing, and a
caseless character (CJK, emoji, symbols and punctuation: no upper or lower form) is left as it is by every
folding, so the prefilter can never drop a row the exact SQL would match. A cased non-ASCII letter (É, Д, ß,
the Kelvin sign ...) splits the run, as foldings may disagree on it. (Without the caseless characters, the four
SigmaHQ emoji rules had no literal and cost ~0.4 s of planning in every live batch.)
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import SigmaExpansion, SigmaNumber, SigmaRegularExpression, SigmaString, SpecialChars

from pipeline.detect.backend import Field, regex_sql, sql_string

Need = frozenset[tuple[str, str]]  # alternatives: (SQL expression of the field's text, lower-case literal)
Needs = tuple[Need, ...]  # clauses, all of which a match satisfies
TEXT_KINDS = ("str", "lcstr", "strs", "extra")
# categories of characters without case that no folding changes (letters only where they have no case forms)
# (marks and format characters too: the emoji variation selector U+FE0F and joiner U+200D)
_CASELESS_CATEGORIES = frozenset({"Lo", "So", "Sm", "Sc", "Sk", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Pc", "Mn", "Mc",
                                  "Me", "Cf", "Zs", "Nd", "No", "Lm"})
KEYWORD_FIELDS = ("`raw`", "`message`")
_COLUMN = re.compile(r"`([^`]+)`")  # the column a field's SQL reads


def necessary(node: Any) -> Needs | None:
    """What the condition needs (None: nothing derivable, evaluate it on every row)."""
    if isinstance(node, ConditionFieldEqualsValueExpression):
        field = Field(node.field)
        if isinstance(node.value, SigmaRegularExpression):
            clauses = regex_clauses(regex_sql(node.value)) if field.kind in TEXT_KINDS else []
            return tuple(frozenset((field.text(), x) for x in clause) for clause in clauses) or None
        # an expansion (windash, base64offset) is an OR of its values
        values = node.value.values if isinstance(node.value, SigmaExpansion) else [node.value]
        if field.kind not in TEXT_KINDS or not values or not all(isinstance(v, SigmaString) for v in values):
            return None
        pieces = [longest_piece(v) for v in values]
        return (frozenset((field.text(), piece) for piece in pieces),) if all(pieces) else None
    if isinstance(node, ConditionValueExpression):
        value = node.value
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value))
        piece = longest_piece(value) if isinstance(value, SigmaString) else ""
        return (frozenset((f, piece) for f in KEYWORD_FIELDS),) if piece else None
    if isinstance(node, ConditionOR):
        branches = [necessary(arg) for arg in node.args]
        if not branches or any(b is None for b in branches):
            return None
        return (frozenset().union(*(min(b, key=_cost) for b in branches)),)  # type: ignore[arg-type]
    if isinstance(node, ConditionAND):
        clauses = {c for n in (necessary(arg) for arg in node.args) if n is not None for c in n}
        return tuple(sorted(clauses, key=_cost)) if clauses else None
    return None  # NOT, and anything the derivation does not cover


def caseless(char: str) -> bool:
    """A non-ASCII character every case folding leaves as it is (see the module docstring)."""
    return (char.lower() == char == char.upper() and len(char.encode()) > 1
            and unicodedata.category(char) in _CASELESS_CATEGORIES)


def _split_cased(text: str) -> list[str]:
    """`text` cut at every non-ASCII character that has case forms."""
    runs, current = [], []
    for char in text:
        if char.isascii() or caseless(char):
            current.append(char)
        else:
            runs.append("".join(current))
            current = []
    runs.append("".join(current))
    return runs


def longest_piece(value: SigmaString) -> str:
    """The longest run of text between wildcards (and cased non-ASCII characters), lower-cased."""
    pieces, current = [], []
    for part in value.s:
        if isinstance(part, str):
            current.append(part)
        elif part in (SpecialChars.WILDCARD_MULTI, SpecialChars.WILDCARD_SINGLE):
            pieces.append("".join(current))
            current = []
        else:  # an unresolved placeholder: nothing certain about the text
            return ""
    pieces.append("".join(current))
    runs = [run for piece in pieces for run in _split_cased(piece)]
    return max(runs, key=len).lower()


_PARSER = re._parser  # type: ignore[attr-defined]  # the stdlib's own regex parser (3.11+)
_C = re._constants  # type: ignore[attr-defined]
_REPEATS = (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT)
MAX_REGEX_CLAUSES = 3  # the longest runs of a regex are enough to select it; more only grow the literal database
# Syntax where RE2 (ClickHouse's `match`) and Python's parser read the same text differently: POSIX classes
# ([[:alpha:]] is a class to RE2 but a class then a literal "]" to Python) and verbose mode (whitespace)
_UNSURE_SYNTAX = re.compile(r"\[:|\(\?[a-zA-Z-]*x")
_FOLDS_INTO_ASCII = re.compile("[kKsS]")  # RE2's (?i) folds k with the Kelvin sign, s with the long s


def regex_clauses(pattern: str) -> list[frozenset[str]]:
    """Literals a regular expression cannot match without, as clauses of alternatives (lower-cased), from its
    parse tree: the literal runs of its top-level sequence, and of groups, repeats of at least one and
    alternations inside it. Empty when the pattern gives nothing certain (or Python's parser does not read it
    the way RE2 does, then it claims nothing). Under (?i) a run also breaks at k and s, which RE2 matches
    against non-ASCII letters."""
    if _UNSURE_SYNTAX.search(pattern):
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = _PARSER.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError):
        return []
    folds = bool(parsed.state.flags & re.IGNORECASE)
    clauses = set(_sequence_clauses(list(parsed), folds))
    return sorted(clauses, key=lambda c: (*_literals_cost(c), sorted(c)))[:MAX_REGEX_CLAUSES]


def _sequence_clauses(items: list[tuple[Any, Any]], folds: bool) -> list[frozenset[str]]:
    clauses: list[frozenset[str]] = []
    run: list[str] = []

    def cut() -> None:
        text = "".join(run)
        run.clear()
        pieces = [p for p in _split_cased(text) for p in (_FOLDS_INTO_ASCII.split(p) if folds else [p]) if p]
        clauses.extend(frozenset({p.lower()}) for p in pieces if len(p) > 1 or len(pieces) == 1)

    for op, arg in items:
        if op is _C.LITERAL:
            run.append(chr(arg))
            continue
        cut()
        if op is _C.SUBPATTERN:
            _group, add_flags, _del_flags, body = arg
            clauses.extend(_sequence_clauses(list(body), folds or bool(add_flags & re.IGNORECASE)))
        elif op is _C.ATOMIC_GROUP:
            clauses.extend(_sequence_clauses(list(arg), folds))
        elif op in _REPEATS and arg[0] >= 1:  # the body occurs at least once
            clauses.extend(_sequence_clauses(list(arg[2]), folds))
        elif op is _C.BRANCH:  # one branch matches: its most selective clause, from every branch
            branches = [_sequence_clauses(list(b), folds) for b in arg[1]]
            if branches and all(branches):
                clauses.append(frozenset().union(*(min(b, key=_literals_cost) for b in branches)))
        # anything else (classes, any, anchors, lookarounds, back references) consumes no certain literal
    cut()
    return clauses


def _literals_cost(alternatives: Collection[str]) -> tuple[int, int]:
    """Fewer alternatives first, then longer (more selective) shortest literal."""
    return len(alternatives), -min(map(len, alternatives))


def _cost(need: Need) -> tuple[int, int, list[tuple[str, str]]]:
    """_literals_cost (a list: one literal in two fields is two alternatives), ties broken by the clause itself:
    clauses come out of sets, whose order changes with each process's string hashing, and a rule set must
    compile to the same SQL in every process."""
    return (*_literals_cost([literal for _, literal in need]), sorted(need))


def hyperscan_literal(text: str) -> str:
    """A literal as a Hyperscan pattern: ASCII other than letters and digits written as \\xHH; non-ASCII characters
    (never pattern syntax) as they are, so their UTF-8 bytes match whether or not the pattern is read as UTF-8."""
    return "".join(c if c.isalnum() or not c.isascii() else f"\\x{ord(c):02x}" for c in text)


@dataclass(frozen=True)
class LiteralIndex:
    """Every necessary literal of a list of rules: one query finds which of them occur in a set of rows.

    All literals go into one Hyperscan database (compiled once per process, ~2.5 s for SigmaHQ's 15 k, then
    cached by ClickHouse) matched against one text per row: the fields the literals belong to, joined. That a
    literal may then be found in another field than its own only adds candidates, never loses one."""

    haystack: str  # SQL: the lower-cased text of a row searched for the literals
    keys: tuple[str, ...]  # the event fields that text is made of (`extra`: every value of the map)
    literals: tuple[str, ...]
    owners: tuple[tuple[tuple[int, int], ...], ...]  # per literal: (rule position, clause number) it serves
    clauses: tuple[int, ...]  # per rule position: how many clauses it has (0: no prefilter)

    @cached_property
    def found_sql(self) -> str:
        """An aggregate: the 1-based numbers of the literals some row contains (~0.8 MB of SQL for SigmaHQ: built
        once)."""
        if not self.literals:
            return "CAST([], 'Array(UInt64)')"
        patterns = ", ".join(sql_string(hyperscan_literal(x)) for x in self.literals)
        return f"groupUniqArrayArray(multiMatchAllIndices({self.haystack}, [{patterns}]))"

    def rules_found(self, found: Sequence[int]) -> set[int]:
        """The positions of the rules each of whose clauses has a literal among `found` (the answer to
        `found_sql`)."""
        satisfied: dict[int, set[int]] = defaultdict(set)
        for i in found:
            for position, clause in self.owners[i - 1]:
                satisfied[position].add(clause)
        return {position for position, met in satisfied.items() if len(met) == self.clauses[position]}


def literal_index(needs: Sequence[Sequence[Sequence[tuple[str, str]]] | None]) -> LiteralIndex:
    owners: dict[str, set[tuple[int, int]]] = defaultdict(set)
    fields: set[str] = set()
    for position, clauses in enumerate(needs):
        for number, clause in enumerate(clauses or ()):
            for field_sql, literal in clause:
                owners[literal].add((position, number))
                fields.add(field_sql)
    # an `extra` key's value is found among all the map's values
    parts = sorted(f for f in fields if not f.startswith("extra["))
    if any(f.startswith("extra[") for f in fields):
        parts.append("arrayStringConcat(mapValues(extra), '\\n')")
    keys = sorted({"extra" if f.startswith("extra[") else _COLUMN.search(f)[1] for f in fields})  # type: ignore[index]
    joined = ", '\\n', ".join(parts)  # one line per field (a literal across two only adds a candidate)
    haystack = f"lowerUTF8(concat({joined}, ''))" if parts else "''"
    literals = tuple(sorted(owners))
    return LiteralIndex(haystack, tuple(keys), literals, tuple(tuple(sorted(owners[x])) for x in literals),
                        tuple(len(c or ()) for c in needs))
