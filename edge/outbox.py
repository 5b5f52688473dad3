"""Durable outbox: a hit is on disk before anyone tries to publish it, and leaves only on PUBACK.

SQLite in WAL mode with synchronous=FULL, so `put()` returning True means the hit survives a
power cut or SIGKILL. The publisher reads `pending()` in order and calls `ack()` when the broker
acknowledged. The cool-down table keeps only keyed hashes (HMAC-SHA256) of plate+list, never text.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import Field, model_validator

from edge.configbase import Section

log = logging.getLogger(__name__)


class OutboxConfig(Section):
    path: Path | None = Field(None, description=(
        "SQLite file of the outbox; relative paths are taken from the config file's folder. "
        "Default: outbox.sqlite in device.state_dir."))
    max_items: int = Field(100_000, ge=10, description="Most hits kept unacknowledged; further hits are refused and counted.")
    alarm_at: int = Field(10_000, ge=1, description="Depth at which the status reports an outbox alarm (broker unreachable too long).")
    cooldown_s: float = Field(300.0, ge=0, description=(
        "The same plate on the same list is not sent again within this many seconds (0 = off)."))

    @model_validator(mode="after")
    def _alarm_below_max(self):
        if self.alarm_at > self.max_items:
            raise ValueError(f"alarm_at ({self.alarm_at}) must not exceed max_items ({self.max_items})")
        return self

    def resolved(self, base: Path, state_dir: Path) -> "OutboxConfig":
        """Absolute path: default in state_dir, relative paths from the config file's folder."""
        if self.path is None:
            return self.model_copy(update={"path": Path(state_dir) / "outbox.sqlite"})
        return self.model_copy(update={"path": self.path if self.path.is_absolute() else Path(base) / self.path})


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written durably."""


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    hit_id: str
    topic: str
    payload: bytes
    created: float  # unix time the hit entered the outbox
    attempts: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hit_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cooldown(
    key BLOB PRIMARY KEY,
    until REAL NOT NULL
);
"""


