"""Longest-prefix match over IPv4 and IPv6 prefixes: a table of disjoint address intervals.

CIDR blocks either nest or are disjoint, so flattening them once (the most specific block wins each
stretch of addresses) gives sorted, non-overlapping intervals; a lookup is then one binary search,
O(log n), for a million prefixes as for ten. IPv4 lives in the IPv4-mapped part of the IPv6 space
(::ffff:0:0/96), so one table answers both families and `10.0.0.1` equals `::ffff:10.0.0.1`.

Results are cached per address text: traffic repeats its addresses, and a dict hit is cheaper than
parsing the address again.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")
_MAPPED = 0xFFFF << 32
_CACHE_LIMIT = 200_000


def parse_network(text: str) -> tuple[int, int]:
    """'10.0.0.0/8', '2001:db8::/32' or a single address -> (first, last) in the IPv6 integer space.

    Raises ValueError with the offending text (host bits set are an error: a typo, not an intent)."""
    text = text.strip()
    if "/" not in text:
        key = address_key(text)
        if key is not None:
            return key, key
    net = ipaddress.ip_network(text, strict=True)
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        first, last = first | _MAPPED, last | _MAPPED
    return first, last


def address_key(text: str) -> int | None:
    """Address text -> its integer in the IPv6 space (IPv4 mapped); None if it is not an address."""
    try:
        if ":" in text:
            return int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]))
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text)) | _MAPPED
    except OSError:
        return None


class PrefixTable(Generic[V]):
    """Maps addresses to the value of the most specific prefix containing them.

    Built from (network text, value) pairs; with `merge`, a nested block's value is merged with its
    enclosing block's (e.g. an asset's /32 inherits the department of its /16). Among identical
    blocks the later one wins.
    """

    def __init__(self, entries: Iterable[tuple[str, V]], merge: Callable[[V, V], V] | None = None):
        items: list[tuple[int, int, int, V]] = []
        for order, (network, value) in enumerate(entries):
            first, last = parse_network(network)
            items.append((first, last, order, value))
        self.prefixes = len(items)
        self._starts, self._ends, self._values = _flatten(items, merge)
        self._cache: dict[str, V | None] = {}

    def __len__(self) -> int:
        return self.prefixes

    def values(self) -> list[V]:
        """The distinct effective values (after merging), in address order."""
        seen: dict[int, V] = {}
        for value in self._values:
            seen.setdefault(id(value), value)
        return list(seen.values())

    def lookup_key(self, key: int) -> V | None:
        i = bisect_right(self._starts, key) - 1
        if i >= 0 and key <= self._ends[i]:
            return self._values[i]
        return None

    def lookup(self, address: str) -> V | None:
        """The value for an address text, None if no prefix holds it (or it is not an address)."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        key = address_key(address)
        found = None if key is None else self.lookup_key(key)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = found
        return found


def _flatten(items: list[tuple[int, int, int, V]], merge: Callable[[V, V], V] | None
             ) -> tuple[list[int], list[int], list[V]]:
    """Nested/disjoint intervals -> disjoint intervals labelled by their innermost enclosing block."""
    items.sort(key=lambda t: (t[0], -t[1], t[2]))
    starts: list[int] = []
    ends: list[int] = []
    values: list[V] = []

    def emit(first: int, last: int, value: V) -> None:
        if first > last:
            return
        if starts and ends[-1] == first - 1 and values[-1] is value:
            ends[-1] = last  # extend the previous stretch of the same block
            return
        starts.append(first)
        ends.append(last)
        values.append(value)

    stack: list[tuple[int, V]] = []  # (last address, effective value) of the open enclosing blocks
    cursor = 0
    for first, last, _, value in items:
        while stack and stack[-1][0] < first:
            end, val = stack.pop()
            emit(cursor, end, val)
            cursor = end + 1
        if stack:
            emit(cursor, first - 1, stack[-1][1])
            if merge is not None:
                value = merge(value, stack[-1][1])
        stack.append((last, value))
        cursor = first
    while stack:
        end, val = stack.pop()
        emit(cursor, end, val)
        cursor = end + 1
    return starts, ends, values
