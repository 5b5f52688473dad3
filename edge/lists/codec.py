"""Plaintext payloads of snapshots and deltas: a small JSON part plus raw little-endian arrays.

The arrays are read back as zero-copy numpy views of the decrypted buffer, so a 10-million entry
snapshot costs its 16 bytes per entry once in memory and nothing more.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass

import numpy as np

from edge.lists.model import ListDef

_LEN = struct.Struct("<I")
_ALIGN = 16
# per-entry arrays: high hash, low hash, tag (list + reason), valid-until day (0 = none)
ENTRY_DTYPES = (("hi", "<u8"), ("lo", "<u4"), ("tag", "<u2"), ("until", "<u2"))
REMOVE_DTYPES = (("hi", "<u8"), ("lo", "<u4"), ("list", "<u2"))


class PayloadError(ValueError):
    """A payload whose structure is wrong (only possible if the signer produced it wrongly)."""


@dataclass(frozen=True)
class Entries:
    """Hashed entries as parallel arrays; tag indexes a (list index, reason code) table."""

    hi: np.ndarray
    lo: np.ndarray
    tag: np.ndarray
    until: np.ndarray

    def __len__(self) -> int:
        return len(self.hi)

    @staticmethod
    def empty() -> "Entries":
        return Entries(*(np.empty(0, dtype=dt) for _, dt in ENTRY_DTYPES))


@dataclass(frozen=True)
class Removals:
    hi: np.ndarray
    lo: np.ndarray
    list: np.ndarray  # index into DeltaPayload.remove_lists

    def __len__(self) -> int:
        return len(self.hi)

    @staticmethod
    def empty() -> "Removals":
        return Removals(*(np.empty(0, dtype=dt) for _, dt in REMOVE_DTYPES))


@dataclass(frozen=True)
class SnapshotPayload:
    hash_key: bytes
    lists: tuple[ListDef, ...]
    tags: tuple[tuple[int, str], ...]  # tag -> (index into lists, reason code)
    entries: Entries


@dataclass(frozen=True)
class DeltaPayload:
    """Changes to the snapshot of the same version: list (re)definitions, activation, adds, removes."""

    ops: tuple[tuple[str, str], ...]  # ("activate" | "deactivate", list id)
    lists: tuple[ListDef, ...]  # new or changed list definitions
    add_tags: tuple[tuple[str, str], ...]  # add tag -> (list id, reason code)
    adds: Entries
    remove_lists: tuple[str, ...]
    removes: Removals
    key_check: str  # first bytes of HMAC(key, "key-check"): binds the delta to the snapshot's hash key


def _pack(meta: dict, arrays: list[np.ndarray]) -> bytes:
    head = json.dumps(meta, sort_keys=True).encode("utf-8")
    pad = (-(_LEN.size + len(head))) % _ALIGN
    parts = [_LEN.pack(len(head) + pad), head, b" " * pad]
    parts += [np.ascontiguousarray(a).tobytes() for a in arrays]
    return b"".join(parts)


def _arrays(buf: bytes, off: int, spec: list[tuple[int, str]]) -> tuple[list[np.ndarray], int]:
    out = []
    for count, dt in spec:
        size = count * np.dtype(dt).itemsize
        if off + size > len(buf):
            raise PayloadError("payload shorter than its array counts")
        out.append(np.frombuffer(buf, dtype=dt, count=count, offset=off))
        off += size
    return out, off


def _read_meta(buf: bytes) -> tuple[dict, int]:
    if len(buf) < _LEN.size:
        raise PayloadError("payload too short")
    (hlen,) = _LEN.unpack_from(buf)
    off = _LEN.size + hlen
    try:
        return json.loads(bytes(memoryview(buf)[_LEN.size:off])), off
    except ValueError as e:
        raise PayloadError(f"payload metadata unreadable: {e}") from None


def encode_snapshot(p: SnapshotPayload) -> bytes:
    meta = {"type": "snapshot", "hash_key": base64.b64encode(p.hash_key).decode(),
            "lists": [d.model_dump(mode="json") for d in p.lists],
            "tags": [list(t) for t in p.tags], "count": len(p.entries)}
    e = p.entries
    return _pack(meta, [e.hi.astype("<u8"), e.lo.astype("<u4"), e.tag.astype("<u2"), e.until.astype("<u2")])


def decode_snapshot(buf: bytes) -> SnapshotPayload:
    meta, off = _read_meta(buf)
    try:
        if meta.get("type") != "snapshot":
            raise PayloadError("payload is not a snapshot")
        n = int(meta["count"])
        arrays, end = _arrays(buf, off, [(n, dt) for _, dt in ENTRY_DTYPES])
        lists = tuple(ListDef.model_validate(d) for d in meta["lists"])
        tags = tuple((int(i), str(r)) for i, r in meta["tags"])
        key = base64.b64decode(meta["hash_key"])
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError(f"snapshot payload malformed: {e}") from None
    if end != len(buf):
        raise PayloadError("snapshot payload has trailing bytes")
    if any(not 0 <= i < len(lists) for i, _ in tags):
        raise PayloadError("snapshot tag refers to a list that is not defined")
    entries = Entries(*arrays)
    if n and int(entries.tag.max()) >= len(tags):
        raise PayloadError("snapshot entry refers to an undefined tag")
    return SnapshotPayload(key, lists, tags, entries)


def encode_delta(p: DeltaPayload) -> bytes:
    meta = {"type": "delta", "ops": [list(o) for o in p.ops],
            "lists": [d.model_dump(mode="json") for d in p.lists],
            "add_tags": [list(t) for t in p.add_tags], "add_count": len(p.adds),
            "remove_lists": list(p.remove_lists), "remove_count": len(p.removes), "key_check": p.key_check}
    a, r = p.adds, p.removes
    return _pack(meta, [a.hi.astype("<u8"), a.lo.astype("<u4"), a.tag.astype("<u2"), a.until.astype("<u2"),
                        r.hi.astype("<u8"), r.lo.astype("<u4"), r.list.astype("<u2")])


def decode_delta(buf: bytes) -> DeltaPayload:
    meta, off = _read_meta(buf)
    try:
        if meta.get("type") != "delta":
            raise PayloadError("payload is not a delta")
        na, nr = int(meta["add_count"]), int(meta["remove_count"])
        arrays, end = _arrays(buf, off, [(na, dt) for _, dt in ENTRY_DTYPES] + [(nr, dt) for _, dt in REMOVE_DTYPES])
        ops = tuple((str(o), str(i)) for o, i in meta["ops"])
        lists = tuple(ListDef.model_validate(d) for d in meta["lists"])
        add_tags = tuple((str(i), str(r)) for i, r in meta["add_tags"])
        remove_lists = tuple(str(i) for i in meta["remove_lists"])
        key_check = str(meta["key_check"])
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError(f"delta payload malformed: {e}") from None
    if end != len(buf):
        raise PayloadError("delta payload has trailing bytes")
    if any(o not in ("activate", "deactivate") for o, _ in ops):
        raise PayloadError("delta has an unknown operation")
    adds, removes = Entries(*arrays[:4]), Removals(*arrays[4:])
    if na and int(adds.tag.max()) >= len(add_tags):
        raise PayloadError("delta entry refers to an undefined tag")
    if nr and int(removes.list.max()) >= len(remove_lists):
        raise PayloadError("delta removal refers to an undefined list")
    return DeltaPayload(ops, lists, add_tags, adds, remove_lists, removes, key_check)
