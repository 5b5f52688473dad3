"""The in-memory list index of one package version: sorted hash arrays plus a small delta overlay.

An index is never changed after it is built: a delta produces a new index that shares the big
arrays, so the store can swap indexes atomically while matching goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.lists.codec import DeltaPayload, SnapshotPayload
from edge.lists.hashing import PlateHasher, key_check
from edge.lists.model import ListDef


class DeltaError(ValueError):
    """A delta that does not fit the snapshot it claims to extend; `reason` is a short code."""

    def __init__(self, message: str, reason: str = "corrupt"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Found:
    """One list entry that a variant hashed to."""

    variant: int  # index into the variants passed to lookup()
    list_index: int
    reason: str
    until: int  # valid-until day number, 0 = no per-entry expiry


Key = tuple[int, int]
Added = dict[Key, tuple[tuple[int, str, int], ...]]  # (hi, lo) -> ((list index, reason, until), ...)


class ListIndex:
    """Lookups by plate variant for one (version, seq); read-only once built."""

    def __init__(self, version: int, seq: int, hasher: PlateHasher, lists: tuple[ListDef, ...],
                 tags: tuple[tuple[int, str], ...], hi: np.ndarray, lo: np.ndarray, tag: np.ndarray,
                 until: np.ndarray, added: Added | None = None, removed: frozenset | None = None):
        self.version, self.seq = version, seq
        self.hasher = hasher
        self.lists = lists
        self.list_pos = {d.id: n for n, d in enumerate(lists)}
        self.tags = tags
        self.hi, self.lo, self.tag, self.until = hi, lo, tag, until
        self.added: Added = added or {}
        self.removed: frozenset[tuple[int, int, int]] = removed or frozenset()
        self.key_check = key_check(hasher)
        self._buckets = _Buckets.build(hi)

    @classmethod
    def from_snapshot(cls, version: int, seq: int, p: SnapshotPayload) -> "ListIndex":
        e = p.entries
        if len(e) > 1 and not bool(np.all(e.hi[1:] >= e.hi[:-1])):
            raise DeltaError("snapshot entries are not sorted")
        return cls(version, seq, PlateHasher(p.hash_key), p.lists, p.tags, e.hi, e.lo, e.tag, e.until)

    def with_delta(self, seq: int, d: DeltaPayload) -> "ListIndex":
        """A new index with the delta applied on top; this one stays unchanged."""
        if d.key_check != self.key_check:
            raise DeltaError("delta was made with another hash key than this snapshot", "key_mismatch")
        lists = list(self.lists)
        pos = dict(self.list_pos)
        for new in d.lists:
            if new.id in pos:
                lists[pos[new.id]] = new
            else:
                pos[new.id] = len(lists)
                lists.append(new)
        for op, list_id in d.ops:
            if list_id not in pos:
                raise DeltaError(f"delta {op}s unknown list {list_id!r}")
            lists[pos[list_id]] = lists[pos[list_id]].model_copy(update={"active": op == "activate"})
        added = dict(self.added)
        removed = set(self.removed)
        remove_idx = []
        for list_id in d.remove_lists:
            if list_id not in pos:
                raise DeltaError(f"delta removes entries from unknown list {list_id!r}")
            remove_idx.append(pos[list_id])
        r = d.removes
        for h, l, li in zip(r.hi.tolist(), r.lo.tolist(), r.list.tolist()):
            li = remove_idx[li]
            if self._in_base(h, l, li):
                removed.add((h, l, li))
            if (h, l) in added:
                kept = tuple(x for x in added[(h, l)] if x[0] != li)
                if kept:
                    added[(h, l)] = kept
                else:
                    del added[(h, l)]
        add_tags = []
        for list_id, reason in d.add_tags:
            if list_id not in pos:
                raise DeltaError(f"delta adds entries to unknown list {list_id!r}")
            add_tags.append((pos[list_id], reason))
        a = d.adds
        for h, l, t, u in zip(a.hi.tolist(), a.lo.tolist(), a.tag.tolist(), a.until.tolist()):
            li, reason = add_tags[t]
            if self._in_base(h, l, li):
                removed.add((h, l, li))  # the overlay entry replaces the base entry (new reason or expiry)
            added[(h, l)] = tuple(x for x in added.get((h, l), ()) if x[0] != li) + ((li, reason, u),)
        return ListIndex(self.version, seq, self.hasher, tuple(lists), self.tags, self.hi, self.lo, self.tag,
                         self.until, added, frozenset(removed))

    def _in_base(self, h: int, l: int, li: int) -> bool:
        p = int(np.searchsorted(self.hi, np.uint64(h)))
        while p < len(self.hi) and int(self.hi[p]) == h:
            if int(self.lo[p]) == l and self.tags[int(self.tag[p])][0] == li:
                return True
            p += 1
        return False

    def lookup(self, variants: list[str]) -> list[Found]:
        """Entries for any of the (normalised) variants; base entries removed by deltas are skipped."""
        if not variants:
            return []
        digests = [self.hasher.digest(v) for v in variants]
        out: list[Found] = []
        if len(self.hi):
            q = np.frombuffer(b"".join(d[:8] for d in digests), dtype=">u8").astype(np.uint64)
            for i, p in self._buckets.find(self.hi, q):
                lo = int.from_bytes(digests[i][8:12], "big")
                h = int(q[i])
                while p < len(self.hi) and int(self.hi[p]) == h:  # the same plate on several lists
                    if int(self.lo[p]) == lo:
                        li, reason = self.tags[int(self.tag[p])]
                        if (h, lo, li) not in self.removed:
                            out.append(Found(i, li, reason, int(self.until[p])))
                    p += 1
        if self.added:
            for i, d in enumerate(digests):
                for li, reason, until in self.added.get((int.from_bytes(d[:8], "big"), int.from_bytes(d[8:12], "big")), ()):
                    out.append(Found(i, li, reason, until))
        return out

    @property
    def nbytes(self) -> int:
        """Memory of the entry arrays and bucket table (the delta overlay is small and not counted)."""
        return int(self.hi.nbytes + self.lo.nbytes + self.tag.nbytes + self.until.nbytes + self._buckets.nbytes)

    @property
    def overlay_size(self) -> int:
        """Delta changes held beside the sorted arrays; a fresh snapshot folds them in."""
        return sum(len(v) for v in self.added.values()) + len(self.removed)

    def entry_counts(self) -> dict[str, int]:
        """Entries per list id (base minus removals plus overlay); for status, never plates."""
        per_tag = np.bincount(self.tag, minlength=len(self.tags)) if len(self.tag) else np.zeros(len(self.tags), int)
        counts = {d.id: 0 for d in self.lists}
        for t, c in enumerate(per_tag.tolist()):
            counts[self.lists[self.tags[t][0]].id] += c
        for _, _, li in self.removed:
            counts[self.lists[li].id] -= 1
        for entries in self.added.values():
            for li, _, _ in entries:
                counts[self.lists[li].id] += 1
        return counts


@dataclass(frozen=True)
class _Buckets:
    """Start offsets per top-bits bucket of the sorted high hashes.

    A binary search over 10 million entries costs about a dozen cache misses per variant; with
    buckets of a few entries one gather finds all 32 variants in a handful of numpy calls.
    Entries past a bucket's end have other top bits, so they can never equal the query: no mask.
    """

    shift: np.uint64
    starts: np.ndarray  # uint32, 2**bits + 1
    window: np.ndarray  # arange(largest bucket)

    @staticmethod
    def build(hi: np.ndarray) -> "_Buckets":
        n = len(hi)
        bits = max(4, min(22, n.bit_length() - 2))
        shift = np.uint64(64 - bits)
        counts = np.zeros(1 << bits, dtype=np.int64)
        for start in range(0, n, 1 << 20):  # in chunks: no 80 MB temporary for 10 million entries
            counts += np.bincount((hi[start:start + (1 << 20)] >> shift).astype(np.intp), minlength=1 << bits)
        starts = np.zeros((1 << bits) + 1, dtype=np.uint32)
        np.cumsum(counts, out=starts[1:])
        return _Buckets(shift, starts, np.arange(max(1, int(counts.max())), dtype=np.int64))

    def find(self, hi: np.ndarray, q: np.ndarray) -> list[tuple[int, int]]:
        """(query index, first position) of each query whose high hash is present."""
        first = self.starts[q >> self.shift].astype(np.int64)
        pos = first[:, None] + self.window
        rows, cols = np.nonzero(hi.take(pos, mode="clip") == q[:, None])
        seen: dict[int, int] = {}
        for r, c in zip(rows.tolist(), cols.tolist()):
            seen.setdefault(r, int(first[r]) + c)  # the first of equal entries
        return list(seen.items())

    @property
    def nbytes(self) -> int:
        return int(self.starts.nbytes + self.window.nbytes)
