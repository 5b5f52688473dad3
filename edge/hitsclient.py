"""Central side: `anpr-edge hits` prints the hit stream, `anpr-edge status` shows a unit's status.

The consumer subscribes with QoS 1 (plain or shared subscription `$share/<group>/<topic>`) and
prints one JSON hit per line. Delivery is at-least-once, so it drops duplicates by hit id.
A message is acknowledged to the broker only after its line was written and flushed (and, when stdout
is a file, fsynced). A message that is not a hit is kept aside (--rejects, else on stderr), never dropped.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import logging
import os
import stat
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TextIO

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge.publisher import MqttConfig, MqttSetupError, TlsConfig, describe_connack, describe_connect_error, \
    make_ssl_context, port_number, read_password
from edge.status import STATUS_FILE, format_status, read_status

log = logging.getLogger(__name__)
DEFAULT_HIT_TOPIC = "anpr/+/+/hits"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # far above any hit (frame evidence is a few hundred KB)
_RECOVER_TAIL_BYTES = 64 * 1024 * 1024  # how much of an output file is read back at start


class Rejected(ValueError):
    """A message that is not a usable hit; it is kept aside, then acknowledged."""


class SeenIds:
    """Bounded memory of recent hit ids (oldest forgotten first)."""

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, hit_id: str) -> bool:
        return hit_id in self._ids

    def add(self, hit_id: str) -> bool:
        """True when new, False for a duplicate."""
        if hit_id in self._ids:
            self._ids.move_to_end(hit_id)
            return False
        self._ids[hit_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def _mqtt_section(config_path: Path) -> MqttConfig:
    """Only the mqtt section of a YAML config (unit config or a central one with just `mqtt:`)."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SystemExit(f"{config_path}: cannot read config: {e.strerror}")
    except yaml.YAMLError as e:
        raise SystemExit(f"{config_path}: not valid YAML: {e}")
    if not isinstance(data, dict) or "mqtt" not in data:
        raise SystemExit(f"{config_path}: no 'mqtt' section")
    try:
        return MqttConfig.model_validate(data["mqtt"]).resolved(config_path.resolve().parent)
    except ValueError as e:
        raise SystemExit(f"{config_path}: invalid mqtt section: {e}")


def consumer_config(args: argparse.Namespace) -> MqttConfig:
    """Config file first, then command-line flags override."""
    base = _mqtt_section(Path(args.config)) if args.config else None
    fields = dict(base.model_dump()) if base else {"host": "localhost"}
    for flag, key in (("host", "host"), ("port", "port"), ("username", "username"),
                      ("password_file", "password_file"), ("client_id", "client_id"), ("protocol", "protocol")):
        v = getattr(args, flag, None)
        if v is not None:
            fields[key] = v
    if args.ca or args.cert or args.insecure:
        tls = dict(fields.get("tls") or {})
        tls.update({k: v for k, v in (("ca", args.ca), ("cert", args.cert), ("key", args.key)) if v})
        if args.insecure:
            tls["insecure"] = True
        fields["tls"] = TlsConfig.model_validate(tls)
    try:
        return MqttConfig.model_validate(fields)
    except ValueError as e:
        raise SystemExit(f"invalid options: {e}")


def subscription_topics(args: argparse.Namespace) -> list[str]:
    topics = args.topic or [DEFAULT_HIT_TOPIC]
    if args.group:
        topics = [t if t.startswith("$share/") else f"$share/{args.group}/{t}" for t in topics]
    return topics


def _regular_file_fd(stream) -> int | None:
    """The descriptor of `stream` when it is a regular file (stdout redirected to a file), else None."""
    try:
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):  # StringIO, closed stream
        return None


