"""Sigma -> ClickHouse SQL with Sigma's semantics (a pySigma TextQueryBackend subclass).

Why not the published ClickHouse backend: it compares case-sensitively, breaks `_`/`%` inside IN
lists, fails keyword rules on `hasToken`, and ignores correlation windows (see ../shared/data/README.md).

Semantics pinned here (and by tests/unit/test_sigma_backend.py against ClickHouse itself):
- strings match case-insensitively: equality `lowerUTF8(x) = 'v'`, a prefix or suffix
  `startsWith/endsWith(lowerUTF8(x), 'v')`, other wildcards through `ILIKE` with
  Sigma's `*`/`?` turned into `%`/`_` and literal `%`, `_`, `\\` escaped; `|cased` compares exactly;
- lists are `lowerUTF8(x) IN (...)` of plain literals (no pattern characters involved);
- `re` uses RE2 `match()` with the rule's i/m/s flags; `cidr` is a numeric range on the IPv6 address
  columns and a guarded `isIPAddressInRange` on text (never an error on empty or non-IP text);
- a field without a column is `extra['Name']`; a missing field reads as empty, so a condition on it is
  false and `not` of it true — what Sigma means; numeric comparisons on text are `ifNull(..., 0)`-guarded;
- keywords (field-less values) search `raw` and `message` as substrings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, ClassVar

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.state import ConversionState
from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaFieldReference,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from pipeline.schema import FIELD_BY_NAME

NUMERIC_KINDS = {"u8", "u16", "u32", "u64", "f64"}
_IP_TEXT = "if({c} = toIPv6('::'), '', if(startsWith(IPv6NumToString({c}), '::ffff:') AND " \
           "position(IPv6NumToString({c}), '.') > 0, substring(IPv6NumToString({c}), 8), IPv6NumToString({c})))"
_RE_FLAGS = {SigmaRegularExpressionFlag.IGNORECASE: "i", SigmaRegularExpressionFlag.MULTILINE: "m",
             SigmaRegularExpressionFlag.DOTALL: "s"}
_COMPARE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(value: SigmaString) -> str:
    """The text of a SigmaString without wildcards (Sigma escapes already resolved by pySigma)."""
    return "".join(p if isinstance(p, str) else ("*" if p == SpecialChars.WILDCARD_MULTI else "?") for p in value.s)


def like_pattern(value: SigmaString) -> str:
    """Sigma wildcards -> LIKE pattern; literal %, _ and backslash escaped."""
    out = []
    for part in value.s:
        if part == SpecialChars.WILDCARD_MULTI:
            out.append("%")
        elif part == SpecialChars.WILDCARD_SINGLE:
            out.append("_")
        elif isinstance(part, str):
            out.append(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
        else:
            raise ValueError(f"unresolved placeholder in value {value}")
    return "".join(out)


def _affix_test(value: SigmaString) -> Callable[[str], str] | None:
    """`startswith` / `endswith` (one run of text, a `*` after or before it): a prefix or suffix test on the
    lower-cased text instead of ILIKE, which ClickHouse runs as a regular expression unless the pattern is
    `%text%` (measured on a 50 k-event live batch: its candidate rule scans 345 -> 300 ms of server CPU). It folds
    as equality does (lowerUTF8), and `lowerUTF8(field)` is computed once per query however many rules test it."""
    if len(value.s) != 2:
        return None
    head, tail = value.s
    if head == SpecialChars.WILDCARD_MULTI and isinstance(tail, str):
        function, text = "endsWith", tail
    elif tail == SpecialChars.WILDCARD_MULTI and isinstance(head, str):
        function, text = "startsWith", head
    else:
        return None
    literal = sql_string(text.lower())
    return lambda t: f"{function}(lowerUTF8({t}), {literal})"


def regex_sql(value: SigmaRegularExpression) -> str:
    """The pattern `match` gets (RE2 syntax): Sigma's flags written inline in front."""
    flags = "".join(sorted(_RE_FLAGS[f] for f in value.flags if f in _RE_FLAGS))
    return (f"(?{flags})" if flags else "") + str(value.regexp)


