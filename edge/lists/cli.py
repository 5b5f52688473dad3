"""`anpr-edge lists ...`: central commands (keys, build, delta, publish) and device commands (status).

Until the lead wires it into `anpr-edge`, run it as `python -m edge.lists.cli ...`.
Output names versions, list ids and counts, never plates or hashes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from edge.lists import keys
from edge.lists.central import Central, CentralError, Sealed
from edge.lists.codec import PayloadError, decode_delta, decode_snapshot
from edge.lists.csvrows import CsvError, RowError
from edge.lists.package import PackageError, open_package, read_header
from edge.lists.sync import publish_blobs, sync_topics
from edge.publisher import port_number

DEFAULT_TOPIC = "anpr/lists/{device}"
_ERRORS = (CentralError, CsvError, keys.KeyFileError, PackageError, PayloadError, OSError, TimeoutError, ValueError)


def add_subparsers(subparsers) -> argparse.ArgumentParser:
    """Register `lists` and its subcommands on an argparse subparsers object."""
    lp = subparsers.add_parser("lists", help="reference lists: keys, build, delta, publish, inspect, status")
    sub = lp.add_subparsers(dest="lists_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("init", help="create a central state folder with a signing key")
    _state(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("keygen-device", help="generate a device X25519 key pair (run on or for the unit)")
    p.add_argument("--key", required=True, type=Path, help="private key file to write (mode 0600)")
    p.add_argument("--pub", required=True, type=Path, help="public key file to write (give it to central)")
    p.set_defaults(func=cmd_keygen_device)

    p = sub.add_parser("device-add", help="register (or replace: device key rotation) a device public key")
    _state(p)
    p.add_argument("--id", required=True, help="device id")
    p.add_argument("--pub", required=True, type=Path, help="the device's X25519 public key file")
    p.set_defaults(func=cmd_device_add)

    p = sub.add_parser("device-remove", help="stop addressing packages to a device (lost or retired unit)")
    _state(p)
    p.add_argument("--id", required=True, help="device id")
    p.set_defaults(func=cmd_device_remove)

    p = sub.add_parser("rotate-signing", help="new Ed25519 signing key; trusted.pub keeps old keys until --retire")
    _state(p)
    p.add_argument("--retire", action="store_true", help="trust only the current key (after devices have it)")
    p.set_defaults(func=cmd_rotate_signing)

    p = sub.add_parser("build", aliases=["rotate"],
                       help="new version from the full CSV, with a fresh hash key (this is the hash-key rotation)")
    _state(p)
    p.add_argument("--lists", required=True, type=Path, help="lists definition YAML")
    p.add_argument("--csv", required=True, type=Path, help="CSV: plate,list_id,reason_code,valid_until")
    p.add_argument("--skip-bad", action="store_true", help="build from the good rows even if some rows are bad")
    _mqtt(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("delta", help="next signed delta: add/remove entries, activate/deactivate lists")
    _state(p)
    p.add_argument("--add", type=Path, help="CSV of entries to add: plate,list_id,reason_code,valid_until")
    p.add_argument("--remove", type=Path, help="CSV of entries to remove: plate,list_id")
    p.add_argument("--activate", action="append", default=[], metavar="LIST_ID")
    p.add_argument("--deactivate", action="append", default=[], metavar="LIST_ID")
    p.add_argument("--lists", type=Path, help="lists YAML: new or changed list definitions travel in the delta")
    p.add_argument("--skip-bad", action="store_true", help="apply the good rows even if some rows are bad")
    _mqtt(p)
    p.set_defaults(func=cmd_delta)

    p = sub.add_parser("publish", help="publish the current snapshot (retained) to every device topic")
    _state(p)
    _mqtt(p, always=True)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("inspect", help="verify a sealed package and show its header (and contents with a device key)")
    p.add_argument("file", type=Path)
    p.add_argument("--trusted", required=True, type=Path, help="trusted signing public key file")
    p.add_argument("--device-id", help="open it as this device")
    p.add_argument("--device-key", type=Path, help="that device's private key file")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("status", help="device side: load the cached package and show versions and lists")
    p.add_argument("--config", type=Path, help="the unit's config file (uses its lists: section)")
    p.add_argument("--store-dir", type=Path)
    p.add_argument("--device-id")
    p.add_argument("--device-key", type=Path)
    p.add_argument("--trusted", type=Path)
    p.set_defaults(func=cmd_status)
    return lp


def _state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, type=Path, help="central state folder")


def _mqtt(p: argparse.ArgumentParser, always: bool = False) -> None:
    if not always:
        p.add_argument("--publish", action="store_true", help="publish through the MQTT broker at once")
    p.add_argument("--host", help="MQTT broker host")
    p.add_argument("--port", type=port_number, help="MQTT broker port (1883, or 8883 with --tls-ca)")
    p.add_argument("--username", default="")
    p.add_argument("--password-file", type=Path)
    p.add_argument("--tls-ca", type=Path, help="CA file: use TLS")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help="sync topic prefix template ({device} allowed)")


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args) or 0
        except CsvError as e:
            print(f"lists {args.lists_command}: {e}", file=sys.stderr)
            return 3
        except _ERRORS as e:
            print(f"lists {args.lists_command}: {e}", file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    return run


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


@_guard
def cmd_init(args) -> int:
    trusted = Central(args.state).init()
    _print({"state": str(args.state), "trusted_signers": str(trusted)})


@_guard
def cmd_keygen_device(args) -> int:
    keys.generate_device_key(args.key, args.pub)
    _print({"private_key": str(args.key), "public_key": str(args.pub)})


@_guard
def cmd_device_add(args) -> int:
    path = Central(args.state).add_device(args.id, args.pub)
    _print({"device": args.id, "registered": True, "public_key": str(path)})


@_guard
def cmd_device_remove(args) -> int:
    Central(args.state).remove_device(args.id)
    _print({"device": args.id, "registered": False})


@_guard
def cmd_rotate_signing(args) -> int:
    c = Central(args.state)
    path = c.retire_old_signers() if args.retire else c.rotate_signing()
    _print({"trusted_signers": str(path), "keys": len(keys.load_trusted_signers(path))})


def _row_errors(errors: list[RowError]) -> list[str]:
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    return [str(e) for e in errors]


@_guard
def cmd_build(args) -> int:
    sealed, errors = Central(args.state).build(args.lists, args.csv, skip_bad=args.skip_bad)
    out = _summary(sealed, errors)
    if args.publish:
        out["published"] = _publish(args, sealed)
    _print(out)


@_guard
def cmd_delta(args) -> int:
    sealed, errors = Central(args.state).delta(args.add, args.remove, tuple(args.activate), tuple(args.deactivate),
                                               args.lists, skip_bad=args.skip_bad)
    out = _summary(sealed, errors)
    if args.publish:
        out["published"] = _publish(args, sealed)
    _print(out)


@_guard
def cmd_publish(args) -> int:
    c = Central(args.state)
    st = c.load()
    snap = (args.state / "out" / "snapshot.bin").read_bytes()
    _print({"version": st.version, "seq": st.seq, "published": _publish(args, Sealed(snap, None, st))})


def _summary(sealed: Sealed, errors: list[RowError]) -> dict:
    st = sealed.state
    return {"version": st.version, "seq": st.seq, "entries": len(st.entries), "lists": [d.id for d in st.lists],
            "snapshot_bytes": len(sealed.snapshot), "delta_bytes": len(sealed.delta) if sealed.delta else 0,
            "bad_rows_skipped": _row_errors(errors)}


def _publish(args, sealed: Sealed) -> list[str]:
    """Delta first (QoS 1), then the retained snapshot, on every device's topics."""
    from edge.publisher import MqttConfig, TlsConfig

    if not args.host:
        raise CentralError("--host is needed to publish")
    cfg = MqttConfig(host=args.host, port=args.port, username=args.username, password_file=args.password_file,
                     tls=TlsConfig(ca=args.tls_ca) if args.tls_ca else None)
    devices = sorted(Central(args.state).devices()) if "{device}" in args.topic else [""]
    items = []
    for dev in devices:
        snap_topic, delta_topic = sync_topics(args.topic.replace("{device}", dev))
        if sealed.delta is not None:
            items.append((delta_topic, sealed.delta, False))
        items.append((snap_topic, sealed.snapshot, True))
    publish_blobs(items, cfg)
    return [t for t, _, _ in items]


