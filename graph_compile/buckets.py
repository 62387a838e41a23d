"""Shape buckets: `BxS` strings (batch x prompt length) <-> Bucket, validated against the config."""
from __future__ import annotations

import re
from typing import List

from graph_compile.capture import Bucket


class BucketError(ValueError):
    """A malformed or impossible shape bucket."""


_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_buckets(spec: str, rt) -> List[Bucket]:
    """'1x8,2x16' -> [Bucket(1, 8), Bucket(2, 16)], each within the runtime limits (RuntimeConfig)."""
    out: List[Bucket] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        m = _RE.match(part)
        if not m:
            raise BucketError(f"bucket {part.strip()!r} is not of the form BATCHxSEQ (e.g. 1x8)")
        b, s = int(m.group(1)), int(m.group(2))
        if b < 1 or s < 1:
            raise BucketError(f"bucket {part.strip()!r}: batch and prompt length must be >= 1")
        if b > rt.max_batch_size:
            raise BucketError(f"bucket {part.strip()!r}: batch {b} exceeds max_batch_size {rt.max_batch_size}")
        if s >= rt.max_seq_len:
            raise BucketError(f"bucket {part.strip()!r}: prompt length {s} leaves no room below "
                              f"max_seq_len {rt.max_seq_len}")
        bucket = Bucket(b, s)
        if bucket not in out:
            out.append(bucket)
    if not out:
        raise BucketError("no buckets given (expected e.g. --buckets 1x8,2x16)")
    return out