def _recover_file(fd: int, seen: SeenIds | None) -> None:
    """At start, for a file opened for appending: cut a torn last line and remember the hit ids already in it.

    Lines are fsynced before their PUBACK, so a torn (unterminated) last line is a hit that was never
    acknowledged: the broker delivers it again, and appending after the fragment would corrupt that next
    line too. The ids already written keep a hit that is redelivered after a restart (written, then a
    crash or power cut before its PUBACK) from being written twice.
    """
    if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
        return  # not `>>`: we would not write at the end anyway, leave the file as it is
    size = os.fstat(fd).st_size
    if size == 0:
        return
    start = max(0, size - _RECOVER_TAIL_BYTES)
    try:  # stdout is usually write-only: read the file through a second descriptor
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            f.seek(start)
            data = f.read(size - start)
    except OSError as e:
        print(f"warning: cannot read back the output file to check its last line: {e}", file=sys.stderr)
        return
    end = data.rfind(b"\n") + 1
    if end < len(data) and (end > 0 or start == 0):
        os.ftruncate(fd, start + end)
        os.fsync(fd)
        print(f"warning: cut a torn last line ({len(data) - end} bytes) from the output file; "
              "its hit was not acknowledged and comes again", file=sys.stderr)
    if seen is None:
        return
    lines = data[:end].split(b"\n")
    for line in lines[1:] if start else lines:  # a read from the middle starts inside a line
        try:
            obj = json.loads(line)
            hit_id = obj["hit_id"] if "hit_id" in obj else obj["hit"]["hit_id"]  # --with-topic wraps the hit
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
        if isinstance(hit_id, str):
            seen.add(hit_id)


