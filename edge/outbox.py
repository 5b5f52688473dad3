"""Durable outbox: a hit is on disk before anyone tries to publish it, and leaves only on PUBACK.

SQLite in WAL mode with synchronous=FULL, so `put()` returning True means the hit survives a
power cut or SIGKILL. The publisher reads `pending()` in order (higher `priority` first, oldest
first within a priority) and calls `ack()` when the broker acknowledged. The cool-down table keeps only keyed hashes (HMAC-SHA256) of plate+list, never text.

A full disk must not stop delivery: deleting needs space too (WAL, secure_delete), so a hit whose
DELETE fails is remembered in memory as acknowledged, never handed out by `pending()` again by this
process, no longer counted in `depth()`, and deleted on a later `ack()`/`put()`. After a restart it
may be sent once more (the consumer deduplicates by hit id).
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

_monotonic = time.monotonic  # the outbox's own clock for retries and pruning (tests replace it)


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
    priority: int = 0  # higher is sent first; `pending()` orders by (priority desc, seq asc)
    evidence_omitted: str = ""  # why it is to be sent without its evidence (`omit_evidence`); "" = whole


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hit_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    evidence_omitted TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS cooldown(
    key BLOB PRIMARY KEY,
    until REAL NOT NULL
);
"""

# Files written before hits had a priority lack the column: added in place (existing rows get 0).
# No schema version is kept; each migration checks for what it adds, so it is safe to run on every open.
_ORDER_INDEX = "CREATE INDEX IF NOT EXISTS outbox_order ON outbox(priority DESC, seq)"


