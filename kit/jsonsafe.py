"""JSON from untrusted sources, parsed without trusting the interpreter's recursion limit.

`json.loads` recurses in C once per nesting level and stops only at `sys.getrecursionlimit()`.
Libraries may raise that limit at import (py_ecc, which eth-account brings, sets 100000), and
then a body of 100000 `[` overflows the C stack of the thread that parses it: the process dies
with SIGSEGV instead of raising. Every parse of bytes that came from outside (HTTP bodies,
contract output, delivered results) goes through `loads`, which measures the nesting first.
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
# A JSON string (skipped whole, so brackets inside strings don't count) or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The document nests lists and objects deeper than allowed."""


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deeply `text` nests, counting no further than `limit + 1` (so hostile input is cheap)."""
    depth = deepest = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif mark in "]}":
            depth -= 1
    return deepest


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing (TooDeep, a ValueError) documents nested deeper than `max_depth`."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if nesting_depth(text, max_depth) > max_depth:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
