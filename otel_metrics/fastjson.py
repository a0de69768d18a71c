"""JSON for the hook's fast path, built on CPython's C accelerator `_json`.

`import json` pulls in `re` and costs as much as the interpreter start; the C
scanner underneath it does the same parsing without either.
"""

TYPE_CHECKING = False  # typing imports `re`: only the type checker reads these
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional, Tuple

    Scanner = Callable[[str, int], Tuple[Any, int]]


class _ScannerContext:
    # The attributes json.JSONDecoder hands to the C scanner.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_WHITESPACE = " \t\n\r"

_scan: "Optional[Scanner]"
_quote: "Callable[[str], str]"
try:
    import _json

    _scan = _json.make_scanner(_ScannerContext)  # type: ignore[arg-type]  # duck-typed: JSONDecoder's attributes
    _quote = _json.encode_basestring_ascii
except (ImportError, AttributeError):  # a Python built without the accelerator
    import json as _slow_json

    _scan = None
    _quote = _slow_json.dumps


def loads(text: str) -> "Any":
    """Parse one JSON document; ValueError on anything that is not exactly that."""
    if _scan is None:
        return _slow_json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"not JSON at character {stop.value}") from None
    except SystemError:
        # Before 3.12 the scanner raises json.decoder's error only once that module is imported (which
        # this module avoids); else this. Its position is lost: the input ends in an unfinished string,
        # a bad escape, or a missing delimiter.
        raise ValueError("not JSON (an unfinished string, a bad escape or a missing delimiter)") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at character {end}")
    return value


def dumps_record(record: "Mapping[str, object]") -> str:
    """Serialise a dict of str/int/bool/None values, and dicts of them, as one line of ASCII JSON."""
    parts = []
    rendered: str
    for key, value in record.items():
        if value is None:
            rendered = "null"
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = str(int(value))
        elif isinstance(value, dict):
            rendered = dumps_record(value)
        else:
            rendered = _quote(str(value))
        parts.append(_quote(key) + ":" + rendered)
    return "{" + ",".join(parts) + "}"
