"""From passage to hit: match against the active lists, and put each hit into the durable outbox.

A passage that matches nothing is dropped here and forgotten: it is never logged or stored.
Each matching list's hits go to the topic of the agency that supplied that list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from edge.hits import EvidenceConfig, HitIdentity, route_hit
from edge.types import Hit, ListMatch, Passage

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    passages: int = 0
    below_confidence: int = 0
    hits: int = 0
    suppressed: int = 0  # same plate on the same list within the cool-down
    outbox_refused: int = 0


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
        if not matches:
            return []
        epoch = now.timestamp()
        fresh = [m for m in matches if not self.outbox.suppressed(m.matched_text, m.list_id, epoch)]
        self.stats.suppressed += len(matches) - len(fresh)
        if not fresh:
            return []
        hit = Hit(passage=passage, matches=tuple(sorted(fresh, key=lambda m: -m.priority)))
        accepted = []
        for out in route_hit(hit, self.identity(), self.versions(), self.evidence, self.default_topic):
            lists = [m["list_id"] for m in out.message["matches"]]
            cooldown = tuple((m.matched_text, m.list_id) for m in fresh if m.list_id in lists)
            if self.outbox.put(out.topic, out.payload(), out.hit_id, cooldown=cooldown, now=epoch):
                self.stats.hits += 1
                accepted.append(hit)
                log.info("hit %s accepted for list(s) %s", out.hit_id, ",".join(lists))
            else:
                self.stats.outbox_refused += 1
        return accepted