class Field:
    """How one Sigma field reads in SQL: a schema column (of some kind) or a key of `extra`."""

    def __init__(self, name: str):
        column = FIELD_BY_NAME.get(name)
        self.name = name
        self.kind = column.kind if column is not None and column.kind != "map" else "extra"
        self.sql = f"`{name}`" if self.kind != "extra" else f"extra[{sql_string(name)}]"

    def text(self) -> str:
        """An expression giving the field as text (arrays: their elements joined by spaces)."""
        if self.kind == "strs":
            return f"arrayStringConcat({self.sql}, ' ')"
        if self.kind == "ip":
            return _IP_TEXT.format(c=self.sql)
        if self.kind in NUMERIC_KINDS or self.kind == "ts":
            return f"toString({self.sql})"
        return self.sql

    def test(self, predicate: Callable[[str], str]) -> str:
        """`predicate(text_expression)` applied to the field; to any element for arrays."""
        if self.kind == "strs":
            return f"arrayExists(x -> {predicate('x')}, {self.sql})"
        return predicate(self.text())

    @property
    def empty(self) -> str:
        if self.kind == "strs":
            return f"empty({self.sql})"
        if self.kind == "ip":
            return f"({self.sql} = toIPv6('::'))"
        if self.kind in NUMERIC_KINDS:
            return f"({self.sql} = 0)"
        return f"({self.sql} = '')"


