"""From passage to hit: match against the active lists, and put each hit into the durable outbox.

A passage that matches nothing is dropped here and forgotten: it is never logged or stored.
Each matching list's hits go to the topic of the agency that supplied that list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from edge.hits import EvidenceConfig, HitIdentity, enqueue_hit
from edge.outbox import OutboxError
from edge.types import Hit, ListMatch, Passage

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    passages: int = 0
    below_confidence: int = 0
    unmatched: int = 0  # confident passages on no active list: dropped, counted only here
    matched: int = 0  # passages with at least one list match (before the cool-down)
    hits: int = 0
    suppressed: int = 0  # same plate on the same list within the cool-down
    outbox_refused: int = 0  # messages not stored: outbox full, or its file not writable (disk full)


class _Refusing:
    """The outbox as enqueue_hit sees it: a failed write (OutboxError, e.g. disk full) is a refusal, not a crash.

    The message that could not be stored is logged by hit id and list ids only, never the plate; its
    cool-down did not start either (same transaction), so the next passage of that plate tries again.
    """

    def __init__(self, outbox):
        self._outbox = outbox

    def suppressed(self, plate: str, list_id: str, now: float | None = None) -> bool:
        return self._outbox.suppressed(plate, list_id, now)

    def put(self, topic: str, payload: bytes, hit_id: str, *, cooldown=(), now: float | None = None,
            priority: int = 0) -> bool:
        try:
            return self._outbox.put(topic, payload, hit_id, cooldown=cooldown, now=now, priority=priority)
        except OutboxError as e:
            # e names the outbox file, the hit id and SQLite's reason (which never quotes stored values)
            log.error("hit %s for list(s) %s NOT stored, the outbox cannot be written: %s",
                      hit_id, ",".join(list_id for _, list_id in cooldown), e)
            return False


class HitDispatcher:
    """Matches passages and stores hits; returns the hits it accepted into the outbox."""

    def __init__(self, match: Callable[[Passage, datetime], list[ListMatch]], outbox,
                 identity: Callable[[], HitIdentity], versions: Callable[[], dict], evidence: EvidenceConfig,
                 default_topic: str, min_confidence: float = 0.5):
        self._match = match
        self.outbox = outbox
        self.identity = identity
        self.versions = versions
        self.evidence = evidence
        self.default_topic = default_topic
        self.min_confidence = min_confidence
        self.stats = DispatchStats()

    def handle(self, passage: Passage, now: datetime | None = None) -> list[Hit]:
        self.stats.passages += 1
        if not passage.text or passage.confidence < self.min_confidence:
            self.stats.below_confidence += 1
            return []
        now = now or datetime.now(timezone.utc)
        matches = self._match(passage, now)
        # Nothing is logged per passage that is not a hit, not even its frame count or confidence: a
        # timestamped line per vehicle is itself a record of a passage, and journald keeps it on disk.
        # Only the counters in self.stats say how many there were (the daemon status reports passages, hits).
        if not matches:
            self.stats.unmatched += 1
            return []
        self.stats.matched += 1
        hit = Hit(passage=passage, matches=tuple(sorted(matches, key=lambda m: -m.priority)))
        result = enqueue_hit(_Refusing(self.outbox), hit, self.identity(), self.versions(), self.evidence, self.default_topic,
                             now=now.timestamp())
        self.stats.suppressed += result.suppressed
        self.stats.outbox_refused += result.refused
        self.stats.hits += len(result.queued)
        for out in result.queued:
            log.info("hit %s accepted for list(s) %s", out.hit_id,
                     ",".join(m["list_id"] for m in out.message["matches"]))
        return [hit] if result.queued else []