def parse_hit(payload: bytes, max_bytes: int) -> tuple[str, dict]:
    """(hit_id, hit) of a message, or Rejected saying why it is not a hit. Never raises anything else."""
    if len(payload) > max_bytes:
        raise Rejected(f"message of {len(payload)} bytes is larger than --max-bytes {max_bytes}")
    try:
        hit = json.loads(payload)
    except (ValueError, RecursionError) as e:  # includes invalid UTF-8
        raise Rejected(f"not JSON: {e}"[:300]) from None
    if not isinstance(hit, dict):
        raise Rejected("not a JSON object")
    hit_id = hit.get("hit_id")
    # the id is the deduplication key: anything but a string (e.g. a list) would crash the lookup
    if not isinstance(hit_id, str) or not hit_id:
        raise Rejected("no hit_id string")
    try:  # a lone surrogate (\ud800) parses but cannot be written as UTF-8: catch it here, not at the output
        json.dumps(hit, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as e:
        raise Rejected(f"cannot be written as UTF-8 JSON: {e}"[:300]) from None
    return hit_id, hit


def run_hits_consumer(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Subscribe and print unique hits as JSON lines until interrupted, --count or --timeout."""
    if out is None:
        out = sys.stdout
        if hasattr(out, "reconfigure"):
            out.reconfigure(encoding="utf-8")  # JSON lines are UTF-8 whatever the locale says
    cfg = consumer_config(args)
    topics = subscription_topics(args)
    persistent = bool(args.persistent)
    if persistent and not cfg.client_id:
        # a generated id differs on every start: the broker's session (and the hits queued in it) would
        # never be picked up again, and each start would leave another orphan session collecting hits
        print("error: --persistent needs a fixed --client-id (or mqtt.client_id in --config)", file=sys.stderr)
        return 2
    if not persistent:
        print("warning: without --persistent (and a fixed --client-id) hits published while this consumer is down, "
              "and those unacknowledged when it stops, are not kept for it by the broker", file=sys.stderr)
    max_bytes = getattr(args, "max_bytes", 0) or DEFAULT_MAX_BYTES
    seen = SeenIds()
    done = threading.Event()
    state = {"unique": 0, "dupes": 0, "error": ""}
    use_v5 = cfg.protocol != "3.1.1"
    cid = cfg.client_id or f"anpr-hits-{os.getpid()}"
    if use_v5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                             clean_session=not persistent, manual_ack=True)
    try:
        if cfg.username:
            client.username_pw_set(cfg.username, read_password(cfg.password_file) if cfg.password_file else None)
        if cfg.tls is not None:
            client.tls_set_context(make_ssl_context(cfg.tls))
            if cfg.tls.insecure:
                client.tls_insecure_set(True)
    except MqttSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_fd = _regular_file_fd(out)  # a file gets fsync before each PUBACK; a pipe's reader must store durably itself
    rejects = None
    rejects_path = getattr(args, "rejects", None)
    try:
        if out_fd is not None:
            _recover_file(out_fd, seen)
        if rejects_path:
            rejects = open(rejects_path, "ab")
            _recover_file(rejects.fileno(), None)
    except OSError as e:
        print(f"error: cannot prepare the output files: {e}", file=sys.stderr)
        return 2

    def on_connect(cl, ud, flags, rc, props):
        if rc.is_failure:
            state["error"] = describe_connack(rc, cfg.username)
            print(f"error: {state['error']}", file=sys.stderr)
            done.set()
            return
        cl.subscribe([(t, 1) for t in topics])

    def on_subscribe(cl, ud, mid, rcs, props):
        bad = [str(r) for r in rcs if r.is_failure]
        if bad:
            state["error"] = f"broker refused the subscription: {', '.join(bad)}"
            print(f"error: {state['error']}", file=sys.stderr)
            done.set()
        elif args.ready_file:
            Path(args.ready_file).touch()

    def stop_with(error: str) -> None:
        state["error"] = error
        print(f"error: {error}", file=sys.stderr)
        done.set()

    def keep_aside(msg, reason: str) -> bool:
        """Store a message that is not a hit (with why) before it is acknowledged; False if that failed."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "topic": msg.topic, "error": reason,
                  "bytes": len(msg.payload), "payload_b64": base64.b64encode(msg.payload).decode("ascii")}
        line = json.dumps(record, ensure_ascii=True)
        if rejects is None:
            print(f"error: message on {msg.topic} is not a hit ({reason}); kept here: {line}", file=sys.stderr)
            sys.stderr.flush()
            return True
        print(f"error: message on {msg.topic} ({len(msg.payload)} bytes) is not a hit ({reason}); kept in {rejects_path}",
              file=sys.stderr)
        try:
            rejects.write(line.encode("ascii") + b"\n")
            rejects.flush()
            os.fsync(rejects.fileno())
        except OSError as e:
            stop_with(f"cannot write to --rejects {rejects_path}: {e}")
            return False
        return True

    def on_message(cl, ud, msg):
        """Acknowledge only what was written (or is a duplicate / kept aside): a crash leaves the rest queued."""
        if state["error"]:
            return  # stopping after an error: leave everything else unacknowledged
        try:
            handle(cl, msg)
        except Exception as e:  # an exception here would kill paho's network thread and hang the consumer
            stop_with(f"unexpected failure on a message on {msg.topic}: {e!r}")

    def handle(cl, msg):
        try:
            hit_id, hit = parse_hit(msg.payload, max_bytes)
        except Rejected as e:
            if keep_aside(msg, str(e)):
                cl.ack(msg.mid, msg.qos)
            return
        if hit_id in seen:
            state["dupes"] += 1
            cl.ack(msg.mid, msg.qos)
            return
        if args.with_topic:
            hit = {"topic": msg.topic, "hit": hit}
        try:
            out.write(json.dumps(hit, separators=(",", ":"), ensure_ascii=False) + "\n")
            out.flush()
            if out_fd is not None:
                os.fsync(out_fd)  # on disk before the PUBACK: a power cut after it must not lose the hit
        except (OSError, ValueError) as e:  # output closed (e.g. the reader of a pipe went away), disk full
            stop_with(f"cannot write hits to the output: {e}")
            return  # not acknowledged: the broker delivers it again
        seen.add(hit_id)
        cl.ack(msg.mid, msg.qos)
        state["unique"] += 1
        if args.count and state["unique"] >= args.count:
            done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = None
    if use_v5 and persistent:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 24 * 3600
    try:
        if use_v5:
            client.connect(cfg.host, cfg.effective_port, cfg.keepalive_s, clean_start=not persistent, properties=props)
        else:
            client.connect(cfg.host, cfg.effective_port, cfg.keepalive_s)
    except OSError as e:
        print(f"error: {describe_connect_error(e, cfg.host, cfg.effective_port, cfg.tls)}", file=sys.stderr)
        if rejects is not None:
            rejects.close()
        return 1
    client.loop_start()
    try:
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while not done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            done.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
        if rejects is not None:
            rejects.close()
    if args.verbose:
        print(f"{state['unique']} hits, {state['dupes']} duplicates dropped", file=sys.stderr)
    return 1 if state["error"] else 0


def run_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the local status file of a unit (from --state-dir or the config's device.state_dir)."""
    out = out or sys.stdout
    if args.state_dir:
        state_dir = Path(args.state_dir)
    elif args.config:
        cfg_path = Path(args.config)
        try:
            data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            print(f"error: {cfg_path}: cannot read config: {e}", file=sys.stderr)
            return 2
        sd = Path(((data.get("device") or {}).get("state_dir")) or "/var/lib/anpr-edge")
        state_dir = sd if sd.is_absolute() else cfg_path.resolve().parent / sd
    else:
        state_dir = Path("/var/lib/anpr-edge")
    path = state_dir / STATUS_FILE
    try:
        data = read_status(path)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        out.write(json.dumps(data) + "\n")
    else:
        out.write(format_status(data, time.time() - path.stat().st_mtime) + "\n")
    return 0


def add_subparsers(subparsers) -> None:
    """Add the `hits` and `status` commands to anpr-edge's argparse subparsers."""
    h = subparsers.add_parser("hits", help="print hits from the MQTT broker as JSON lines (central side)",
                              description="Subscribe to hit topics and print one JSON hit per line, without duplicates.")
    h.add_argument("--config", help="YAML file with an 'mqtt' section (flags below override it)")
    h.add_argument("--host")
    h.add_argument("--port", type=port_number)
    h.add_argument("--protocol", choices=["5", "3.1.1", "auto"])
    h.add_argument("--username")
    h.add_argument("--password-file", dest="password_file")
    h.add_argument("--client-id", dest="client_id")
    h.add_argument("--ca", help="CA certificate (PEM); enables TLS")
    h.add_argument("--cert", help="client certificate (PEM)")
    h.add_argument("--key", help="client key (PEM)")
    h.add_argument("--insecure", action="store_true", help="skip the broker host name check")
    h.add_argument("--topic", action="append", help=f"topic filter (repeatable; default {DEFAULT_HIT_TOPIC}); "
                   "may be $share/<group>/<filter>")
    h.add_argument("--group", help="shared-subscription group: consumers of one group split the stream")
    h.add_argument("--persistent", action="store_true",
                   help="keep the broker session (needs a fixed --client-id) so hits wait while this consumer is down")
    h.add_argument("--count", type=int, default=0, help="exit after this many unique hits")
    h.add_argument("--timeout", type=float, default=0, help="exit after this many seconds")
    h.add_argument("--with-topic", action="store_true", help="print {topic, hit} objects")
    h.add_argument("--rejects", help="append messages that are not hits (bad JSON, no hit_id, too large) to this "
                   "file as JSON lines with the error and the payload in base64 (default: on stderr)")
    h.add_argument("--max-bytes", dest="max_bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"messages larger than this are rejected (default {DEFAULT_MAX_BYTES})")
    h.add_argument("--ready-file", help=argparse.SUPPRESS)  # touched once subscribed (tests)
    h.add_argument("-v", "--verbose", action="store_true")
    h.set_defaults(func=run_hits_consumer)

    s = subparsers.add_parser("status", help="show this unit's status (from the daemon's status file)")
    s.add_argument("--config", help="unit config file (uses device.state_dir)")
    s.add_argument("--state-dir", dest="state_dir", help="state directory of the daemon")
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    s.set_defaults(func=run_status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.hitsclient")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
