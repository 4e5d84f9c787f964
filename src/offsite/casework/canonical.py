"""Canonical JSON: one byte string for one content, so that a hash means something."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable in evidence: {type(value).__name__}")


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the form that evidence hashes are over."""
    return json.dumps(
        document,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
