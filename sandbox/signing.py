"""The callback signature (contract §19), written apart from the client so each checks the other.

``Base64(HMAC-SHA256(secret, requestId | JSON.stringify(transcription) | createdAt | apiKey))``,
with values written the way JavaScript writes them: the provider's webhooks are JavaScript.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["js_string", "json_stringify", "sign_callback", "string_to_sign"]

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _number(value: float) -> str:
    """``Number.prototype.toString`` (ECMA-262 Number::toString): 1.0 is 1, 1e-7 is 1e-7."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + _number(-value)
    mantissa, _, exponent = repr(value).partition("e")  # repr: the shortest round-trip digits
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    leading = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits.strip("0")
    k, n = len(digits), len(whole) + int(exponent or 0) - leading  # value = 0.digits * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    sign = "+" if n > 0 else "-"
    return f"{digits[0]}{'.' + digits[1:] if k > 1 else ''}e{sign}{abs(n - 1)}"


def _quote(text: str) -> str:
    """JSON.stringify of a string: control characters and lone surrogates as lowercase \\u escapes."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or "\ud800" <= char <= "\udfff":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def json_stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON-shaped Python values, keys in insertion order."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(float(value))
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Mapping):
        return (
            "{" + ",".join(f"{_quote(str(k))}:{json_stringify(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_stringify(v) for v in value) + "]"
    raise TypeError(f"cannot sign a {type(value).__name__}")


def js_string(value: Any) -> str:
    """The scheme's field rule: objects JSON.stringify, null/undefined "", others ``String(v)``."""
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json_stringify(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(float(value))
    return str(value)


def string_to_sign(payload: Mapping[str, Any], api_key: str) -> str:
    """``requestId|JSON.stringify(transcription)|createdAt|apiKey``."""
    fields = (payload.get("requestId"), payload.get("transcription"), payload.get("createdAt"))
    return "|".join([*(js_string(f) for f in fields), api_key])


def sign_callback(payload: Mapping[str, Any], *, secret: str, api_key: str) -> str:
    """What the sandbox sends as ``signature``: Base64 of the HMAC-SHA256 digest."""
    message = string_to_sign(payload, api_key).encode("utf-8")
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