@_guard
def cmd_inspect(args) -> int:
    blob = args.file.read_bytes()
    trusted = keys.load_trusted_signers(args.trusted)
    h = read_header(blob, trusted)
    out = {"signature": "valid", "kind": h.kind, "version": h.version, "seq": h.seq, "created": h.created,
           "bytes": h.size, "recipients": list(h.recipients)}
    if args.device_id and args.device_key:
        opened = open_package(blob, trusted, args.device_id, keys.load_device_key(args.device_key))
        if h.kind == "snapshot":
            p = decode_snapshot(opened.payload)
            out["lists"] = [{"id": d.id, "category": d.category, "action": d.action, "active": d.active,
                             "expires": d.expires} for d in p.lists]
            out["entries"] = len(p.entries)
        else:
            d = decode_delta(opened.payload)
            out.update(ops=[list(o) for o in d.ops], lists_changed=[x.id for x in d.lists], adds=len(d.adds),
                       removes=len(d.removes))
    _print(out)


@_guard
def cmd_status(args) -> int:
    from edge.lists.store import ListStore

    if args.config:
        from edge.config import load_config
        cfg = load_config(args.config).lists
        store = ListStore.from_config(cfg)
    else:
        missing = [n for n in ("store_dir", "device_id", "device_key", "trusted") if getattr(args, n) is None]
        if missing:
            raise CentralError("give --config, or all of " + ", ".join("--" + m.replace("_", "-") for m in missing))
        store = ListStore(args.device_id, keys.load_device_key(args.device_key),
                          keys.load_trusted_signers(args.trusted), args.store_dir)
        store.load_cache()
    _print(store.status(datetime.now(timezone.utc)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.lists.cli")
    parser.add_argument("--log-level", default="WARNING")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