class Outbox:
    """Thread-safe durable queue of hit messages (one SQLite connection behind a lock)."""

    def __init__(self, path: str | Path, max_items: int = 100_000, alarm_at: int | None = None,
                 cooldown_s: float = 300.0, key: bytes | None = None):
        self.path = Path(path)
        self.max_items = int(max_items)
        self.alarm_at = int(alarm_at if alarm_at is not None else max_items)
        self.cooldown_s = float(cooldown_s)
        self.rejected = 0  # hits refused because the outbox was full
        self.prune_every_s = 600.0  # put() forgets expired cool-downs at most this often
        self._lock = threading.Lock()
        self._alarm_logged = False
        # Acknowledged by the broker but not yet deleted (the DELETE failed, e.g. disk full). Holds only
        # hit ids that are (as far as known) still rows of the table; in memory only, see the module doc.
        self._acked: set[str] = set()
        self._held: dict[str, float] = {}  # hit id -> not_before, where defer() could not write it
        self._retry_at = 0.0  # monotonic: put() retries the deletes of self._acked from then on
        self._delete_failed_logged = 0.0  # monotonic time of the last "cannot delete" error line
        self._next_prune = 0.0  # monotonic
        self._acked_since_checkpoint = 0
        self._listeners: list[Callable[[], None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: the file system does not support SQLite WAL (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # acknowledged hits are overwritten, not just unlinked
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as e:
            raise OutboxError(f"outbox {self.path}: cannot open SQLite database: {e}") from None
        self._key = key if key is not None else self._load_key()

    def _migrate(self) -> None:
        """Bring an outbox file of an older version up to date (one transaction; raises sqlite3.Error)."""
        self._db.execute("BEGIN IMMEDIATE")  # a second process opening the same file waits, then sees the column
        try:
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            if "priority" not in cols:
                self._db.execute("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
                log.info("outbox %s: added the priority column (waiting hits get priority 0)", self.path)
            if "evidence_omitted" not in cols:
                self._db.execute("ALTER TABLE outbox ADD COLUMN evidence_omitted TEXT NOT NULL DEFAULT ''")
                log.info("outbox %s: added the evidence_omitted column", self.path)
            self._db.execute(_ORDER_INDEX)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            raise

    @classmethod
    def from_config(cls, cfg: OutboxConfig, key: bytes | None = None) -> "Outbox":
        if cfg.path is None:
            raise OutboxError("outbox.path is not resolved (call OutboxConfig.resolved first)")
        return cls(cfg.path, cfg.max_items, cfg.alarm_at, cfg.cooldown_s, key)

    def _load_key(self) -> bytes:
        """The cool-down HMAC key: a random 32-byte file beside the database, readable by the owner only.

        The key only hashes the cool-down table; the stored hits do not depend on it. So a key file that
        is missing or of the wrong length (empty or short: a power cut while an older version first wrote
        it in place) is replaced by a new key, and the cool-downs hashed with the old one are forgotten:
        at worst a plate is sent once more within its cool-down. The daemon must not refuse to start.
        """
        kp = self.path.with_name(self.path.name + ".key")
        try:
            old = kp.read_bytes()
        except FileNotFoundError:
            old = None
        except OSError as e:
            raise OutboxError(f"outbox key file {kp}: cannot read: {e.strerror}") from None
        if old is not None and len(old) == 32:
            return old
        if old is not None:
            log.warning("outbox key file %s is damaged (%d bytes, expected 32; a power cut while it was "
                        "written?): a new key is made and the cool-downs are reset", kp, len(old))
        key = os.urandom(32)
        with self._lock:
            try:  # entries hashed with another key can never match again; forget them before the new key exists
                self._db.execute("DELETE FROM cooldown")
            except sqlite3.Error as e:
                log.warning("outbox: cannot clear the old cool-downs (%s); they expire unused", e)
        try:
            self._write_key(kp, key)
        except OSError as e:
            log.error("outbox key file %s cannot be written (%s): cool-downs of this run are not kept "
                      "across a restart", kp, e.strerror)
        return key

    @staticmethod
    def _write_key(kp: Path, key: bytes) -> None:
        """Atomically: a temporary file in the same folder, fsync, rename over the key file, fsync the folder."""
        tmp = kp.with_name(kp.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # also when a temporary file was left over
                view = memoryview(key)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, kp)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(kp.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)

    def on_put(self, listener: Callable[[], None]) -> None:
        """Call listener (cheap, non-blocking: e.g. Publisher.notify) after every stored hit."""
        self._listeners.append(listener)

    def off_put(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- hits ---------------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, hit_id: str, *, cooldown: tuple[tuple[str, str], ...] = (),
            now: float | None = None, priority: int = 0) -> bool:
        """Store one hit durably; True once it is on disk (also when this hit_id is already stored).

        `priority`: higher is handed out first by `pending()` (a hit already stored keeps its own).

        False when the outbox is full (the hit is counted in `rejected`). `cooldown` pairs of
        (plate, list_id) start their cool-down in the same transaction. Raises OutboxError when the
        hit cannot be written (disk full, I/O error).
        """
        if not topic or not hit_id:
            raise ValueError("outbox put needs a topic and a hit_id")
        if not isinstance(payload, (bytes, bytearray)):
            raise TypeError(f"outbox payload must be bytes, got {type(payload).__name__}")
        now = time.time() if now is None else now
        with self._lock:
            depth = self._depth()
            if depth >= self.max_items:
                self.rejected += 1
                log.error("outbox full (%d items, max %d): hit %s refused; %d refused so far",
                          depth, self.max_items, hit_id, self.rejected)
                return False
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO outbox(hit_id, topic, payload, created, priority) "
                                 "VALUES (?,?,?,?,?)", (hit_id, topic, bytes(payload), now, int(priority)))
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
            # The write went through, so there may be space again for the deletes that failed before.
            if self._acked and _monotonic() >= self._retry_at:
                try:
                    self._delete_locked(())
                except sqlite3.Error as e:
                    self._delete_failed(e)
            if _monotonic() >= self._next_prune:
                self._next_prune = _monotonic() + self.prune_every_s
                self._prune_locked(now)
        for listener in self._listeners:
            listener()
        return True

    def pending(self, limit: int = 100, now: float | None = None) -> list[OutboxItem]:
        """Unacknowledged hits that may be sent now: higher priority first, oldest first within a priority.

        Hits acknowledged by `ack()` are never returned again, also when their DELETE failed.
        """
        now = time.time() if now is None else now
        cols = "seq, hit_id, topic, payload, created, attempts, priority, evidence_omitted"
        order = "ORDER BY priority DESC, seq"  # served by the outbox_order index
        with self._lock:
            for h in [h for h, until in self._held.items() if until <= now]:
                del self._held[h]
            if not self._acked and not self._held:
                rows = self._db.execute(f"SELECT {cols} FROM outbox WHERE not_before <= ? {order} LIMIT ?",
                                        (now, int(limit))).fetchall()
            else:  # skip in memory: first the (small) keys in order, then the chosen rows with their payloads
                seqs: list[int] = []
                cur = self._db.execute(f"SELECT seq, hit_id FROM outbox WHERE not_before <= ? {order}", (now,))
                try:
                    for seq, h in cur:
                        if len(seqs) >= limit:
                            break
                        if h not in self._acked and h not in self._held:
                            seqs.append(seq)
                finally:
                    cur.close()
                rows = []
                for i in range(0, len(seqs), 500):
                    part = seqs[i:i + 500]
                    rows += self._db.execute(f"SELECT {cols} FROM outbox WHERE seq IN ({','.join('?' * len(part))}) "
                                             f"{order}", part).fetchall()
        return [OutboxItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def ack(self, *hit_ids: str) -> int:
        """The broker acknowledged these hits: delete them (one transaction); returns how many were stored.

        Never raises for a failed write: when the DELETE fails (disk full), the hits are remembered as
        acknowledged, `pending()` no longer returns them and `depth()` no longer counts them, and the
        delete is retried on later `ack()`/`put()` calls (see the module doc). They still count in the
        return value, which is what the publisher reports as acknowledged.
        """
        with self._lock:
            new = [h for h in dict.fromkeys(hit_ids) if h not in self._acked]
            if not new:
                return 0
            for h in new:
                self._held.pop(h, None)
            try:
                n = self._delete_locked(new)
            except sqlite3.Error as e:
                try:
                    stored = {h for h in new for _ in self._db.execute(
                        "SELECT 1 FROM outbox WHERE hit_id = ?", (h,))}
                except sqlite3.Error:
                    stored = set(new)  # cannot tell: never send them again rather than resend forever
                self._acked |= stored
                self._delete_failed(e)
                n = len(stored)
            depth = self._depth()
            if self._alarm_logged and depth < self.alarm_at:
                self._alarm_logged = False
                log.info("outbox alarm cleared")
        return n

    _DELETE_CHUNK = 500  # earlier failed deletes retried per call: a bounded transaction, a bounded pause

    def _delete_locked(self, hit_ids) -> int:
        """Delete hit_ids plus up to _DELETE_CHUNK of the earlier failed ones; raises sqlite3.Error.

        Returns how many of hit_ids were deleted.
        """
        backlog = list(self._acked)[:self._DELETE_CHUNK]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            n = 0
            for h in hit_ids:
                n += self._db.execute("DELETE FROM outbox WHERE hit_id = ?", (h,)).rowcount
            for h in backlog:
                self._db.execute("DELETE FROM outbox WHERE hit_id = ?", (h,))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            raise
        if backlog:
            self._acked.difference_update(backlog)
            log.info("outbox: %d acknowledged hit(s) deleted after an earlier failure; %d still to delete",
                     len(backlog), len(self._acked))
        self._retry_at = 0.0
        self._acked_since_checkpoint += n + len(backlog)
        if self._acked_since_checkpoint and (self._depth() == 0 or self._acked_since_checkpoint >= 1000):
            self._checkpoint()
        return n

    def _delete_failed(self, e: sqlite3.Error) -> None:
        self._retry_at = _monotonic() + 5.0  # put() does not retry on every hit while the disk is full
        if _monotonic() - self._delete_failed_logged >= 60.0 or not self._delete_failed_logged:
            self._delete_failed_logged = _monotonic()
            log.error("outbox %s: cannot delete acknowledged hits (%s); %d kept in memory as acknowledged, "
                      "not sent again, deleted once there is space", self.path, e, len(self._acked))

    def _checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so no copy of an acknowledged hit stays in the WAL."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._acked_since_checkpoint = 0
        except sqlite3.Error as e:
            log.warning("outbox checkpoint failed (%s); retried after the next acknowledgements", e)

    def defer(self, hit_id: str, delay_s: float, now: float | None = None) -> None:
        """Count a failed attempt and hold the hit back for delay_s (the broker refused it).

        When that cannot be written (disk full), the hold is kept in memory instead; never raises.
        """
        now = time.time() if now is None else now
        with self._lock:
            try:
                self._db.execute("UPDATE outbox SET attempts = attempts + 1, not_before = ? WHERE hit_id = ?",
                                 (now + delay_s, hit_id))
                self._held.pop(hit_id, None)
            except sqlite3.Error as e:
                self._held[hit_id] = now + delay_s
                log.warning("outbox: cannot record the hold-back of hit %s (%s); held in memory", hit_id, e)

    def omit_evidence(self, hit_id: str, note: str) -> bool:
        """Record that the hit is to be sent without its evidence from now on, and why, so that a
        restart does not first repeat what made that necessary (a broker dropping the connection on
        it). The full message stays stored. False (logged, never raised) when it cannot be written."""
        with self._lock:
            try:
                self._db.execute("UPDATE outbox SET evidence_omitted = ? WHERE hit_id = ?", (note, hit_id))
                return True
            except sqlite3.Error as e:
                log.warning("outbox: cannot record that hit %s goes without evidence (%s)", hit_id, e)
                return False

    def depth(self) -> int:
        """Hits waiting for the broker's acknowledgement (acknowledged ones whose delete failed are not counted)."""
        with self._lock:
            return self._depth()

    def _depth(self) -> int:
        return max(0, self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - len(self._acked))

    @property
    def alarm(self) -> bool:
        return self.depth() >= self.alarm_at

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds the oldest unacknowledged hit has waited (0 when empty)."""
        now = time.time() if now is None else now
        with self._lock:
            if not self._acked:
                oldest = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            else:  # the first one in put order that is not acknowledged
                oldest = None
                cur = self._db.execute("SELECT hit_id, created FROM outbox ORDER BY seq")
                try:
                    for h, created in cur:
                        if h not in self._acked:
                            oldest = created
                            break
                finally:
                    cur.close()
        return 0.0 if oldest is None else max(0.0, now - oldest)

    # -- cool-down ----------------------------------------------------------------------------

    def _cooldown_key(self, plate: str, list_id: str) -> bytes:
        return hmac.new(self._key, f"{list_id}\x00{plate}".encode("utf-8"), hashlib.sha256).digest()

    def suppressed(self, plate: str, list_id: str, now: float | None = None) -> bool:
        """True while this plate was already sent for this list within the cool-down."""
        if self.cooldown_s <= 0:
            return False
        now = time.time() if now is None else now
        with self._lock:
            try:
                row = self._db.execute("SELECT until FROM cooldown WHERE key = ?",
                                       (self._cooldown_key(plate, list_id),)).fetchone()
            except sqlite3.Error as e:  # rather a repeated hit than a lost one
                log.warning("outbox: cannot read the cool-downs (%s); the hit is not held back", e)
                return False
        return row is not None and row[0] > now

    def prune_cooldown(self, now: float | None = None) -> int:
        """Forget expired cool-downs; returns how many were removed (put() also calls this now and then)."""
        now = time.time() if now is None else now
        with self._lock:
            return self._db.execute("DELETE FROM cooldown WHERE until <= ?", (now,)).rowcount

    def _prune_locked(self, now: float) -> None:
        try:
            n = self._db.execute("DELETE FROM cooldown WHERE until <= ?", (now,)).rowcount
        except sqlite3.Error as e:
            log.warning("outbox: cannot prune expired cool-downs (%s); retried later", e)
            return
        if n:
            log.debug("outbox: %d expired cool-down(s) forgotten", n)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            while self._acked:  # last chance to delete what the broker acknowledged; else resent after a restart
                try:
                    self._delete_locked(())
                except sqlite3.Error as e:
                    log.warning("outbox: %d acknowledged hit(s) could not be deleted (%s); they are sent "
                                "again after the restart", len(self._acked), e)
                    break
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
