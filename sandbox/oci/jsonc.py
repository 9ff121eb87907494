"""JSON through CPython's C accelerator (`_json`) without importing `json`, whose decoder imports
`re` (20+ ms here): sbx-runc parses config.json and state.json on every call a shim makes.
Same results as json.loads/json.dumps (compact separators); `json` itself is the fallback."""
try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it
    _json = None


class _Context:
    """What _json.make_scanner reads from a JSONDecoder."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    memo = {}


_scan = _json.make_scanner(_Context()) if _json is not None else None
_WS = " \t\n\r"


def loads(data):
    """str or bytes (UTF-8) -> object; ValueError on bad JSON, as json.loads."""
    if _scan is None:
        import json
        return json.loads(data)
    s = data.decode("utf-8-sig") if isinstance(data, (bytes, bytearray)) else data
    i = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    finally:
        _Context.memo.clear()
    if s[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return obj


def _default(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_enc = (_json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
        if _json is not None else None)


def dumps(obj):
    """object -> compact JSON text (json.dumps(obj, separators=(",", ":")))."""
    if _enc is None:
        import json
        return json.dumps(obj, separators=(",", ":"))
    return "".join(_enc(obj, 0))