class GanzhiClickHouseBackend(TextQueryBackend):
    """Sigma rules to ClickHouse WHERE expressions over Ganzhi's events table."""

    name: ClassVar[str] = "Ganzhi ClickHouse"
    formats: ClassVar[dict[str, str]] = {"default": "WHERE expression over the events table"}
    requires_pipeline: ClassVar[bool] = False

    precedence: ClassVar[tuple[type[ConditionItem], type[ConditionItem], type[ConditionItem]]] = (
        ConditionNOT, ConditionAND, ConditionOR)
    group_expression: ClassVar[str] = "({expr})"
    token_separator: ClassVar[str] = " "
    or_token: ClassVar[str] = "OR"
    and_token: ClassVar[str] = "AND"
    not_token: ClassVar[str] = "NOT"
    eq_token: ClassVar[str] = " = "
    str_quote: ClassVar[str] = "'"
    escape_char: ClassVar[str] = "\\"
    wildcard_multi: ClassVar[str] = "%"
    wildcard_single: ClassVar[str] = "_"
    # lists of plain values become IN; anything with wildcards stays an OR of ILIKEs
    convert_or_as_in: ClassVar[bool] = True
    convert_and_as_in: ClassVar[bool] = False
    in_expressions_allow_wildcards: ClassVar[bool] = False
    field_in_list_expression: ClassVar[str] = "{field} {op} ({list})"
    or_in_operator: ClassVar[str] = "IN"
    list_separator: ClassVar[str] = ", "
    # templates pySigma checks for support; the conversions below build the SQL themselves
    eq_expression: ClassVar[str] = "{field} = {value}"
    re_expression: ClassVar[str] = "match({field}, {regex})"
    cidr_expression: ClassVar[str] = "{field} {value}"
    compare_op_expression: ClassVar[str] = "{field} {operator} {value}"
    field_null_expression: ClassVar[str] = "{field}"
    field_exists_expression: ClassVar[str] = "{field}"
    field_not_exists_expression: ClassVar[str] = "{field}"
    field_equals_field_expression: ClassVar[str] = "{field1} = {field2}"
    unbound_value_str_expression: ClassVar[str] = "{value}"
    unbound_value_num_expression: ClassVar[str] = "{value}"
    unbound_value_re_expression: ClassVar[str] = "{value}"
    case_sensitive_match_expression: ClassVar[str] = "{field} = {value}"
    bool_values: ClassVar[dict[bool, str]] = {True: "1", False: "0"}

    # -- strings ---------------------------------------------------------------------------

    def convert_condition_field_eq_val_str(self, cond: ConditionFieldEqualsValueExpression,
                                           state: ConversionState) -> str:
        return self._string_test(Field(cond.field), cond.value, cased=False)

    def convert_condition_field_eq_val_str_case_sensitive(self, cond: ConditionFieldEqualsValueExpression,
                                                          state: ConversionState) -> str:
        return self._string_test(Field(cond.field), cond.value, cased=True)

    def _string_test(self, field: Field, value: SigmaString, cased: bool) -> str:
        if not cased and (affix := _affix_test(value)) is not None:
            return field.test(affix)
        if value.contains_special():
            op = "LIKE" if cased else "ILIKE"
            pattern = sql_string(like_pattern(value))
            return field.test(lambda t: f"{t} {op} {pattern}")
        text = _plain(value)
        literal = sql_string(text if cased else text.lower())
        return field.test(lambda t: f"{t} = {literal}" if cased else f"lowerUTF8({t}) = {literal}")

    def convert_condition_as_in_expression(self, cond: ConditionOR | ConditionAND, state: ConversionState) -> str:
        field = Field(cond.args[0].field)  # type: ignore[union-attr]
        values = []
        for arg in cond.args:
            value = arg.value  # type: ignore[union-attr]
            if isinstance(value, SigmaString):
                text = _plain(value)
                values.append(sql_string(text if isinstance(value, SigmaCasedString) else text.lower()))
            else:
                values.append(sql_string(str(value)))
        cased = all(isinstance(a.value, SigmaCasedString) for a in cond.args)  # type: ignore[union-attr]
        listed = ", ".join(values)
        return field.test(lambda t: f"{t} IN ({listed})" if cased else f"lowerUTF8({t}) IN ({listed})")

    def convert_condition_val_str(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        """Keywords: case-insensitive substring anywhere in the raw record or the message."""
        return self._keyword(cond.value)

    def convert_condition_val_num(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        return self._keyword(SigmaString(str(cond.value)))

    def _keyword(self, value: SigmaString) -> str:
        pattern = like_pattern(value)
        if not value.startswith(SpecialChars.WILDCARD_MULTI):
            pattern = "%" + pattern
        if not value.endswith(SpecialChars.WILDCARD_MULTI):
            pattern += "%"
        quoted = sql_string(pattern)
        return f"(`raw` ILIKE {quoted} OR `message` ILIKE {quoted})"

    # -- numbers, booleans, comparisons ----------------------------------------------------------

    def convert_condition_field_eq_val_num(self, cond: ConditionFieldEqualsValueExpression,
                                           state: ConversionState) -> str:
        field = Field(cond.field)
        number = cond.value.number
        if field.kind in NUMERIC_KINDS:
            return f"{field.sql} = {number}"
        literal = sql_string(str(number))
        return field.test(lambda t: f"{t} = {literal}")

    def convert_condition_field_eq_val_bool(self, cond: ConditionFieldEqualsValueExpression,
                                            state: ConversionState) -> str:
        value: SigmaBool = cond.value
        field = Field(cond.field)
        if field.kind in NUMERIC_KINDS:
            return f"{field.sql} = {1 if value.boolean else 0}"
        literal = sql_string(str(value.boolean).lower())
        return field.test(lambda t: f"lowerUTF8({t}) = {literal}")

    def convert_condition_field_compare_op_val(self, cond: ConditionFieldEqualsValueExpression,
                                               state: ConversionState) -> str:
        compare: SigmaCompareExpression = cond.value
        op = _COMPARE[compare.op.name.lower()]
        field = Field(cond.field)
        number = compare.number.number
        if field.kind in NUMERIC_KINDS:
            return f"{field.sql} {op} {number}"
        return field.test(lambda t: f"ifNull(toFloat64OrNull({t}) {op} {number}, 0)")

    # -- regular expressions, CIDR ---------------------------------------------------------

    def convert_condition_field_eq_val_re(self, cond: ConditionFieldEqualsValueExpression,
                                          state: ConversionState) -> str:
        regex = sql_string(regex_sql(cond.value))
        return Field(cond.field).test(lambda t: f"match({t}, {regex})")

    def convert_condition_field_eq_val_cidr(self, cond: ConditionFieldEqualsValueExpression,
                                            state: ConversionState) -> str:
        value: SigmaCIDRExpression = cond.value
        network = value.network
        field = Field(cond.field)
        if field.kind == "ip":
            low, high = network.network_address, network.broadcast_address
            if isinstance(network, ipaddress.IPv4Network):
                low, high = (ipaddress.IPv6Address(f"::ffff:{a}") for a in (low, high))
            return f"({field.sql} BETWEEN toIPv6({sql_string(str(low))}) AND toIPv6({sql_string(str(high))}))"
        cidr = sql_string(str(network))
        return field.test(lambda t: f"if(isIPv4String({t}) OR isIPv6String({t}), isIPAddressInRange({t}, {cidr}), 0)")

    # -- existence, null, field references -------------------------------------------------------

    def convert_condition_field_exists(self, cond: ConditionFieldEqualsValueExpression,
                                       state: ConversionState) -> str:
        field = Field(cond.field)
        if field.kind == "extra":
            return f"mapContains(extra, {sql_string(cond.field)})"
        return f"NOT {field.empty}"

    def convert_condition_field_not_exists(self, cond: ConditionFieldEqualsValueExpression,
                                           state: ConversionState) -> str:
        return f"NOT ({self.convert_condition_field_exists(cond, state)})"

    def convert_condition_field_eq_val_null(self, cond: ConditionFieldEqualsValueExpression,
                                            state: ConversionState) -> str:
        return Field(cond.field).empty

    def convert_condition_field_eq_field(self, cond: ConditionFieldEqualsValueExpression,
                                         state: ConversionState) -> str:
        ref: SigmaFieldReference = cond.value
        left, right = Field(cond.field), Field(ref.field)
        # two missing fields are not "equal": a reference compares values that are there
        return f"(NOT {left.empty} AND lowerUTF8({left.text()}) = lowerUTF8({right.text()}))"

    # -- whole rule ----------------------------------------------------------------------------

    def finalize_query_default(self, rule: Any, query: Any, index: int, state: ConversionState) -> Any:
        return query

