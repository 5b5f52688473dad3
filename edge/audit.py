"""Audit trail: a local, append-only, hash-chained log of what was done to the unit.

Each JSON line records one event (start/stop, config change, list activation/deactivation, key
rotation) with a running number, the UTC time, the SHA-256 of the previous entry (`prev`) and its
own SHA-256 (`hash`, over the canonical JSON of every other field). Editing, deleting, inserting or
reordering lines breaks the chain, and `anpr-edge audit verify FILE` names the first bad line.
Cutting lines off the end cannot be seen in the file alone: every entry is also handed to a
`publish` hook (the daemon sends it to the central audit topic), and `verify --head HASH` checks
that the last hash the centre received is one of the file's entries (later ones may still wait in
the outbox). A line torn by a power cut is reported, and the check goes on past it.

Only the fields listed per event in `EVENTS` are accepted: the audit trail never holds plate texts.
"""

from __future__ import annotations

import argparse
import collections
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from edge.configbase import Section

log = logging.getLogger(__name__)

GENESIS = "0" * 64
SCHEMA = 1

# event -> the data fields it may carry (all optional). Anything else is refused, so that a
# careless caller cannot put a plate text or a secret into the trail.
EVENTS: dict[str, frozenset[str]] = {
    "start": frozenset({"software", "config_sha256", "detector", "recognizer", "lists_version", "boot_id"}),
    "stop": frozenset({"reason", "uptime_s", "outbox_depth"}),
    "config_change": frozenset({"old_sha256", "new_sha256", "sections", "accepted", "error"}),
    "list_activated": frozenset({"list_id", "name", "category", "version", "entries", "valid_from", "valid_until"}),
    "list_deactivated": frozenset({"list_id", "name", "version", "reason"}),
    "key_rotation": frozenset({"key", "old_kid", "new_kid", "reason"}),
    "audit_damaged_tail": frozenset({"line", "bytes"}),
}
ENTRY_KEYS = ("v", "seq", "ts", "device", "event", "data", "prev")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_STR = 200
_TAIL_BYTES = 65536  # far more than one entry
_MAX_UNPUBLISHED = 1000  # entries kept for a publish retry (the file keeps them all)


class AuditError(ValueError):
    """An event the audit trail refuses, or an audit file that cannot be used."""


class AuditConfig(Section):
    file: str = Field("audit.jsonl", min_length=1, description=(
        "Audit trail file; a relative name is inside device.state_dir."))
    topic: str = Field("anpr/{device}/audit", min_length=1, description=(
        "MQTT topic every audit entry is also published to ({device} is replaced by device.id)."))
    fsync: bool = Field(True, description="Flush every entry to the storage before going on (survives power loss).")


