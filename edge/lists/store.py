"""The device-side list store: verify, decrypt in memory, order, swap atomically, cache sealed.

Only the sealed blobs as received are written to disk (they are encrypted and signed); the
decrypted payload and the hash key stay in memory. Anything rejected leaves the last good index
active, and the result says why in a short code that status and logs can show.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.lists import keys
from edge.lists.codec import PayloadError, decode_delta, decode_snapshot
from edge.lists.config import ListsConfig
from edge.lists.index import DeltaError, ListIndex
from edge.lists.package import PackageError, open_package

log = logging.getLogger(__name__)

Status = Literal["applied", "duplicate", "rejected", "gap"]
SNAPSHOT_FILE = "snapshot.bin"


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one received blob."""

    status: Status
    reason: str = ""  # e.g. bad_signature, truncated, not_for_device, rollback, out_of_sequence
    message: str = ""
    kind: str = ""
    version: int = 0
    seq: int = 0
    needs_snapshot: bool = False  # a gap: ask for / wait for a full snapshot
    created: str = ""  # creation time the central signer put in the header

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "duplicate")


@dataclass
class _Counters:
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ListStore:
    """Holds the current ListIndex; `apply` swaps in a new one, matching reads `index` without locks."""

    def __init__(self, device_id: str, device_key: X25519PrivateKey, trusted: list[Ed25519PublicKey],
                 store_dir: Path | None = None):
        self.device_id = device_id
        self._device_key = device_key
        self._trusted = list(trusted)
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self._index: ListIndex | None = None
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._last: ApplyResult | None = None
        self._loaded_at: float | None = None
        self._created = ""
        self._flagged_expired: set[tuple[int, str]] = set()
        self._floor = self._read_floor()

    @classmethod
    def from_config(cls, cfg: ListsConfig) -> "ListStore":
        """Keys from the configured files, then the cached sealed package (if any) is loaded."""
        store = cls(cfg.device_id, keys.load_device_key(cfg.device_key),
                    keys.load_trusted_signers(cfg.signing_public_key), cfg.store_dir)
        store.load_cache()
        return store

    # --- reading --------------------------------------------------------------------------
    @property
    def index(self) -> ListIndex | None:
        return self._index

    @property
    def version(self) -> int:
        return self._index.version if self._index else 0

    @property
    def seq(self) -> int:
        return self._index.seq if self._index else 0

    def status(self, now_utc: datetime | None = None) -> dict:
        """Versions, per-list state and counts, rejection counts: no plates, no hashes."""
        now = now_utc or datetime.now(timezone.utc)
        idx = self._index
        out: dict = {"version": self.version, "seq": self.seq, "loaded": idx is not None,
                     "applied": self._counters.applied, "rejected": dict(self._counters.rejected),
                     "last_result": None}
        if self._last is not None:
            r = self._last
            out["last_result"] = {"status": r.status, "reason": r.reason, "kind": r.kind,
                                  "version": r.version, "seq": r.seq}
        if idx is not None:
            out["package_created"] = self._created  # watch this for withheld updates
            out["applied_at"] = datetime.fromtimestamp(self._loaded_at, timezone.utc).isoformat() \
                if self._loaded_at else None
            out["overlay"] = idx.overlay_size
            counts = idx.entry_counts()
            out["entries"] = sum(counts.values())
            out["memory_bytes"] = idx.nbytes
            out["lists"] = [{"id": d.id, "name": d.name, "category": d.category, "action": d.action,
                             "priority": d.priority, "active": d.active, "expired": d.is_expired(now),
                             "live": d.is_live(now), "entries": counts[d.id]} for d in idx.lists]
            out["expired"] = [d.id for d in idx.lists if d.is_expired(now)]
        return out

    def check_expiry(self, now_utc: datetime | None = None) -> list[str]:
        """Ids of expired lists; each is logged once per version."""
        now = now_utc or datetime.now(timezone.utc)
        idx = self._index
        if idx is None:
            return []
        expired = [d.id for d in idx.lists if d.is_expired(now)]
        for list_id in expired:
            if (idx.version, list_id) not in self._flagged_expired:
                self._flagged_expired.add((idx.version, list_id))
                log.warning("reference list %s expired (version %d); it produces no hits", list_id, idx.version)
        return expired

    # --- applying -------------------------------------------------------------------------
    def apply(self, blob: bytes, persist: bool = True, use_floor: bool = True) -> ApplyResult:
        """Verify and apply a snapshot or delta; the current index stays unless this one is good.

        use_floor=False (cache loading only) lets the cached snapshot in even when it is older than
        the floor, without touching self._floor (which the sync thread may be using meanwhile)."""
        with self._lock:
            t0 = time.monotonic()
            try:
                result, new = self._apply(blob, use_floor)
            except Exception as e:
                # A package that passed the signature check but breaks decoding in a way the checks
                # above do not foresee (a central-side bug, a future format) must not kill the sync
                # thread or the daemon's start-up: reject it and keep the last good index. Only the
                # exception type is reported: its text could quote decrypted payload content.
                result, new = ApplyResult("rejected", "corrupt", f"package cannot be applied ({type(e).__name__})"), None
            if new is not None:
                self._index = new  # the atomic swap: matchers holding the old index finish with it
                self._loaded_at = time.time()
                self._created = result.created
                self._counters.applied += 1
                if persist:
                    self._persist(blob, result)
                log.info("list %s applied: version %d seq %d, %d lists, %.0f ms", result.kind, result.version,
                         result.seq, len(new.lists), (time.monotonic() - t0) * 1000)
            elif result.status == "duplicate":
                log.debug("list %s version %d seq %d already applied", result.kind, result.version, result.seq)
            else:
                self._counters.rejected[result.reason] = self._counters.rejected.get(result.reason, 0) + 1
                log.warning("list package %s: %s (%s); keeping version %d seq %d", result.status, result.reason,
                            result.message, self.version, self.seq)
            self._last = result
            return result

    def _apply(self, blob: bytes, use_floor: bool = True) -> tuple[ApplyResult, ListIndex | None]:
        try:
            opened = open_package(blob, self._trusted, self.device_id, self._device_key)
        except PackageError as e:
            return ApplyResult("rejected", e.reason, str(e)), None
        h = opened.header
        cur = self._index
        have = (cur.version, cur.seq) if cur else (self._floor if use_floor else (0, 0))
        got = (h.version, h.seq)

        def res(status: Status, reason: str = "", message: str = "", gap: bool = False) -> ApplyResult:
            return ApplyResult(status, reason, message, h.kind, h.version, h.seq, gap, h.created)

        try:
            if h.kind == "snapshot":
                if got < have:
                    return res("rejected", "rollback", f"snapshot {got} is older than {have}"), None
                if cur is not None and got == have and not cur.overlay_size:
                    return res("duplicate"), None  # (with an overlay, the same state as one sorted array: compaction)
                return res("applied"), ListIndex.from_snapshot(h.version, h.seq, decode_snapshot(opened.payload))
            if cur is None:
                return res("gap", "no_snapshot", "a delta needs a snapshot first", gap=True), None
            if got == have:
                return res("duplicate"), None
            if got < have:
                return res("rejected", "rollback", f"delta {got} is older than {have}"), None
            if h.version > cur.version:
                return res("gap", "out_of_sequence", f"delta of version {h.version}, have {cur.version}",
                           gap=True), None
            if h.seq != cur.seq + 1:
                return res("gap", "out_of_sequence", f"delta seq {h.seq} after seq {cur.seq}", gap=True), None
            return res("applied"), cur.with_delta(h.seq, decode_delta(opened.payload))
        except DeltaError as e:
            return res("rejected", e.reason, str(e)), None
        except PayloadError as e:
            return res("rejected", "corrupt", str(e)), None

    # --- the cache of sealed blobs --------------------------------------------------------
    def _persist(self, blob: bytes, r: ApplyResult) -> None:
        if self.store_dir is None:
            return
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            if r.kind == "snapshot":
                _atomic_write(self.store_dir / SNAPSHOT_FILE, blob)
                for old in self.store_dir.glob("delta-*.bin"):
                    old.unlink()
            else:
                _atomic_write(self.store_dir / f"delta-{r.version}-{r.seq:08d}.bin", blob)
            _atomic_write(self.store_dir / "floor", f"{r.version} {r.seq}\n".encode())
            self._floor = (r.version, r.seq)
        except OSError as e:
            log.error("cannot cache list package in %s: %s", self.store_dir, e.strerror)

    def _read_floor(self) -> tuple[int, int]:
        """The newest (version, seq) ever applied: no rollback even when the cache is lost."""
        if self.store_dir is None:
            return (0, 0)
        try:
            v, s = (self.store_dir / "floor").read_text().split()
            return int(v), int(s)
        except (OSError, ValueError):
            return (0, 0)

    def load_cache(self) -> ApplyResult | None:
        """Re-apply the cached snapshot and its deltas (verifying them again); None when nothing cached.

        Never raises for a damaged cache: an unreadable or stray file is logged by name and skipped,
        so a unit with a broken cache still starts (with no lists or the last good ones) and resyncs.
        The floor is not lowered while loading (use_floor=False instead): the old code set
        self._floor to (0, 0) here, which a concurrent sync thread (config reload) could see, and
        then restored the old value over a newer one that thread had persisted."""
        if self.store_dir is None or not (self.store_dir / SNAPSHOT_FILE).exists():
            return None
        floor = self._floor
        snap = self.store_dir / SNAPSHOT_FILE
        try:
            result = self.apply(snap.read_bytes(), persist=False, use_floor=False)
        except OSError as e:
            log.error("cannot read cached list snapshot %s: %s; starting without it, waiting for a snapshot",
                      snap, e.strerror or e)
            return ApplyResult("rejected", "unreadable", f"cannot read {snap.name}")
        if not result.ok:
            log.error("cached list snapshot %s rejected (%s); waiting for a snapshot", snap, result.reason)
        deltas = []
        for p in self.store_dir.glob("delta-*.bin"):
            try:
                deltas.append((tuple(int(x) for x in p.stem.split("-")[1:]), p))
            except ValueError:
                log.warning("ignoring stray file %s in the list cache", p)
        for _, p in sorted(deltas):
            try:
                r = self.apply(p.read_bytes(), persist=False, use_floor=False)
            except OSError as e:  # e.g. removed by a concurrent snapshot persist, or a bad sector
                log.error("cannot read cached list delta %s: %s", p, e.strerror or e)
                continue
            result = r if r.status != "duplicate" else result
        if self._index is not None and (self.version, self.seq) < floor:
            log.warning("cached lists are older than the last applied version %s; waiting for a snapshot", floor)
        return result


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename (and any unlinks before it) lives in the directory: without fsyncing it, a power
    # cut can leave the old name, or a floor file that survives while the snapshot rename does not.
    dfd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
