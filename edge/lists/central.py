"""The central side: a state folder from which snapshots and deltas are built and sealed.

State folder layout (it holds the signing key and the current hash key: keep it on the trusted
central workstation, mode 0700):
    signing.key / signing.pub   current Ed25519 signing key
    trusted.pub                 every public key devices must trust (current + not yet retired)
    devices/<id>.pub            X25519 public key of each device that may open packages
    current/                    meta.json, hashkey.bin (0600), entries.npz of the current version
    out/                        snapshot.bin and delta-<version>-<seq>.bin as last sealed
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from edge.lists import keys
from edge.lists.codec import DeltaPayload, Entries, Removals, SnapshotPayload, encode_delta, encode_snapshot
from edge.lists.csvrows import CsvError, Row, RowError, read_rows
from edge.lists.hashing import KEY_BYTES, PlateHasher, key_check
from edge.lists.model import ListDef, ListFile
from edge.lists.package import seal

MAX_TAGS = 65536


class CentralError(ValueError):
    """A central command that cannot go ahead; the message says what to fix."""


@dataclass(frozen=True)
class State:
    version: int
    seq: int
    hash_key: bytes
    lists: tuple[ListDef, ...]
    tags: tuple[tuple[int, str], ...]
    entries: Entries


@dataclass(frozen=True)
class Sealed:
    snapshot: bytes
    delta: bytes | None
    state: State


def _private_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Central:
    """One central state folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- keys and devices -------------------------------------------------------------------
    def init(self) -> Path:
        """Create the folder and a signing key if there is none; returns trusted.pub to deploy."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not (self.root / "signing.key").exists():
            key = keys.generate_signing_key(self.root / "signing.key", self.root / "signing.pub")
            keys.write_public_keys(self.root / "trusted.pub", [key.public_key()])
        return self.root / "trusted.pub"

    def _require_state(self) -> None:
        """Commands other than init work only on a folder init made: a mistyped --state must be an error,
        not a new folder that takes the device key while packages go on being sealed from the real one."""
        if not (self.root / "signing.key").is_file():
            what = "does not exist" if not self.root.exists() else "is not a central state folder (no signing.key)"
            raise CentralError(f"{self.root}: {what}; check --state, or create one with "
                               f"'lists init --state {self.root}'")

    def rotate_signing(self, keep_old: bool = True) -> Path:
        """New signing key; trusted.pub lists the new key first and (unless retired) the old ones."""
        self._require_state()
        old = keys.load_trusted_signers(self.root / "trusted.pub") if keep_old else []
        stamp = time.strftime("%Y%m%dT%H%M%S")
        (self.root / "retired").mkdir(exist_ok=True)
        os.replace(self.root / "signing.key", self.root / "retired" / f"signing-{stamp}.key")
        key = keys.generate_signing_key(self.root / "signing.key", self.root / "signing.pub")
        keys.write_public_keys(self.root / "trusted.pub", [key.public_key()] + old)
        return self.root / "trusted.pub"

    def retire_old_signers(self) -> Path:
        """Trust only the current signing key (after every device has the rotated trusted.pub)."""
        self._require_state()
        keys.write_public_keys(self.root / "trusted.pub", [keys.load_signing_key(self.root / "signing.key").public_key()])
        return self.root / "trusted.pub"

    def add_device(self, device_id: str, public_key_file: Path) -> Path:
        """Register (or replace) a device's public key; returns the file it is kept in."""
        if not device_id or not all(c.isalnum() or c in "._-" for c in device_id):
            raise CentralError(f"device id {device_id!r} must be letters, digits, '.', '_' or '-'")
        self._require_state()
        pub = keys.load_device_public(public_key_file)
        path = self.root / "devices" / f"{device_id}.pub"
        try:
            keys.write_public_keys(path, [pub])
        except OSError as e:  # read-only file system, no permission, a file where the folder should be
            raise CentralError(f"device {device_id!r} not registered: cannot write {e.filename or path}: "
                               f"{e.strerror or e}") from None
        return path

    def remove_device(self, device_id: str) -> None:
        self._require_state()
        path = self.root / "devices" / f"{device_id}.pub"
        if not path.exists():
            raise CentralError(f"no device {device_id!r} in {self.root / 'devices'}")
        path.unlink()

    def devices(self) -> dict:
        folder = self.root / "devices"
        return {p.stem: keys.load_device_public(p) for p in sorted(folder.glob("*.pub"))} if folder.is_dir() else {}

    # --- state ------------------------------------------------------------------------------
    def load(self) -> State:
        self._require_state()
        cur = self.root / "current"
        if not (cur / "meta.json").exists():
            raise CentralError(f"{self.root}: no list built yet (run 'lists build' first)")
        meta = json.loads((cur / "meta.json").read_text())
        with np.load(cur / "entries.npz") as z:
            entries = Entries(z["hi"], z["lo"], z["tag"], z["until"])
        return State(int(meta["version"]), int(meta["seq"]), (cur / "hashkey.bin").read_bytes(),
                     tuple(ListDef.model_validate(d) for d in meta["lists"]),
                     tuple((int(i), str(r)) for i, r in meta["tags"]), entries)

    def _save(self, st: State, snapshot: bytes, delta: bytes | None) -> None:
        cur = self.root / "current"
        out = self.root / "out"
        cur.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        _private_write(cur / "hashkey.bin", st.hash_key)
        with open(cur / "entries.npz.tmp", "wb") as f:
            np.savez(f, hi=st.entries.hi, lo=st.entries.lo, tag=st.entries.tag, until=st.entries.until)
        os.replace(cur / "entries.npz.tmp", cur / "entries.npz")
        meta = {"version": st.version, "seq": st.seq, "count": len(st.entries),
                "lists": [d.model_dump(mode="json") for d in st.lists], "tags": [list(t) for t in st.tags]}
        _private_write(cur / "meta.json", json.dumps(meta, indent=1).encode())
        if delta is not None:
            _private_write(out / f"delta-{st.version}-{st.seq:08d}.bin", delta)
        _private_write(out / "snapshot.bin", snapshot)

    def _seal(self, st: State, payload: bytes, kind: str) -> bytes:
        recipients = self.devices()
        if not recipients:
            raise CentralError(f"no devices registered in {self.root / 'devices'} (run 'lists device-add')")
        return seal(payload, kind=kind, version=st.version, seq=st.seq, recipients=recipients,
                    signing_key=keys.load_signing_key(self.root / "signing.key"))

    def seal_snapshot(self, st: State) -> bytes:
        return self._seal(st, encode_snapshot(SnapshotPayload(st.hash_key, st.lists, st.tags, st.entries)), "snapshot")

    # --- build ------------------------------------------------------------------------------
    def build(self, lists_file: Path, csv_file: Path, skip_bad: bool = False,
              now: datetime | None = None) -> tuple[Sealed, list[RowError]]:
        """A new version from the full CSV, with a fresh hash key (this is also the hash-key rotation)."""
        defs = load_list_file(lists_file)
        today = (now or datetime.now(timezone.utc)).date()
        rows, errors = read_rows(csv_file, {d.id for d in defs}, today)
        if errors and not skip_bad:
            raise CsvError(Path(csv_file), errors)
        return self.build_rows(defs, rows), errors

    def build_rows(self, defs: tuple[ListDef, ...], rows: list[Row]) -> Sealed:
        hasher = PlateHasher(secrets.token_bytes(KEY_BYTES))
        hi, lo = hasher.hash_many([r.plate for r in rows])
        pos = {d.id: n for n, d in enumerate(defs)}
        tags: dict[tuple[int, str], int] = {}
        tag_ids = [tags.setdefault((pos[r.list_id], r.reason), len(tags)) for r in rows]
        if len(tags) > MAX_TAGS:
            raise CentralError(f"more than {MAX_TAGS} distinct (list, reason code) pairs")
        tag = np.array(tag_ids, dtype=np.uint16)
        until = np.array([r.until for r in rows], dtype=np.uint16)
        return self.build_hashed(defs, hasher.key, Entries(hi, lo, tag, until), tuple(tags))

    def build_hashed(self, defs: tuple[ListDef, ...], hash_key: bytes, entries: Entries,
                     tags: tuple[tuple[int, str], ...]) -> Sealed:
        """Seal and save a new version from already hashed entries (also used by the benchmark)."""
        self._require_state()
        previous = self.load().version if (self.root / "current" / "meta.json").exists() else 0
        version = max(previous + 1, int(time.time()))  # survives a lost state folder without rolling back
        st = State(version, 0, hash_key, tuple(defs), tuple(tags), _sorted(entries))
        snap = self.seal_snapshot(st)
        self._save(st, snap, None)
        return Sealed(snap, None, st)

    # --- deltas -----------------------------------------------------------------------------
    def delta(self, add_csv: Path | None = None, remove_csv: Path | None = None, activate: tuple[str, ...] = (),
              deactivate: tuple[str, ...] = (), lists_file: Path | None = None, skip_bad: bool = False,
              now: datetime | None = None) -> tuple[Sealed, list[RowError]]:
        """Next delta of the current version from CSV files and list switches."""
        st = self.load()
        changed = _changed_defs(st.lists, load_list_file(lists_file)) if lists_file else ()
        known = {d.id for d in st.lists} | {d.id for d in changed}
        today = (now or datetime.now(timezone.utc)).date()
        adds, removes, errors = [], [], []
        if add_csv:
            adds, e = read_rows(add_csv, known, today)
            errors += e
        if remove_csv:
            removes, e = read_rows(remove_csv, known, today, remove=True)
            errors += e
        if errors and not skip_bad:
            raise CsvError(Path(add_csv or remove_csv), errors)
        return self.delta_rows(adds, removes, activate, deactivate, changed), errors

    def delta_rows(self, adds: list[Row], removes: list[Row], activate=(), deactivate=(),
                   changed: tuple[ListDef, ...] = ()) -> Sealed:
        st = self.load()
        lists = list(st.lists)
        pos = {d.id: n for n, d in enumerate(lists)}
        for d in changed:
            if d.id in pos:
                lists[pos[d.id]] = d
            else:
                pos[d.id] = len(lists)
                lists.append(d)
        ops = tuple(("activate", i) for i in activate) + tuple(("deactivate", i) for i in deactivate)
        for op, list_id in ops:
            if list_id not in pos:
                raise CentralError(f"cannot {op} unknown list {list_id!r}")
            lists[pos[list_id]] = lists[pos[list_id]].model_copy(update={"active": op == "activate"})
        for r in adds + removes:
            if r.list_id not in pos:
                raise CentralError(f"line {r.line}: unknown list id {r.list_id!r}")
        if not (adds or removes or ops or changed):
            raise CentralError("empty delta: nothing to add, remove, activate, deactivate or redefine")
        hasher = PlateHasher(st.hash_key)
        a_hi, a_lo = hasher.hash_many([r.plate for r in adds])
        r_hi, r_lo = hasher.hash_many([r.plate for r in removes])
        add_tags: dict[tuple[str, str], int] = {}
        a_tag = np.array([add_tags.setdefault((r.list_id, r.reason), len(add_tags)) for r in adds], dtype=np.uint16)
        remove_lists: dict[str, int] = {}
        r_list = np.array([remove_lists.setdefault(r.list_id, len(remove_lists)) for r in removes], dtype=np.uint16)
        a_until = np.array([r.until for r in adds], dtype=np.uint16)
        payload = DeltaPayload(ops, tuple(changed), tuple(add_tags), Entries(a_hi, a_lo, a_tag, a_until),
                               tuple(remove_lists), Removals(r_hi, r_lo, r_list), key_check(hasher))
        # the central copy: drop removed and replaced entries, append the additions, sort again
        tags = {t: n for n, t in enumerate(st.tags)}
        e = st.entries
        entry_list = np.array([st.tags[t][0] for t in range(len(st.tags))], dtype=np.int64)[e.tag] if len(e) else \
            np.empty(0, np.int64)
        drop = np.zeros(len(e), dtype=bool)
        targets = [(int(h), int(l), pos[r.list_id]) for h, l, r in zip(r_hi, r_lo, removes)] + \
                  [(int(h), int(l), pos[r.list_id]) for h, l, r in zip(a_hi, a_lo, adds)]
        for h, l, li in targets:
            p = int(np.searchsorted(e.hi, np.uint64(h)))
            while p < len(e) and int(e.hi[p]) == h:
                if int(e.lo[p]) == l and entry_list[p] == li:
                    drop[p] = True
                p += 1
        new_tag = np.array([tags.setdefault((pos[r.list_id], r.reason), len(tags)) for r in adds], dtype=np.uint16)
        if len(tags) > MAX_TAGS:
            raise CentralError(f"more than {MAX_TAGS} distinct (list, reason code) pairs")
        keep = ~drop
        merged = Entries(np.concatenate([e.hi[keep], a_hi]), np.concatenate([e.lo[keep], a_lo]),
                         np.concatenate([e.tag[keep], new_tag]), np.concatenate([e.until[keep], a_until]))
        new = State(st.version, st.seq + 1, st.hash_key, tuple(lists), tuple(tags), _sorted(merged))
        delta = self._seal(new, encode_delta(payload), "delta")
        snap = self.seal_snapshot(new)
        self._save(new, snap, delta)
        return Sealed(snap, delta, new)


def _sorted(e: Entries) -> Entries:
    order = np.lexsort((e.lo, e.hi))
    return Entries(e.hi[order], e.lo[order], e.tag[order], e.until[order])


def _changed_defs(old: tuple[ListDef, ...], new: tuple[ListDef, ...]) -> tuple[ListDef, ...]:
    before = {d.id: d for d in old}
    return tuple(d for d in new if before.get(d.id) != d)


def load_list_file(path: Path) -> tuple[ListDef, ...]:
    """The lists definition YAML; errors name the file and the key path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CentralError(f"{path}: cannot read lists file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CentralError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                           "save the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise CentralError(f"{path}: not valid YAML: {e}") from None
    try:
        return ListFile.model_validate(data).lists
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()]
        raise CentralError(f"{path}: invalid lists file:\n  " + "\n  ".join(lines)) from None