def canonical(entry: dict) -> bytes:
    """The bytes an entry's hash is taken over: sorted keys, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict) -> str:
    """SHA-256 over every field except `hash` itself."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Fingerprint of a config file for config_change/start entries (never its content: it holds secrets)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def changed_sections(old: Any, new: Any) -> list[str]:
    """Names of the top-level sections that differ between two configs (values are not logged)."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _check_value(event: str, key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if len(value) > _MAX_STR or "\n" in value:
            raise AuditError(f"audit event {event!r}: field {key!r} must be a short one-line text")
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and len(v) <= _MAX_STR for v in value):
        return list(value)
    raise AuditError(f"audit event {event!r}: field {key!r} has unsupported type {type(value).__name__}")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AuditLog:
    """Appends chained entries to one file; thread-safe; `publish` gets every entry after it is written.

    Opening an existing file continues its chain from the last line. A last line torn by a power
    cut is kept as evidence and followed by an `audit_damaged_tail` entry, so the unit keeps
    running and `verify` still reports the damage.
    """

    def __init__(self, path: str | Path, device: str = "", publish: Callable[[dict], None] | None = None,
                 fsync: bool = True, clock: Callable[[], datetime] = _utc_now):
        self.path = Path(path)
        self.device = device
        self.publish = publish
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        # entries written but not yet handed to `publish`, oldest first: one whose publish fails is
        # tried again with the next append (at the first start the daemon's outbox does not exist yet
        # when the audit_damaged_tail entry for a power cut is written: it used to be lost centrally)
        self._outgoing: collections.deque[dict] = collections.deque(maxlen=_MAX_UNPUBLISHED)
        self._publish_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._head, self._size = 0, GENESIS, 0
        if self.path.exists():
            # Read the tail (and record a damaged last line) under the same locks as every append:
            # read unlocked, another writer's half-written line looked torn and forked the chain.
            self._write(None, {})

    @classmethod
    def from_config(cls, cfg: AuditConfig, state_dir: Path, device: str,
                    publish: Callable[[dict], None] | None = None) -> "AuditLog":
        path = Path(cfg.file)
        return cls(path if path.is_absolute() else state_dir / path, device, publish, cfg.fsync)

    @property
    def head(self) -> str:
        """Hash of the last entry (GENESIS for an empty log)."""
        return self._head

    def _read_tail(self, fd: int) -> tuple[int, str, tuple[int, int] | None]:
        """(last seq, last hash, (line number, bytes) of a damaged last line or None).

        Called with the file locked (`fd` is the locked append descriptor). Reads only the end of
        the file: the trail grows for the life of the unit."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, None
        with open(self.path, "rb") as f:
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read(size - f.tell())
        torn = not tail.endswith(b"\n")  # a complete file ends with a newline
        # (strip one newline only: an empty last line is a damaged line too, as verify() sees it)
        last = tail.rsplit(b"\n", 1)[-1] if torn else tail[:-1].rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(last)
            if (torn or not isinstance(entry, dict) or entry.get("hash") != entry_hash(entry)
                    or not isinstance(entry.get("seq"), int)):
                raise ValueError
        except ValueError:
            # rare (power cut mid-write, or tampering): read it all to name the line
            with open(self.path, "rb") as f:
                lines = f.read(size).split(b"\n")
            if not torn:
                lines.pop()
            else:  # finish the torn line so the next entry starts on a line of its own
                os.write(fd, b"\n")
            # continue after the damaged line: its bytes are chained in, so nobody can swap it later
            good = _last_good(lines[:-1])
            return good[0], hashlib.sha256(lines[-1]).hexdigest(), (len(lines), len(lines[-1]))
        return entry["seq"], entry["hash"], None

    def record(self, event: str, **data: Any) -> dict:
        """Append one event and return the written entry; raises AuditError for unknown events or fields."""
        allowed = EVENTS.get(event)
        if allowed is None:
            raise AuditError(f"unknown audit event {event!r}; known: {', '.join(sorted(EVENTS))}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise AuditError(f"audit event {event!r} does not take field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(allowed))}")
        clean = {k: _check_value(event, k, v) for k, v in sorted(data.items())}
        return self._write(event, clean)

    def _write(self, event: str | None, clean: dict) -> dict | None:
        """Under both locks: catch up with the file, record a damaged last line, append `event` (if any)."""
        written: list[dict] = []
        with self._lock:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, also across processes
                if created and self.fsync:
                    _fsync_dir(self.path.parent)  # else a power cut can lose the new file's name, entries and all
                if os.fstat(fd).st_size != self._size:
                    # the file changed since our last append (just opened, another AuditLog or process on
                    # the same file, or one that died mid-write): chain after its last line, and record a
                    # damaged one here too (it used to be dropped silently, leaving verify() stuck on it)
                    self._seq, self._head, damaged = self._read_tail(fd)
                    if damaged is not None:
                        written.append(self._append(fd, "audit_damaged_tail",
                                                    {"bytes": damaged[1], "line": damaged[0]}))
                if event is not None:
                    written.append(self._append(fd, event, clean))
                self._size = os.fstat(fd).st_size
            finally:
                os.close(fd)  # releases the lock
                if self.publish is not None:
                    self._outgoing.extend(written)  # in file order, whatever thread publishes them
        if self.publish is not None:
            with self._publish_lock:
                while self._outgoing:
                    entry = self._outgoing[0]
                    try:
                        self.publish(entry)
                    except Exception as e:  # the local file is the record; the network copy may come later
                        log.warning("audit entry %d written but not published yet: %s", entry["seq"], e)
                        break
                    self._outgoing.popleft()
        return written[-1] if written else None

    def _append(self, fd: int, event: str, clean: dict) -> dict:
        entry = {"v": SCHEMA, "seq": self._seq + 1,
                 "ts": self._clock().isoformat(timespec="milliseconds"),
                 "device": self.device, "event": event, "data": clean, "prev": self._head}
        entry["hash"] = entry_hash(entry)
        line = canonical(entry) + b"\n"
        start = os.fstat(fd).st_size
        try:
            # one write of one line: O_APPEND keeps lines whole
            if os.write(fd, line) != len(line):  # disk full part-way: never leave half a line behind
                raise OSError(errno.ENOSPC, f"{self.path}: audit entry only partly written (disk full?)")
        except OSError:
            try:
                os.ftruncate(fd, start)  # we hold the lock: these bytes are ours
            except OSError:
                pass
            raise
        if self.fsync:
            os.fsync(fd)
        self._seq, self._head = entry["seq"], entry["hash"]
        return entry


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _last_good(lines: list[bytes]) -> tuple[int, str]:
    for raw in reversed(lines):
        try:
            entry = json.loads(raw)
            if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
                return entry["seq"], entry.get("hash", GENESIS)
        except ValueError:
            continue
    return 0, GENESIS


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one audit file."""

    ok: bool
    entries: int  # good entries checked
    head: str  # hash of the last good entry
    bad_line: int | None = None  # 1-based number of the first bad line
    reason: str = ""
    damaged: tuple[int, ...] = ()  # damaged lines the unit itself recorded (audit_damaged_tail) and chained past
    after_head: int = 0  # entries after the expected head (written, not yet received centrally)

    def describe(self, name: str) -> str:
        if self.ok:
            newer = f", {self.after_head} newer than the expected head" if self.after_head else ""
            return f"{name}: OK, {self.entries} entries, chain intact, head {self.head}{newer}"
        return f"{name}: line {self.bad_line}: {self.reason}"


def _check_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(entry, None) for a well-formed entry whose hash matches, else (None or entry, reason)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None, "not a JSON entry (damaged or torn line)"
    if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS) | {"hash"}:
        return None, f"not an audit entry (expected keys {', '.join(ENTRY_KEYS)}, hash)"
    if entry["hash"] != entry_hash(entry):
        return None, "content does not match its hash (the line was edited)"
    # the bytes must be exactly what was hashed: a duplicate key (`"data":{..},"data":{..}`) is read
    # one way by this check and maybe the other way by a person or another JSON reader
    if raw != canonical(entry):
        return None, "not in the unit's canonical form (duplicate keys or reformatted: the line was edited)"
    if not isinstance(entry["event"], str) or entry["event"] not in EVENTS or not isinstance(entry["data"], dict):
        return None, f"unknown event {entry['event']!r}"
    return entry, None


def verify(path: str | Path, expect_head: str | None = None) -> VerifyResult:
    """Check every line's hash and its link to the line before; name the first bad line.

    A bad line directly followed by the unit's own `audit_damaged_tail` entry for it (a line torn
    by a power cut, recorded at the next start) stays a finding (not ok, named with its reason),
    but the chain is followed through its bytes and every later line is checked as well: such a
    line used to end the check, so nothing written after any power cut was ever verified again.
    `expect_head` (the last hash the centre received) must be one of the chain's entries; entries
    after it are ones not yet delivered, and are counted in `after_head`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"{path}: audit file not found") from None
    except OSError as e:
        raise AuditError(f"{path}: cannot read audit file: {e.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev, seq, entries = GENESIS, 0, 0
    chain = {GENESIS: 0}  # entry hash -> good entries up to and including it
    damaged: list[tuple[int, str]] = []
    pending: tuple[int, str, bytes] | None = None  # a bad line, unless the next line records it
    for n, raw in enumerate(lines, start=1):
        entry, reason = _check_line(raw)
        if pending is not None:
            bad_n, bad_reason, bad_raw = pending
            data_ = entry["data"] if entry is not None else {}
            if not (entry is not None and entry["event"] == "audit_damaged_tail"
                    and data_.get("line") == bad_n and data_.get("bytes") == len(bad_raw)):
                return VerifyResult(False, entries, prev, bad_n, bad_reason, tuple(d for d, _ in damaged))
            damaged.append((bad_n, bad_reason))
            prev, pending = hashlib.sha256(bad_raw).hexdigest(), None  # the unit chained on from its bytes
        if entry is not None:
            if not isinstance(entry["seq"], int) or entry["seq"] != seq + 1:
                reason = (f"sequence number {entry['seq']!r}, expected {seq + 1} "
                          "(a line before it was deleted, inserted or moved)")
            elif entry["prev"] != prev:
                reason = "does not chain to the previous line's hash (lines deleted, inserted or reordered)"
        if reason is not None:
            pending = (n, reason, raw)
            continue
        prev, seq, entries = entry["hash"], entry["seq"], entries + 1
        chain[prev] = entries
    found = tuple(d for d, _ in damaged)
    if pending is not None:
        return VerifyResult(False, entries, prev, pending[0], pending[1], found)
    after = 0
    if expect_head is not None:
        if expect_head.lower() not in chain:
            return VerifyResult(False, entries, prev, len(lines) + 1,
                                f"chain ends at {prev}, and the expected head {expect_head} is none of its "
                                "entries (entries missing at the end, lines edited, or a different file)", found)
        after = entries - chain[expect_head.lower()]
    if damaged:
        first, why = damaged[0]
        return VerifyResult(False, entries, prev, first,
                            f"{why}; recorded by the unit on the next line (audit_damaged_tail), the chain "
                            f"after it is intact ({entries} entries, head {prev}"
                            + (f", damaged lines {', '.join(map(str, found))}" if len(found) > 1 else "") + ")",
                            found, after)
    return VerifyResult(True, entries, prev, after_head=after)


# ----- command line ------------------------------------------------------------------------------

def cmd_verify(args) -> int:
    if args.head is not None and not _HEX64.match(args.head.lower()):
        print(f"anpr-edge audit verify: --head {args.head!r} is not a 64-digit SHA-256 hex", file=sys.stderr)
        return 2
    try:
        result = verify(args.file, args.head)
    except AuditError as e:
        print(f"anpr-edge audit verify: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"file": str(args.file), "ok": result.ok, "entries": result.entries, "head": result.head,
                          "bad_line": result.bad_line, "reason": result.reason, "damaged": list(result.damaged),
                          "after_head": result.after_head}))
    else:
        print(result.describe(str(args.file)), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def add_subparsers(subparsers) -> None:
    """Register `anpr-edge audit ...`."""
    p = subparsers.add_parser("audit", help="check the unit's hash-chained audit trail")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = sub.add_parser("verify", help="check the chain; exit 1 and name the first bad line if it is broken")
    v.add_argument("file", type=Path, metavar="FILE", help="audit trail, e.g. /var/lib/anpr-edge/audit.jsonl")
    v.add_argument("--head", help="last hash the centre received; detects entries cut off the end")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.set_defaults(func=cmd_verify)


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.audit verify FILE` (the same as `anpr-edge audit verify FILE`)."""
    parser = argparse.ArgumentParser(prog="anpr-edge")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
