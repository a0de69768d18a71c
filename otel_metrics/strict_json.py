"""JSON request bodies, parsed strictly: one meaning per text, in bounded time.

Refused (ValueError, with what is wrong): text that is not UTF-8, duplicate keys
(which copy would count is up to each reader), NaN and Infinity (not JSON),
numbers of more than NUMBER_MAX_DIGITS digits (parsing them is quadratic on
older Pythons), strings holding a lone surrogate (not a character: no UTF-8
exists for it), and nesting deeper than the interpreter recurses.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple

NUMBER_MAX_DIGITS = 40  # an int64 or uint64 needs 20
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(body: bytes) -> Any:
    text = body.decode("utf-8")
    try:
        document = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_int=_int, parse_float=_float
        )
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):  # rare: only then look at every string
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff), which is not a character") from None
    return document


def _object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return document


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int(digits: str) -> int:
    if len(digits) > NUMBER_MAX_DIGITS:
        raise ValueError(f"a number of more than {NUMBER_MAX_DIGITS} digits")
    return int(digits)


def _float(text: str) -> float:
    if len(text) > NUMBER_MAX_DIGITS * 2:
        raise ValueError(f"a number of more than {NUMBER_MAX_DIGITS * 2} characters")
    return float(text)
