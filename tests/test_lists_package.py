"""Every bad package and delta is rejected with a reason, and the last good list stays active."""

from __future__ import annotations

import logging
import shutil

import pytest

from edge.lists import keys
from edge.lists.central import Central, State
from edge.lists.package import MIN_LEN, PackageError, open_package
from edge.lists.matcher import ListMatcher
from lists_support import FRIDAY_NOON, make_fleet, write_csv


@pytest.fixture
def fleet(tmp_path):
    f = make_fleet(tmp_path)
    f.sealed, _ = f.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    return f


def _good_store(fleet):
    store = fleet.store("cam1")
    assert store.apply(fleet.sealed.snapshot).status == "applied"
    return store


def _assert_still_good(store, fleet, version, seq):
    assert (store.version, store.seq) == (version, seq)
    hits = ListMatcher(store, ["*"]).match("XSNB23", [], "NL", FRIDAY_NOON)
    assert [m.list_id for m in hits] == ["stolen", "tax"]


def _rejected(store, blob, reason, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.lists.store"):
        r = store.apply(blob)
    assert (r.status, r.reason) == ("rejected", reason), r
    assert any(reason in rec.getMessage() for rec in caplog.records)
    assert store.status()["last_result"]["reason"] == reason
    return r


def test_good_snapshot_opens_and_matches(fleet):
    store = _good_store(fleet)
    _assert_still_good(store, fleet, fleet.sealed.state.version, 0)
    assert store.status()["entries"] == 6


def test_corrupt_ciphertext_header_and_signature(fleet, caplog):
    store = _good_store(fleet)
    v = store.version
    blob = fleet.sealed.snapshot
    for pos in (len(blob) // 2, 40, len(blob) - 3):  # payload, header, signature
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        _rejected(store, bytes(bad), "bad_signature", caplog)
    bad = bytearray(blob)
    bad[0:8] = b"NOTALIST"
    _rejected(store, bytes(bad), "corrupt", caplog)
    _rejected(store, blob + b"\0", "corrupt", caplog)
    _rejected(store, b"", "truncated", caplog)
    _assert_still_good(store, fleet, v, 0)
    assert store.status()["rejected"]["bad_signature"] == 3


@pytest.mark.parametrize("cut", [1, 64, 500, MIN_LEN])
def test_truncated(fleet, caplog, cut):
    store = _good_store(fleet)
    blob = fleet.sealed.snapshot
    _rejected(store, blob[: len(blob) - cut] if cut < len(blob) else blob[:cut - 1], "truncated", caplog)
    _assert_still_good(store, fleet, store.version, 0)


def test_wrongly_signed(fleet, tmp_path, caplog):
    store = _good_store(fleet)
    # signed by a key the device does not trust
    rogue = Central(tmp_path / "rogue")
    rogue.init()
    rogue.add_device("cam1", fleet.device("cam1")[1])
    sealed, _ = rogue.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    _rejected(store, sealed.snapshot, "unknown_signer", caplog)
    # the rogue key pretending to be the trusted one (same key id, wrong signature)
    blob = bytearray(sealed.snapshot)
    good_kid = fleet.sealed.snapshot[8:16]
    blob[8:16] = good_kid
    _rejected(store, bytes(blob), "bad_signature", caplog)
    _assert_still_good(store, fleet, store.version, 0)


def test_for_another_device_and_wrong_device_key(fleet, tmp_path, caplog):
    store = _good_store(fleet)
    fleet.central.remove_device("cam1")  # the next package is for cam2 only
    sealed = fleet.central.delta_rows([], [], activate=("obs",))
    _rejected(store, sealed.delta, "not_for_device", caplog)
    # cam1 registered again with a new key (device key rotation): the old key cannot unwrap
    keys.generate_device_key(tmp_path / "cam1-new.key", tmp_path / "cam1-new.pub")
    fleet.central.add_device("cam1", tmp_path / "cam1-new.pub")
    sealed2 = fleet.central.delta_rows([], [], deactivate=("obs",))
    _rejected(store, sealed2.delta, "wrong_device_key", caplog)
    _assert_still_good(store, fleet, store.version, 0)


def test_rollback_refused_even_after_restart(fleet, tmp_path, caplog):
    store = _good_store(fleet)
    old = fleet.sealed.snapshot
    newer, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    assert store.apply(newer.snapshot).status == "applied"
    _rejected(store, old, "rollback", caplog)
    assert store.apply(newer.snapshot).status == "duplicate"
    # a fresh process with the cache deleted still remembers the newest version it applied
    (store.store_dir / "snapshot.bin").unlink()
    restarted = fleet.store("cam1")
    assert restarted.index is None
    _rejected(restarted, old, "rollback", caplog)
    assert restarted.apply(newer.snapshot).status == "applied"


def test_delta_older_duplicate_out_of_sequence_and_gap(fleet, tmp_path, caplog):
    store = _good_store(fleet)
    v = store.version
    d1 = fleet.central.delta_rows([], [], activate=("obs",))
    d2 = fleet.central.delta_rows([], [], deactivate=("obs",))
    d3 = fleet.central.delta_rows([], [], activate=("obs",))
    r = store.apply(d2.delta)  # seq 2 after seq 0: gap, wait for a snapshot
    assert (r.status, r.reason, r.needs_snapshot) == ("gap", "out_of_sequence", True)
    assert store.seq == 0
    assert store.apply(d1.delta).status == "applied"
    assert store.apply(d1.delta).status == "duplicate"
    assert store.apply(d2.delta).status == "applied"
    assert store.apply(d3.delta).status == "applied"
    _rejected(store, d2.delta, "rollback", caplog)
    assert store.seq == 3 and store.version == v
    # a snapshot of this version at seq 3 is a duplicate; the older one at seq 2 is a rollback
    assert store.apply(d3.snapshot).status == "duplicate"
    _rejected(store, d2.snapshot, "rollback", caplog)
    # a delta of a newer version (after a re-key) needs that version's snapshot first
    newer, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    d_new = fleet.central.delta_rows([], [], activate=("obs",))
    r = store.apply(d_new.delta)
    assert (r.status, r.needs_snapshot) == ("gap", True)
    assert store.apply(newer.snapshot).status == "applied"
    assert store.apply(d_new.delta).status == "applied"
    # a device with no snapshot at all cannot use a delta
    fresh = fleet.store("cam2", cache=False)
    assert fresh.apply(d1.delta).needs_snapshot


def test_delta_with_another_hash_key_is_rejected(fleet, tmp_path, caplog):
    """A delta must be keyed like the snapshot it extends, even if its numbers look right."""
    store = _good_store(fleet)
    # a second central folder with the same signing key but its own build (another hash key)
    twin_root = tmp_path / "twin"
    shutil.copytree(fleet.central.root, twin_root)
    twin = Central(twin_root)
    st = twin.load()
    twin_sealed = twin.build_rows(st.lists, [])
    forged = State(store.version, 0, twin_sealed.state.hash_key, st.lists, st.tags, st.entries)
    twin._save(forged, twin.seal_snapshot(forged), None)
    bad = twin.delta_rows([], [], activate=("obs",))
    assert bad.state.version == store.version and bad.state.seq == 1
    _rejected(store, bad.delta, "key_mismatch", caplog)
    assert "hash key" in caplog.text
    _assert_still_good(store, fleet, store.version, 0)


def test_open_package_raises_typed_errors(fleet):
    trusted = keys.load_trusted_signers(fleet.trusted)
    key = keys.load_device_key(fleet.device("cam2")[0])
    opened = open_package(fleet.sealed.snapshot, trusted, "cam2", key)
    assert opened.header.kind == "snapshot" and opened.header.recipients == ("cam1", "cam2")
    with pytest.raises(PackageError) as e:
        open_package(fleet.sealed.snapshot, trusted, "cam9", key)
    assert e.value.reason == "not_for_device"


def test_nothing_secret_reaches_disk_or_logs(fleet, caplog, tmp_path):
    """Only sealed blobs are cached: neither the hash key nor plaintext plates or payload appear."""
    with caplog.at_level(logging.DEBUG):
        store = _good_store(fleet)
        write_csv(tmp_path / "add.csv", ["ZZ-999-Z,stolen,URG,"])
        sealed, _ = fleet.central.delta(add_csv=tmp_path / "add.csv")
        assert store.apply(sealed.delta).status == "applied"
        ListMatcher(store, ["*"]).match("ZZ999Z", [("ZZ999Z", 0.9)], "NL", FRIDAY_NOON)
        ListMatcher(store, ["*"]).match("AB123C", [], "NL", FRIDAY_NOON)
    hash_key = store.index.hasher.key
    files = [p for p in store.store_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"snapshot.bin", f"delta-{store.version}-00000001.bin"}
    for p in files:
        data = p.read_bytes()
        assert hash_key not in data
        for secret in (b"XSNB23", b"ZZ999Z", b"stolen_vehicle", b"STOLEN-1", b"Stolen vehicles"):
            assert secret not in data, (p.name, secret)
    for text in ("XSNB23", "ZZ999Z", "AB123C", "ZZ-999-Z"):
        assert text not in caplog.text


def test_signed_but_malformed_package_is_rejected_not_raised(fleet, caplog):
    """A package that passes the signature check but cannot be decoded (a central-side bug) is
    rejected with a reason; it used to raise out of apply(), killing the sync thread."""
    from edge.lists.codec import SnapshotPayload, encode_snapshot
    from edge.lists.package import _PREFIX, MAGIC, seal
    from edge.lists.keys import key_id

    store = _good_store(fleet)
    sk = keys.load_signing_key(fleet.central.root / "signing.key")
    st = fleet.central.load()
    # a hash key of the wrong length: PlateHasher raised ValueError
    short_key = seal(encode_snapshot(SnapshotPayload(b"k" * 16, st.lists, st.tags, st.entries)), kind="snapshot",
                     version=st.version + 1, seq=0, recipients=fleet.central.devices(), signing_key=sk)
    r = _rejected(store, short_key, "corrupt", caplog)
    assert "ValueError" in r.message
    # a header that is JSON but not an object: AttributeError in verify()
    header = b"[1]"
    body = _PREFIX.pack(MAGIC, key_id(sk.public_key()), _PREFIX.size + len(header) + 16 + 64, len(header)) \
        + header + b"\0" * 16
    _rejected(store, body + sk.sign(body), "corrupt", caplog)
    _assert_still_good(store, fleet, st.version, 0)
    # a list whose topic template the unit could not fill (from a central that did not check it): the
    # first hit on it would have raised in the dispatcher; the package is refused instead
    bad_topic = tuple(d.model_copy(update={"topic": "anpr/{plate}/hits"}) if i == 0 else d
                      for i, d in enumerate(st.lists))
    blob = seal(encode_snapshot(SnapshotPayload(b"k" * 32, bad_topic, st.tags, st.entries)), kind="snapshot",
                version=st.version + 1, seq=0, recipients=fleet.central.devices(), signing_key=sk)
    _rejected(store, blob, "corrupt", caplog)
    assert "unknown field(s) ['plate']" in caplog.text
    _assert_still_good(store, fleet, st.version, 0)


def test_damaged_cache_does_not_brick_start_up(fleet, caplog):
    """Stray or unreadable files in the cache are logged by name and skipped; start-up goes on."""
    store = _good_store(fleet)
    v = store.version
    (store.store_dir / "delta-x-1.bin").write_bytes(b"junk")  # int() of 'x' raised ValueError
    (store.store_dir / f"delta-{v}-00000001.bin").mkdir()  # IsADirectoryError
    with caplog.at_level(logging.WARNING, logger="edge.lists.store"):
        restarted = fleet.store("cam1")
    _assert_still_good(restarted, fleet, v, 0)
    assert "delta-x-1.bin" in caplog.text and f"delta-{v}-00000001.bin" in caplog.text
    # an unreadable snapshot: start with no lists, then the next snapshot is applied as usual
    (store.store_dir / "snapshot.bin").unlink()
    (store.store_dir / "snapshot.bin").mkdir()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="edge.lists.store"):
        empty = fleet.store("cam1")
    assert empty.index is None and "snapshot.bin" in caplog.text
    assert empty.apply(fleet.sealed.snapshot).status == "applied"


def test_cache_load_leaves_the_floor_alone(fleet, tmp_path, monkeypatch):
    """Loading the cache must not lower the in-memory floor: a sync thread running meanwhile (config
    reload) would accept an old snapshot, and the restore could overwrite a newer floor."""
    from edge.lists.store import ListStore

    store = _good_store(fleet)
    newer, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    assert store.apply(newer.snapshot).status == "applied"
    seen = []
    real = ListStore._apply

    def spy(self, blob, *a, **kw):
        seen.append(self._floor)
        return real(self, blob, *a, **kw)

    monkeypatch.setattr(ListStore, "_apply", spy)
    restarted = fleet.store("cam1")
    assert restarted.version == newer.state.version
    assert seen and all(f == (newer.state.version, 0) for f in seen)


def test_cache_writes_fsync_the_directory(fleet, monkeypatch):
    """An atomic replace is durable only once the directory is fsynced too (power cut)."""
    import os
    import stat

    synced_dirs = []
    real = os.fsync

    def spy(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _good_store(fleet)
    assert synced_dirs