class Outbox:
    """Thread-safe durable queue of hit messages (one SQLite connection behind a lock)."""

    def __init__(self, path: str | Path, max_items: int = 100_000, alarm_at: int | None = None,
                 cooldown_s: float = 300.0, key: bytes | None = None):
        self.path = Path(path)
        self.max_items = int(max_items)
        self.alarm_at = int(alarm_at if alarm_at is not None else max_items)
        self.cooldown_s = float(cooldown_s)
        self.rejected = 0  # hits refused because the outbox was full
        self._lock = threading.Lock()
        self._alarm_logged = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: the file system does not support SQLite WAL (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # acknowledged hits are overwritten, not just unlinked
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise OutboxError(f"outbox {self.path}: cannot open SQLite database: {e}") from None
        self._key = key if key is not None else self._load_key()
        self._acked_since_checkpoint = 0
        self._listeners: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, cfg: OutboxConfig, key: bytes | None = None) -> "Outbox":
        if cfg.path is None:
            raise OutboxError("outbox.path is not resolved (call OutboxConfig.resolved first)")
        return cls(cfg.path, cfg.max_items, cfg.alarm_at, cfg.cooldown_s, key)

    def _load_key(self) -> bytes:
        """The cool-down HMAC key: a random 32-byte file beside the database, readable by the owner only."""
        kp = self.path.with_name(self.path.name + ".key")
        try:
            fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = kp.read_bytes()
            if len(key) != 32:
                raise OutboxError(f"outbox key file {kp} is damaged (expected 32 bytes); delete it to reset cool-downs")
            return key
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key

    def on_put(self, listener: Callable[[], None]) -> None:
        """Call listener (cheap, non-blocking: e.g. Publisher.notify) after every stored hit."""
        self._listeners.append(listener)

    def off_put(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- hits ---------------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, hit_id: str, *, cooldown: tuple[tuple[str, str], ...] = (),
            now: float | None = None) -> bool:
        """Store one hit durably; True once it is on disk (also when this hit_id is already stored).

        False when the outbox is full (the hit is counted in `rejected`). `cooldown` pairs of
        (plate, list_id) start their cool-down in the same transaction.
        """
        if not topic or not hit_id:
            raise ValueError("outbox put needs a topic and a hit_id")
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError(f"outbox payload must be bytes, got {type(payload).__name__}")
        now = time.time() if now is None else now
        with self._lock:
            depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            if depth >= self.max_items:
                self.rejected += 1
                log.error("outbox full (%d items, max %d): hit %s refused; %d refused so far",
                          depth, self.max_items, hit_id, self.rejected)
                return False
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO outbox(hit_id, topic, payload, created) VALUES (?,?,?,?)",
                                 (hit_id, topic, bytes(payload), now))
                for plate, list_id in cooldown:
                    self._db.execute("INSERT OR REPLACE INTO cooldown(key, until) VALUES (?,?)",
                                     (self._cooldown_key(plate, list_id), now + self.cooldown_s))
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: cannot store hit {hit_id}: {e}") from None
            if depth + 1 >= self.alarm_at and not self._alarm_logged:
                self._alarm_logged = True
                log.warning("outbox alarm: %d unacknowledged hits (alarm at %d)", depth + 1, self.alarm_at)
        for listener in self._listeners:
            listener()
        return True

    def pending(self, limit: int = 100, now: float | None = None) -> list[OutboxItem]:
        """The oldest unacknowledged hits that may be sent now, in the order they were put."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, hit_id, topic, payload, created, attempts FROM outbox WHERE not_before <= ? "
                "ORDER BY seq LIMIT ?", (now, int(limit))).fetchall()
        return [OutboxItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def ack(self, *hit_ids: str) -> int:
        """Delete acknowledged hits (one transaction for all given); returns how many were deleted."""
        if not hit_ids:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                n = 0
                for h in hit_ids:
                    n += self._db.execute("DELETE FROM outbox WHERE hit_id = ?", (h,)).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: cannot delete acknowledged hits: {e}") from None
            self._acked_since_checkpoint += n
            depth = self._depth()
            if self._acked_since_checkpoint and (depth == 0 or self._acked_since_checkpoint >= 1000):
                self._checkpoint()
            if self._alarm_logged and depth < self.alarm_at:
                self._alarm_logged = False
                log.info("outbox alarm cleared")
        return n

    def _checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so no copy of an acknowledged hit stays in the WAL."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._acked_since_checkpoint = 0
        except sqlite3.Error as e:
            log.warning("outbox checkpoint failed (%s); retried after the next acknowledgements", e)

    def defer(self, hit_id: str, delay_s: float, now: float | None = None) -> None:
        """Count a failed attempt and hold the hit back for delay_s (the broker refused it)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, not_before = ? WHERE hit_id = ?",
                             (now + delay_s, hit_id))

    def mark_attempt(self, hit_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE hit_id = ?", (hit_id,))

    def depth(self) -> int:
        with self._lock:
            return self._depth()

    def _depth(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    @property
    def alarm(self) -> bool:
        return self.depth() >= self.alarm_at

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds the oldest unacknowledged hit has waited (0 when empty)."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()
        return 0.0 if row[0] is None else max(0.0, now - row[0])

    # -- cool-down ----------------------------------------------------------------------------

    def _cooldown_key(self, plate: str, list_id: str) -> bytes:
        return hmac.new(self._key, f"{list_id}\x00{plate}".encode("utf-8"), hashlib.sha256).digest()

    def suppressed(self, plate: str, list_id: str, now: float | None = None) -> bool:
        """True while this plate was already sent for this list within the cool-down."""
        if self.cooldown_s <= 0:
            return False
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute("SELECT until FROM cooldown WHERE key = ?",
                                   (self._cooldown_key(plate, list_id),)).fetchone()
        return row is not None and row[0] > now

    def prune_cooldown(self, now: float | None = None) -> int:
        """Forget expired cool-downs; returns how many were removed."""
        now = time.time() if now is None else now
        with self._lock:
            return self._db.execute("DELETE FROM cooldown WHERE until <= ?", (now,)).rowcount

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
