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
        hashes = [self.hasher.hash96(v) for v in variants]
        out: list[Found] = []
        hi, n = self.hi, len(self.hi)
        if n:
            q = np.fromiter((h for h, _ in hashes), dtype=np.uint64, count=len(hashes))
            pos = np.searchsorted(hi, q)
            for i in np.flatnonzero(hi[np.minimum(pos, n - 1)] == q).tolist():
                h, l = hashes[i]
                p = int(pos[i])
                while p < n and int(hi[p]) == h:
                    if int(self.lo[p]) == l:
                        li, reason = self.tags[int(self.tag[p])]
                        if (h, l, li) not in self.removed:
                            out.append(Found(i, li, reason, int(self.until[p])))
                    p += 1
        if self.added:
            for i, key in enumerate(hashes):
                for li, reason, until in self.added.get(key, ()):
                    out.append(Found(i, li, reason, until))
        return out

    @property
    def nbytes(self) -> int:
        """Memory of the entry arrays (the overlay is small and not counted)."""
        return int(self.hi.nbytes + self.lo.nbytes + self.tag.nbytes + self.until.nbytes)

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
