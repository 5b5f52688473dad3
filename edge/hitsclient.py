"""Central side: `anpr-edge hits` prints the hit stream, `anpr-edge status` shows a unit's status.

The consumer subscribes with QoS 1 (plain or shared subscription `$share/<group>/<topic>`) and
prints one JSON hit per line. Delivery is at-least-once, so it drops duplicates by hit id.
A message is acknowledged to the broker only after its line was written and flushed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
    make_ssl_context, read_password
from edge.status import STATUS_FILE, format_status, read_status

log = logging.getLogger(__name__)
DEFAULT_HIT_TOPIC = "anpr/+/+/hits"


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


def run_hits_consumer(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Subscribe and print unique hits as JSON lines until interrupted, --count or --timeout."""
    out = out or sys.stdout
    cfg = consumer_config(args)
    topics = subscription_topics(args)
    seen = SeenIds()
    done = threading.Event()
    state = {"unique": 0, "dupes": 0, "error": ""}
    use_v5 = cfg.protocol != "3.1.1"
    cid = cfg.client_id or f"anpr-hits-{os.getpid()}"
    persistent = bool(args.persistent)
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

    def on_message(cl, ud, msg):
        """Acknowledge only what was written (or is a duplicate / not a hit): a crash leaves the rest queued."""
        if state["error"]:
            return  # stopping after an error: leave everything else unacknowledged
        try:
            hit = json.loads(msg.payload)
            hit_id = hit["hit_id"]
        except (ValueError, KeyError, TypeError):
            print(f"warning: message on {msg.topic} is not a hit (no JSON with hit_id); ignored", file=sys.stderr)
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
        except (OSError, ValueError) as e:  # output closed (e.g. the reader of a pipe went away)
            state["error"] = f"cannot write hits to the output: {e}"
            print(f"error: {state['error']}", file=sys.stderr)
            done.set()
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
    h.add_argument("--port", type=int)
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
