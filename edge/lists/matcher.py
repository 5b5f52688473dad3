"""Matching a passage against the enabled, live lists: variants -> keyed hashes -> lookup.

Variants, in order of trust: the consensus text (exact), the recognizer's alternatives
(alternative), then look-alike substitutions the plate grammar allows (lookalike). A list that
is not enabled on this deployment, inactive, outside its time windows or expired never hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from edge.grammar import lookalike_variants
from edge.lists.hashing import PlateError, normalise_plate
from edge.lists.model import today_number
from edge.lists.store import ListStore
from edge.types import ListMatch, MatchType

MAX_VARIANTS = 32
_RANK = {"exact": 0, "alternative": 1, "lookalike": 2}


def plate_variants(text: str, alternatives: Sequence[tuple[str, float]], country: str,
                   limit: int = MAX_VARIANTS, char_confidences: Sequence[float] | None = None,
                   lookalike_below: float = 0.99) -> list[tuple[str, MatchType]]:
    """Distinct normalised variants with how they were found, most trusted first, at most `limit`.

    With `char_confidences` (one per character of `text`), look-alike substitutions are tried only
    for characters read with less confidence than `lookalike_below`: a confidently read "G" is a G,
    and swapping it for a 6 would report a vehicle that is on no list.
    """
    out: dict[str, MatchType] = {}

    def add(candidate: str, how: MatchType) -> None:
        if len(out) >= limit:
            return
        try:
            t = normalise_plate(candidate)
        except PlateError:
            return  # unreadable variant: nothing to look up
        out.setdefault(t, how)

    if text:
        add(text, "exact")
    for alt, _score in alternatives:
        add(alt, "alternative")
    if text and len(out) < limit:
        positions = None
        if char_confidences is not None and len(char_confidences) == len(text):
            positions = [i for i, c in enumerate(char_confidences) if c < lookalike_below]
        for v in lookalike_variants(text, country, limit=limit - len(out), positions=positions):
            add(v, "lookalike")
    return list(out.items())


class ListMatcher:
    """Stateless apart from the store it reads; safe to call while the store swaps indexes."""

    def __init__(self, store: ListStore, enabled: Sequence[str], max_variants: int = MAX_VARIANTS,
                 lookalike_below: float = 0.99):
        self.store = store
        self.enabled_all = "*" in enabled
        self.enabled = frozenset(enabled)
        self.max_variants = max_variants
        self.lookalike_below = lookalike_below

    def match(self, text: str, alternatives: Sequence[tuple[str, float]], country: str,
              now_utc: datetime | None = None, char_confidences: Sequence[float] | None = None) -> list[ListMatch]:
        """Lists this passage hits now, highest priority first; one match per list (best match type).

        Give the read's `char_confidences` so that only doubtful characters are swapped for look-alikes."""
        idx = self.store.index  # one consistent index for the whole passage
        if idx is None or not (self.enabled_all or self.enabled):
            return []
        now = now_utc or datetime.now(timezone.utc)
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)  # the pipeline's clocks are UTC
        variants = plate_variants(text, alternatives, country, self.max_variants, char_confidences,
                                  self.lookalike_below)
        found = idx.lookup([v for v, _ in variants])
        if not found:
            return []
        today = today_number(now)
        best: dict[int, tuple[int, ListMatch]] = {}
        for f in found:
            d = idx.lists[f.list_index]
            if not (self.enabled_all or d.id in self.enabled) or not d.is_live(now):
                continue
            if f.until and today > f.until:
                continue  # this entry's valid-until date has passed
            v, how = variants[f.variant]
            rank = _RANK[how]
            if f.list_index in best and best[f.list_index][0] <= rank:
                continue
            best[f.list_index] = (rank, ListMatch(
                list_id=d.id, name=d.name, category=d.category, action=d.action, priority=d.priority,
                agency=d.agency, topic=d.topic, match_type=how, matched_text=v, reason_code=f.reason,
                list_version=idx.version))
        return sorted((m for _, m in best.values()), key=lambda m: (-m.priority, _RANK[m.match_type], m.list_id))
