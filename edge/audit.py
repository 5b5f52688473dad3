"""Audit trail: a local, append-only, hash-chained log of what was done to the unit.

Each JSON line records one event (start/stop, config change, list activation/deactivation, key
rotation) with a running number, the UTC time, the SHA-256 of the previous entry (`prev`) and its
own SHA-256 (`hash`, over the canonical JSON of every other field). Editing, deleting, inserting or
reordering lines breaks the chain, and `anpr-edge audit verify FILE` names the first bad line.
Cutting lines off the end cannot be seen in the file alone: every entry is also handed to a
`publish` hook (the daemon sends it to the central audit topic), and `verify --head HASH` checks
the file against the last hash the centre received.

Only the fields listed per event in `EVENTS` are accepted: the audit trail never holds plate texts.
"""

from __future__ import annotations

import argparse
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._head, damaged = self._read_tail()
        self._size = self.path.stat().st_size if self.path.exists() else 0
        if damaged is not None:
            self.record("audit_damaged_tail", line=damaged[0], bytes=damaged[1])

    @classmethod
    def from_config(cls, cfg: AuditConfig, state_dir: Path, device: str,
                    publish: Callable[[dict], None] | None = None) -> "AuditLog":
        path = Path(cfg.file)
        return cls(path if path.is_absolute() else state_dir / path, device, publish, cfg.fsync)

    @property
    def head(self) -> str:
        """Hash of the last entry (GENESIS for an empty log)."""
        return self._head

    def _read_tail(self) -> tuple[int, str, tuple[int, int] | None]:
        """(last seq, last hash, (line number, bytes) of a damaged last line or None).

        Reads only the end of the file: the trail grows for the life of the unit."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS, None
        with open(self.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
        torn = not tail.endswith(b"\n")  # a complete file ends with a newline
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] if not torn else tail.rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(last)
            if torn or entry.get("hash") != entry_hash(entry) or not isinstance(entry.get("seq"), int):
                raise ValueError
        except ValueError:
            # rare (power cut mid-write, or tampering): read it all to name the line
            lines = self.path.read_bytes().split(b"\n")
            if not torn:
                lines.pop()
            else:  # finish the torn line so the next entry starts on a line of its own
                with open(self.path, "ab") as f:
                    f.write(b"\n")
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
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, also across processes
                if os.fstat(fd).st_size != self._size:
                    # someone else appended (another AuditLog on the same file): chain after their entry
                    self._seq, self._head, _ = self._read_tail()
                entry = {"v": SCHEMA, "seq": self._seq + 1,
                         "ts": self._clock().isoformat(timespec="milliseconds"),
                         "device": self.device, "event": event, "data": clean, "prev": self._head}
                entry["hash"] = entry_hash(entry)
                os.write(fd, canonical(entry) + b"\n")  # one write of one line: O_APPEND keeps lines whole
                if self.fsync:
                    os.fsync(fd)
                self._size = os.fstat(fd).st_size
            finally:
                os.close(fd)  # releases the lock
            self._seq, self._head = entry["seq"], entry["hash"]
        if self.publish is not None:
            try:
                self.publish(entry)
            except Exception as e:  # the local file is the record; the network copy may come later
                log.warning("audit entry %d written but not published: %s", entry["seq"], e)
        return entry


def _last_good(lines: list[bytes]) -> tuple[int, str]:
    for raw in reversed(lines):
        try:
            entry = json.loads(raw)
            if isinstance(entry.get("seq"), int):
                return entry["seq"], entry.get("hash", GENESIS)
        except ValueError:
            continue
    return 0, GENESIS


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one audit file."""

    ok: bool
    entries: int  # lines checked
    head: str  # hash of the last good entry
    bad_line: int | None = None  # 1-based number of the first bad line
    reason: str = ""

    def describe(self, name: str) -> str:
        if self.ok:
            return f"{name}: OK, {self.entries} entries, chain intact, head {self.head}"
        return f"{name}: line {self.bad_line}: {self.reason}"


def verify(path: str | Path, expect_head: str | None = None) -> VerifyResult:
    """Check every line's hash and its link to the line before; name the first bad line."""
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
    prev, seq = GENESIS, 0
    for n, raw in enumerate(lines, start=1):
        def bad(reason: str) -> VerifyResult:
            return VerifyResult(False, n - 1, prev, n, reason)

        try:
            entry = json.loads(raw)
        except ValueError:
            return bad("not a JSON entry (damaged or torn line)")
        if not isinstance(entry, dict) or set(entry) != set(ENTRY_KEYS) | {"hash"}:
            return bad(f"not an audit entry (expected keys {', '.join(ENTRY_KEYS)}, hash)")
        if entry["hash"] != entry_hash(entry):
            return bad("content does not match its hash (the line was edited)")
        if not isinstance(entry["seq"], int) or entry["seq"] != seq + 1:
            return bad(f"sequence number {entry['seq']!r}, expected {seq + 1} "
                       "(a line before it was deleted, inserted or moved)")
        if entry["prev"] != prev:
            return bad("does not chain to the previous line's hash (lines deleted, inserted or reordered)")
        if entry["event"] not in EVENTS:
            return bad(f"unknown event {entry['event']!r}")
        prev, seq = entry["hash"], entry["seq"]
    if expect_head is not None and prev != expect_head.lower():
        return VerifyResult(False, len(lines), prev, len(lines) + 1,
                            f"chain ends at {prev}, but the expected head is {expect_head} "
                            "(entries missing at the end, or a different file)")
    return VerifyResult(True, len(lines), prev)


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
                          "bad_line": result.bad_line, "reason": result.reason}))
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
