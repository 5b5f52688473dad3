"""Keyed plate hashes: HMAC-SHA256 of the normalised plate, truncated to 96 bits.

The plate space is small enough to enumerate, so a hash is only as secret as its key: the key
is fresh for each package version, travels only inside the encrypted package and is kept in
memory on the device (docs/security.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

HASH_BITS = 96  # 64-bit high part + 32-bit low part
KEY_BYTES = 32
_SEPARATORS = re.compile(r"[\s\-.·_/]+")
_VALID = re.compile(r"^[A-Z0-9]+$")
MAX_PLATE_LEN = 12


class PlateError(ValueError):
    """A plate that cannot be normalised; the message never contains the plate."""


def normalise_plate(text: str) -> str:
    """Upper case A-Z0-9 only: separators (space, dash, dot) are dropped, anything else is an error."""
    t = _SEPARATORS.sub("", text).upper()
    if not t:
        raise PlateError("empty plate")
    if len(t) > MAX_PLATE_LEN:
        raise PlateError(f"plate longer than {MAX_PLATE_LEN} characters")
    if not _VALID.match(t):
        raise PlateError("plate has characters other than A-Z and 0-9")
    return t


@dataclass(frozen=True)
class PlateHasher:
    """HMAC-SHA256 with the pad states precomputed, so a hash costs two small SHA-256 updates."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"hash key must be {KEY_BYTES} bytes, got {len(self.key)}")
        padded = self.key.ljust(64, b"\0")
        object.__setattr__(self, "_inner", hashlib.sha256(bytes(b ^ 0x36 for b in padded)))
        object.__setattr__(self, "_outer", hashlib.sha256(bytes(b ^ 0x5C for b in padded)))

    def digest(self, plate: str) -> bytes:
        """Full HMAC-SHA256 of an already normalised plate."""
        i = self._inner.copy()
        i.update(plate.encode("ascii"))
        o = self._outer.copy()
        o.update(i.digest())
        return o.digest()

    def hash96(self, plate: str) -> tuple[int, int]:
        """(high 64 bits, next 32 bits) of the HMAC of an already normalised plate."""
        d = self.digest(plate)
        return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:12], "big")

    def hash_many(self, plates: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Arrays (uint64 high, uint32 low) for many normalised plates (central builds)."""
        hi = np.empty(len(plates), dtype=np.uint64)
        lo = np.empty(len(plates), dtype=np.uint32)
        for n, p in enumerate(plates):
            hi[n], lo[n] = self.hash96(p)
        return hi, lo


def key_check(hasher: PlateHasher) -> str:
    """A short fingerprint of the hash key ('#' cannot occur in a plate, so it hashes no plate)."""
    return hasher.digest("#key-check")[:8].hex()
