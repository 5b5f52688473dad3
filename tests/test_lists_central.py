"""Central side: CSV and list-file validation, key rotation, and the CLI from end to end."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.lists import keys
from edge.lists.central import CentralError
from edge.lists.cli import main
from edge.lists.config import ListsConfig
from edge.lists.csvrows import CsvError
from edge.lists.matcher import ListMatcher
from edge.lists.store import ListStore
from lists_support import FRIDAY_NOON, LISTS_YAML, make_fleet, write_csv

TODAY = datetime(2026, 11, 27, tzinfo=timezone.utc)


@pytest.fixture
def fleet(tmp_path):
    return make_fleet(tmp_path)


def test_bad_csv_rows_are_listed_with_line_numbers(fleet, tmp_path):
    csv = write_csv(tmp_path / "bad.csv", [
        "XS-NB-23,stolen,R1,",          # line 2: good
        "XS-NB-2Ö,stolen,R1,",          # 3: bad character
        ",stolen,R1,",                  # 4: empty plate
        "AB-12-CD,nosuchlist,R1,",      # 5: unknown list
        "AB-12-CD,stolen,R1,2026-13-01",  # 6: bad date
        "AB-12-CD,stolen,R1,2020-01-01",  # 7: already past
        "xs nb 23,stolen,R2,",          # 8: duplicate of line 2 after normalising
        "AB-12-CD,stolen",              # 9: too few fields
        "AB-12-CD,stolen,bad reason!,",  # 10: bad reason code
        "ABCDEFGHIJKLM,stolen,R1,",     # 11: too long
        "",                             # 12: blank, ignored
        "GG-11-HH,tax,,2099-01-01",     # 13: good
    ])
    with pytest.raises(CsvError) as e:
        fleet.central.build(tmp_path / "lists.yaml", csv, now=TODAY)
    lines = {err.line: err.reason for err in e.value.errors}
    assert sorted(lines) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "other than A-Z" in lines[3] and "empty" in lines[4] and "not a known list id" in lines[5]
    assert "nosuchlist" not in str(e.value)  # no cell is echoed, not even a list id
    assert "not a date" in lines[6] and "past" in lines[7] and "duplicate of line 2" in lines[8]
    assert "expected 4 fields" in lines[9] and "reason code" in lines[10] and "longer" in lines[11]
    assert "line 3, column 1 (plate): plate has characters" in str(e.value) and "XS-NB-2" not in str(e.value)
    assert not (fleet.central.root / "current").exists()  # nothing built
    sealed, skipped = fleet.central.build(tmp_path / "lists.yaml", csv, skip_bad=True, now=TODAY)
    assert len(sealed.state.entries) == 2 and len(skipped) == 9


def test_bad_header_and_list_file(fleet, tmp_path):
    (tmp_path / "h.csv").write_text("kenteken,lijst\nXS-NB-23,stolen\n")
    with pytest.raises(CsvError, match="line 1: the first line must be the header plate,list_id,reason_code,valid_until"):
        fleet.central.build(tmp_path / "lists.yaml", tmp_path / "h.csv")
    bad = LISTS_YAML.replace("category: tax_debt", "category: parking").replace('start: "07:00"', 'start: "7am"')
    (tmp_path / "bad.yaml").write_text(bad + "  - id: stolen\n    name: x\n    category: fine\n    action: record\n")
    with pytest.raises(CentralError) as e:
        fleet.central.build(tmp_path / "bad.yaml", tmp_path / "plates.csv")
    msg = str(e.value)
    assert "lists.1.category" in msg and "lists.1.windows.0.start" in msg
    (tmp_path / "dup.yaml").write_text(LISTS_YAML + "  - id: stolen\n    name: x\n    category: fine\n    action: record\n")
    with pytest.raises(CentralError, match="defined twice"):
        fleet.central.build(tmp_path / "dup.yaml", tmp_path / "plates.csv")
    (tmp_path / "tz.yaml").write_text(LISTS_YAML.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"))
    with pytest.raises(CentralError, match="time zone"):
        fleet.central.build(tmp_path / "tz.yaml", tmp_path / "plates.csv")
    (tmp_path / "latin1.yaml").write_bytes(LISTS_YAML.replace("Politie", "Polizei Stra\u00dfe").encode("latin-1"))
    with pytest.raises(CentralError, match=r"latin1.yaml: not UTF-8 text \(byte 0xdf"):
        fleet.central.build(tmp_path / "latin1.yaml", tmp_path / "plates.csv")
    (tmp_path / "topic.yaml").write_text(LISTS_YAML.replace('topic: "anpr/urgent/{device}"', 'topic: "anpr/{plate}"'))
    with pytest.raises(CentralError, match=r"lists\.0\.topic: .*unknown field\(s\) \['plate'\]"):
        fleet.central.build(tmp_path / "topic.yaml", tmp_path / "plates.csv")


def test_csv_without_header_row_names_line_and_columns_but_no_cell(fleet, tmp_path):
    (tmp_path / "nohead.csv").write_text("wanted99,stolen,r1,\nAB-123-C,stolen,r1,\n")
    with pytest.raises(CsvError) as e:
        fleet.central.build(tmp_path / "lists.yaml", tmp_path / "nohead.csv", now=TODAY)
    msg = str(e.value)
    assert str(tmp_path / "nohead.csv") in msg and "line 1:" in msg
    assert "header plate,list_id,reason_code,valid_until" in msg and "missing plate, list_id, reason_code" in msg
    assert "columns 1, 2, 3, 4 are not expected names" in msg and "header row missing" in msg
    for cell in ("wanted99", "WANTED99", "stolen", "r1", "AB-123-C", "got"):
        assert cell not in msg


def test_swapped_columns_name_row_and_column_but_not_the_plate(fleet, tmp_path):
    # plate and list id swapped in one row, a plate in the valid_until column of another
    write_csv(tmp_path / "swapped.csv", ["stolen,AB123C,R1,", "XS-NB-23,stolen,R1,GH45JK", "ZZ-99-ZZ,stolen,R1,"])
    with pytest.raises(CsvError) as e:
        fleet.central.build(tmp_path / "lists.yaml", tmp_path / "swapped.csv", now=TODAY)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'swapped.csv'}: 2 bad row(s):")
    assert "line 2, column 2 (list_id): not a known list id (known: night, obs, old, stolen, tax)" in msg
    assert "line 3, column 4 (valid_until): not a date YYYY-MM-DD" in msg
    for cell in ("AB123C", "GH45JK", "XS-NB-23", "XSNB23", "ZZ"):
        assert cell not in msg
    assert [(r.line, r.column) for r in e.value.errors] == [(2, "2 (list_id)"), (3, "4 (valid_until)")]

    # a delta names the file of each bad row when it is not the one in the heading
    write_csv(tmp_path / "add.csv", ["NN-123-N,stolen,R,"])
    write_csv(tmp_path / "rm.csv", ["stolen,AB123C"], remove=True)
    fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    with pytest.raises(CsvError) as e:
        fleet.central.delta(add_csv=tmp_path / "add.csv", remove_csv=tmp_path / "rm.csv")
    msg = str(e.value)
    assert f"{tmp_path / 'rm.csv'} line 2, column 2 (list_id): not a known list id" in msg and "AB123C" not in msg


def test_each_build_has_a_fresh_hash_key_and_newer_version(fleet, tmp_path):
    a = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    b = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    assert b.state.version > a.state.version and a.state.hash_key != b.state.hash_key
    assert len(a.state.hash_key) == 32
    assert not set(map(int, a.state.entries.hi)) & set(map(int, b.state.entries.hi))
    # deltas are keyed to their version: a device on the new version matches with the new key only
    store = fleet.store("cam1")
    store.apply(b.snapshot)
    write_csv(tmp_path / "add.csv", ["NN-123-N,stolen,R,"])
    d = fleet.central.delta(add_csv=tmp_path / "add.csv")[0]
    assert (d.state.version, d.state.seq) == (b.state.version, 1)
    assert store.apply(d.delta).status == "applied"
    assert [m.list_id for m in ListMatcher(store, ["*"]).match("NN123N", [], "NL", FRIDAY_NOON)] == ["stolen"]


def test_signing_key_rotation(fleet, tmp_path):
    old_sealed = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    old_trust = tmp_path / "old-trusted.pub"
    old_trust.write_bytes(fleet.trusted.read_bytes())
    trusted = fleet.central.rotate_signing()
    assert len(keys.load_trusted_signers(trusted)) == 2
    new_sealed = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    assert new_sealed.snapshot[8:16] != old_sealed.snapshot[8:16]  # signer key id changed
    key = keys.load_device_key(fleet.device("cam1")[0])
    both = ListStore("cam1", key, keys.load_trusted_signers(trusted))
    assert both.apply(old_sealed.snapshot).status == "applied"
    assert both.apply(new_sealed.snapshot).status == "applied"
    stale = ListStore("cam1", key, keys.load_trusted_signers(old_trust))
    assert stale.apply(new_sealed.snapshot).reason == "unknown_signer"  # deploy trusted.pub before switching
    fleet.central.retire_old_signers()
    only_new = ListStore("cam1", key, keys.load_trusted_signers(trusted))
    assert only_new.apply(old_sealed.snapshot).reason == "unknown_signer"
    assert only_new.apply(new_sealed.snapshot).status == "applied"


def test_device_key_rotation(fleet, tmp_path):
    keys.generate_device_key(tmp_path / "cam1-2.key", tmp_path / "cam1-2.pub")
    fleet.central.add_device("cam1", tmp_path / "cam1-2.pub")
    sealed = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    trusted = keys.load_trusted_signers(fleet.trusted)
    old = ListStore("cam1", keys.load_device_key(fleet.device("cam1")[0]), trusted)
    assert old.apply(sealed.snapshot).reason == "wrong_device_key"
    new = ListStore("cam1", keys.load_device_key(tmp_path / "cam1-2.key"), trusted)
    assert new.apply(sealed.snapshot).status == "applied"
    fleet.central.remove_device("cam2")  # a lost unit: the next version is not addressed to it
    sealed = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    cam2 = ListStore("cam2", keys.load_device_key(fleet.device("cam2")[0]), trusted)
    assert cam2.apply(sealed.snapshot).reason == "not_for_device"


def test_key_file_errors(tmp_path):
    with pytest.raises(keys.KeyFileError, match="not found"):
        keys.load_device_key(tmp_path / "missing.key")
    keys.generate_signing_key(tmp_path / "s.key", tmp_path / "s.pub")
    with pytest.raises(keys.KeyFileError, match="expected a X25519"):
        keys.load_device_key(tmp_path / "s.key")
    assert (tmp_path / "s.key").stat().st_mode & 0o077 == 0
    (tmp_path / "d.key.tmp").write_bytes(b"")  # left over by a crash, readable by everyone
    (tmp_path / "d.key.tmp").chmod(0o644)
    keys.generate_device_key(tmp_path / "d.key", tmp_path / "d.pub")
    assert (tmp_path / "d.key").stat().st_mode & 0o777 == 0o600 and not (tmp_path / "d.key.tmp").exists()
    (tmp_path / "junk.pub").write_text("hello\n")
    with pytest.raises(keys.KeyFileError, match="no PEM public key"):
        keys.load_trusted_signers(tmp_path / "junk.pub")


def test_lists_config_section(tmp_path):
    cfg = ListsConfig(device_id="cam1", device_key=Path("k/dev.key"), signing_public_key=Path("k/sign.pub"),
                      store_dir=Path("lists"), enabled=["stolen", "tax"])
    r = cfg.resolved(tmp_path)
    assert r.device_key == tmp_path / "k/dev.key" and r.store_dir == tmp_path / "lists"
    assert cfg.topic_prefix() == "anpr/lists/cam1" and cfg.enabled == ["stolen", "tax"]
    for bad in ({"sync_topic": "anpr/#"}, {"enabled": ["bad id"]}, {"surprise": 1}, {"expiry_check_s": 0}):
        with pytest.raises(ValidationError):
            ListsConfig(device_id="cam1", device_key="a", signing_public_key="b", **bad)
    assert all(f.description for f in ListsConfig.model_fields.values())


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(["lists", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def test_cli_central_and_device_commands(tmp_path, capsys):
    st = tmp_path / "central"
    (tmp_path / "lists.yaml").write_text(LISTS_YAML)
    rc, out, _ = run_cli(capsys, "init", "--state", st)
    assert rc == 0 and Path(out["trusted_signers"]).exists()
    rc, out, _ = run_cli(capsys, "keygen-device", "--key", tmp_path / "cam1.key", "--pub", tmp_path / "cam1.pub")
    assert rc == 0
    assert run_cli(capsys, "device-add", "--state", st, "--id", "cam1", "--pub", tmp_path / "cam1.pub")[0] == 0
    write_csv(tmp_path / "bad.csv", ["XS-NB-23,stolen,R1,", "XX,unknown,R,"])
    rc, out, err = run_cli(capsys, "build", "--state", st, "--lists", tmp_path / "lists.yaml", "--csv", tmp_path / "bad.csv")
    assert rc == 3 and "bad.csv: 1 bad row(s):\n  line 3, column 2 (list_id): not a known list id" in err
    assert "'unknown'" not in err and "XX" not in err
    rc, out, err = run_cli(capsys, "build", "--state", st, "--lists", tmp_path / "lists.yaml",
                           "--csv", tmp_path / "bad.csv", "--skip-bad")
    assert rc == 0 and out["entries"] == 1 and len(out["bad_rows_skipped"]) == 1
    assert out["bad_rows_skipped"][0].startswith(f"{tmp_path / 'bad.csv'} line 3, column 2 (list_id): not a known list id")
    write_csv(tmp_path / "add.csv", ["ZZ-999-Z,stolen,URG,"])
    rc, out, _ = run_cli(capsys, "delta", "--state", st, "--add", tmp_path / "add.csv", "--deactivate", "tax")
    assert rc == 0 and out["seq"] == 1 and out["delta_bytes"] > 0
    version = out["version"]
    delta = st / "out" / f"delta-{version}-00000001.bin"
    rc, out, _ = run_cli(capsys, "inspect", delta, "--trusted", st / "trusted.pub", "--device-id", "cam1",
                         "--device-key", tmp_path / "cam1.key")
    assert rc == 0 and out["kind"] == "delta" and out["adds"] == 1 and out["ops"] == [["deactivate", "tax"]]
    assert "ZZ" not in json.dumps(out)
    # device side: status from the cache
    store = ListStore("cam1", keys.load_device_key(tmp_path / "cam1.key"),
                      keys.load_trusted_signers(st / "trusted.pub"), tmp_path / "store")
    assert store.apply((st / "out" / "snapshot.bin").read_bytes()).status == "applied"
    rc, out, _ = run_cli(capsys, "status", "--store-dir", tmp_path / "store", "--device-id", "cam1",
                         "--device-key", tmp_path / "cam1.key", "--trusted", st / "trusted.pub")
    assert rc == 0 and (out["version"], out["seq"], out["entries"]) == (version, 1, 2)
    assert {x["id"]: x["active"] for x in out["lists"]}["tax"] is False
    rc, _, err = run_cli(capsys, "status", "--store-dir", tmp_path / "store")
    assert rc == 2 and "--device-id" in err
    rc, _, err = run_cli(capsys, "inspect", delta, "--trusted", tmp_path / "cam1.pub")
    assert rc == 2 and "X25519PublicKey" in err


def test_rotate_is_a_new_build_with_a_new_hash_key(fleet, tmp_path, capsys, caplog):
    a = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")[0]
    rc, out, _ = run_cli(capsys, "rotate", "--state", fleet.central.root, "--lists", tmp_path / "lists.yaml",
                         "--csv", tmp_path / "plates.csv")
    assert rc == 0 and out["version"] > a.state.version and out["seq"] == 0
    assert fleet.central.load().hash_key != a.state.hash_key
    key, _ = fleet.device("cam1")
    key.chmod(0o644)
    keys.load_device_key(key)
    assert "readable by other users" in caplog.text


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def test_device_add_to_a_state_folder_that_is_not_there_fails_and_changes_nothing(tmp_path, capsys):
    # A mistyped --state used to be created on the spot and the device reported registered, while
    # the packages went on being sealed from the real state folder, without that device.
    import subprocess
    import sys

    from conftest import ROOT

    keys.generate_device_key(tmp_path / "cam1.key", tmp_path / "cam1.pub")
    missing = tmp_path / "nonexistent" / "central"
    r = subprocess.run([sys.executable, "-m", "edge.cli", "lists", "device-add", "--state", str(missing), "--id", "cam1",
                        "--pub", str(tmp_path / "cam1.pub")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert f"lists device-add: {missing}: does not exist; check --state, or create one with " \
           f"'lists init --state {missing}'" in r.stderr
    assert not (tmp_path / "nonexistent").exists()

    empty = tmp_path / "empty"  # a folder, but not one that 'lists init' made
    empty.mkdir()
    rc, out, err = run_cli(capsys, "device-add", "--state", empty, "--id", "cam1", "--pub", tmp_path / "cam1.pub")
    assert rc == 2 and out is None and f"{empty}: is not a central state folder (no signing.key)" in err
    assert not any(empty.iterdir())
    rc, _, err = run_cli(capsys, "device-remove", "--state", missing, "--id", "cam1")
    assert rc == 2 and f"{missing}: does not exist" in err


def test_device_add_that_cannot_write_fails_naming_the_path_and_changes_nothing(fleet, tmp_path, capsys):
    state = fleet.central.root
    devices = state / "devices"
    for p in devices.iterdir():
        p.unlink()
    devices.rmdir()
    devices.write_text("not a folder\n")  # (as root, permissions stop nothing: an obstacle does)
    before = tree(state)
    rc, out, err = run_cli(capsys, "device-add", "--state", state, "--id", "cam3", "--pub", fleet.device("cam3")[1])
    assert rc == 2 and out is None
    assert f"lists device-add: device 'cam3' not registered: cannot write {devices}" in err
    assert tree(state) == before
    devices.unlink()  # the obstacle gone, the same command works
    rc, out, _ = run_cli(capsys, "device-add", "--state", state, "--id", "cam3", "--pub", fleet.device("cam3")[1])
    assert rc == 0 and out == {"device": "cam3", "registered": True, "public_key": str(devices / "cam3.pub")}
