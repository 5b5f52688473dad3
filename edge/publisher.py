"""MQTT publisher: drains the outbox to the broker with QoS 1, and keeps the unit's status topic.

Two threads: the network thread connects (with backoff and clear errors), then runs paho's loop;
the worker thread publishes outbox items in the outbox's order (higher priority first, oldest first
within a priority; a bounded window in flight), deletes them
from the outbox only when their PUBACK arrived, and sends the heartbeat. The caller's thread is
never blocked: a hit is safe once `Outbox.put` returned, whatever the broker does.

Every connection gets a fresh paho client, so paho never re-sends anything on its own: after a
reconnect the worker re-sends from the outbox, in that order, and only once the network thread has
finished handling the CONNACK. One hit the broker cannot take must not block the ones after it,
and must still reach the operator:
a hit larger than the broker's MQTT 5 Maximum Packet Size (paho 2.2 ignores that limit, and the
broker would drop the connection) is sent without its evidence images (`evidence_omitted` says why);
a hit that is the first sent of those in flight each time the connection drops, several times in a
row, is sent once more without its evidence (a size limit the broker did not announce is the likely
cause). Only a hit that does not fit or keeps dropping the connection even without evidence (or is
not a JSON hit) is held back for a while; it stays in the outbox. In every case an outbox row is
deleted only on the PUBACK of what was actually sent, under the same hit_id.
An MQTT 3.1.1 broker with a size limit that acknowledges a too-large message and then silently
discards it (Mosquitto's message_size_limit) cannot be detected from here: the hit counts as
delivered. Keep such limits well above the largest hit (frame evidence can be a few hundred KB).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import socket
import ssl
import string
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import Field, field_validator, model_validator

from edge.configbase import Section
from edge.hits import without_evidence
from edge.outbox import Outbox, OutboxItem
from edge.topics import check_topic_template

log = logging.getLogger(__name__)

DROPS_BEFORE_HOLDING_BACK = 3  # connection drops in a row with the same hit the first sent in flight
TOO_LARGE_RETRY_S = 3600.0  # a hit over the broker's Maximum Packet Size is looked at again after this
_STABLE_LINK_S = 10.0  # a connection up this long restarts the reconnect backoff at its minimum


class TlsConfig(Section):
    ca: Path | None = Field(None, description="CA certificate file (PEM) that signed the broker's certificate; None = system CAs.")
    cert: Path | None = Field(None, description="Client certificate (PEM) for brokers that require one; needs key too.")
    key: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    insecure: bool = Field(False, description="Skip the broker host name check (testing only; the certificate chain is still verified).")

    @model_validator(mode="after")
    def _pair(self):
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key must be given together")
        return self


class MqttConfig(Section):
    host: str = Field(min_length=1, description="Broker host name or IP address.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; default 8883 with TLS, 1883 without.")
    protocol: Literal["5", "3.1.1", "auto"] = Field(
        "auto", description="MQTT protocol version; auto tries 5 and falls back to 3.1.1 when the broker refuses it.")
    client_id: str = Field("", description="MQTT client id; empty = 'anpr-edge-<device id>'.")
    username: str = Field("", description="User name for broker authentication (empty = none).")
    password_file: Path | None = Field(None, description="File whose first line is the broker password (kept out of the config).")
    tls: TlsConfig | None = Field(None, description="TLS settings; omit for plain TCP (only on a trusted network).")
    keepalive_s: int = Field(30, ge=2, le=3600, description="MQTT keep-alive; a dead link is noticed after about 1.5x this.")
    hit_topic: str = Field("anpr/{agency}/{device}/hits", description=(
        "Default topic template for hits; fields {device} {camera} {list} {agency} {priority}. "
        "A list may bring its own template."))
    status_topic: str = Field("anpr/status/{device}", description="Retained status topic ({device}); the last will sets it offline.")
    heartbeat_s: float = Field(60.0, gt=0, description="Seconds between status heartbeats.")
    qos: Literal[1] = Field(1, description="Publish QoS; fixed at 1 (at least once, deduplicated by hit id).")
    max_inflight: int = Field(20, ge=1, le=1000, description="Hits published but not yet acknowledged at most.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for TCP/TLS connect and CONNACK.")
    reconnect_min_s: float = Field(0.5, gt=0, description="First wait before reconnecting (doubles on each failure).")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest wait between reconnect attempts.")

    @field_validator("hit_topic")
    @classmethod
    def _hit_topic(cls, v: str) -> str:
        return check_topic_template(v)

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, v: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"status_topic {v!r} is malformed: {e}") from None
        if fields - {"device"}:
            raise ValueError(f"status_topic may only use the {{device}} field, not {sorted(fields - {'device'})}")
        if "+" in v or "#" in v or v.startswith("$") or not v:
            raise ValueError("status_topic must be non-empty, without MQTT wildcards (+ #) or a leading $")
        return v

    @model_validator(mode="after")
    def _backoff(self):
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)

    def resolved(self, base: Path) -> "MqttConfig":
        """Relative certificate and password paths are taken from the config file's folder."""
        def fix(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else Path(base) / p
        upd: dict = {}
        if self.password_file is not None and not self.password_file.is_absolute():
            upd["password_file"] = fix(self.password_file)
        if self.tls is not None:
            t = {k: fix(getattr(self.tls, k)) for k in ("ca", "cert", "key") if getattr(self.tls, k) is not None
                 and not getattr(self.tls, k).is_absolute()}
            if t:
                upd["tls"] = self.tls.model_copy(update=t)
        return self.model_copy(update=upd) if upd else self


class MqttSetupError(ValueError):
    """Local settings for the broker connection are unusable (missing or bad certificate/password files)."""


_AUTH_CODES_V3 = {1: "unsupported protocol version", 2: "client id rejected", 3: "server unavailable",
                  4: "bad user name or password", 5: "not authorised"}


def port_number(text: str) -> int:
    """A TCP port from the command line (argparse type): 1-65535, else argparse names the option."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} outside 1-65535")
    return port


def read_password(path: Path) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MqttSetupError(f"mqtt.password_file {path}: cannot read: {e.strerror}") from None
    if not lines or not lines[0]:
        raise MqttSetupError(f"mqtt.password_file {path}: the first line (the password) is empty")
    return lines[0]


def make_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """Build and check the TLS context up front, so a bad file is reported at start-up by name."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except FileNotFoundError:
        raise MqttSetupError(f"mqtt.tls.ca {tls.ca}: file not found") from None
    except ssl.SSLError as e:
        raise MqttSetupError(f"mqtt.tls.ca {tls.ca}: not a valid PEM CA certificate ({e.reason or e})") from None
    if tls.cert is not None:
        try:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        except FileNotFoundError:
            missing = tls.cert if not Path(tls.cert).exists() else tls.key
            raise MqttSetupError(f"mqtt.tls: file not found: {missing}") from None
        except ssl.SSLError as e:
            raise MqttSetupError(
                f"mqtt.tls.cert {tls.cert} / tls.key {tls.key}: unusable ({e.reason or e}; "
                "is the key the one of this certificate, unencrypted PEM?)") from None
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


def describe_connect_error(exc: BaseException, host: str, port: int, tls: TlsConfig | None) -> str:
    """Turn a connect exception into one line a technician can act on."""
    where = f"MQTT broker {host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{where}: TLS certificate of the broker rejected: {exc.verify_message or exc.reason} "
                f"(check mqtt.tls.ca {tls.ca if tls else None} and the broker host name)")
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or str(exc)).lower()
        if "certificate" in reason or "unknown_ca" in reason or "handshake" in reason:
            return (f"{where}: TLS handshake failed, the broker rejected our client certificate "
                    f"({exc.reason or exc}; check mqtt.tls.cert/key)")
        if "wrong_version" in reason or "record" in reason:
            return f"{where}: TLS failed ({exc.reason or exc}); is this port a TLS listener?"
        return f"{where}: TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (broker down or nothing listening on that port)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve host name ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"{where}: no answer within the connect timeout (network down or firewalled)"
    if isinstance(exc, OSError):
        return f"{where}: network error: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


def describe_connack(reason: object, username: str) -> str:
    """A refused CONNACK in plain words (Mosquitto answers a wrong password with 'not authorised')."""
    text = str(reason)
    low = text.lower()
    who = f"mqtt.username={username!r}, check mqtt.password_file" if username else "no mqtt.username configured"
    if "user name or password" in low or "bad user" in low:
        return f"broker refused the login: bad user name or password ({who})"
    if "not authori" in low:
        hint = "wrong user name or password, or this user may not connect" if username else \
            "the broker requires a user name and password or a client certificate"
        return f"broker refused the login: not authorised ({hint}; {who})"
    if "protocol" in low:
        return f"broker refused the connection: {text} (set mqtt.protocol to auto or 3.1.1)"
    return f"broker refused the connection: {text}"


def publish_packet_size(topic: str, payload_len: int, v5: bool) -> int:
    """Bytes of the QoS 1 PUBLISH packet paho builds for this topic and payload (no properties)."""
    remaining = 2 + len(topic.encode("utf-8")) + 2 + payload_len + (1 if v5 else 0)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining


def _where(exc: BaseException) -> str:
    """Exception type and innermost code location only: messages from other code might carry plate text."""
    tb = traceback.extract_tb(exc.__traceback__)
    loc = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name}" if tb else ""
    return f"{type(exc).__name__}{loc}"


@dataclass
class PublisherStats:
    published: int = 0  # PUBLISH packets sent for hits (including re-sends)
    acked: int = 0  # hits the broker acknowledged and the outbox deleted
    refused: int = 0  # hits the broker answered with an error reason code (kept, retried later)
    connects: int = 0
    disconnects: int = 0
    heartbeats: int = 0
    too_large: int = 0  # hits not sent: larger than the broker's Maximum Packet Size (kept in the outbox)
    evidence_omitted: int = 0  # hits sent without their evidence images because the broker would not take them whole
    held_back: int = 0  # times a hit was held back: the connection kept dropping while it was in flight
    protocol: str = ""


@dataclass
class _Inflight:
    hit_id: str
    sent: float  # monotonic
    attempts: int = 0  # refusals so far (from the outbox)
    order: int = 0  # send order (a counter of this publisher): the broker sees the hits in this order
    evidence: bool = False  # what was sent carries evidence that could still be left out


@dataclass
class _State:
    connected: bool = False
    last_error: str = ""
    inflight: dict[int, _Inflight] = field(default_factory=dict)  # mid -> hit


class Publisher:
    """Publishes the outbox to MQTT (QoS 1) and keeps the retained status topic; see module doc."""

    def __init__(self, mqtt_cfg: MqttConfig, outbox: Outbox, device_id: str,
                 status_provider: Callable[[], dict] | None = None, *, ack_timeout_s: float = 60.0):
        self.cfg = mqtt_cfg
        self.outbox = outbox
        self.device_id = device_id
        self.status_provider = status_provider
        self.ack_timeout_s = ack_timeout_s
        self.stats = PublisherStats()
        self.status_topic = mqtt_cfg.status_topic.format(device=device_id)
        self._password = read_password(mqtt_cfg.password_file) if mqtt_cfg.password_file else None
        self._ssl = make_ssl_context(mqtt_cfg.tls) if mqtt_cfg.tls is not None else None
        self._state = _State()
        self._stop = threading.Event()  # ends the network thread (after a clean DISCONNECT)
        self._worker_stop = threading.Event()  # ends the worker thread
        self._wake = threading.Event()
        # ("ack", client generation, mid, reason) from paho; ("down", generation, 0, None) from the network thread
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._generation = 0
        self._client: mqtt.Client | None = None
        self._client_lock = threading.Lock()
        self._announce = False
        self._use_v5 = mqtt_cfg.protocol in ("5", "auto")
        self._threads: list[threading.Thread] = []
        self._sock_errors: list[str] = []  # paho's error log lines of the current attempt
        self._connack = None
        self._max_packet: int | None = None  # the broker's Maximum Packet Size (MQTT 5 CONNACK), None = not given
        # The worker's own bookkeeping (only the worker thread touches these):
        self._inflight_gen = 0  # the client generation the in-flight hits were published with
        # Send order, not outbox seq: with priorities an urgent hit with a higher seq is sent before older ones.
        self._sent = 0  # publishes so far; _Inflight.order
        self._acked_order = 0  # highest send order acknowledged on that connection
        self._suspect: tuple[str, int] = ("", 0)  # (hit id, drops in a row while it was the first sent in flight)
        self._probe = False  # one hit in flight at a time, until one is acknowledged (after a suspicious drop)
        self._too_large_logged: set[str] = set()
        self._omitted_logged: set[str] = set()  # hits whose evidence_omitted was logged (once per hit)
        # hit id -> evidence_omitted note: hits that kept dropping the connection, sent without evidence from now on
        self._slim: dict[str, str] = {}
        # Nothing is published after 'offline': stop() sets _closing under this lock, publishers check it.
        self._pub_lock = threading.Lock()
        self._closing = False
        self._offline_on: mqtt.Client | None = None  # the client stop() queued 'offline' on

    # -- public ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._state.connected

    @property
    def last_error(self) -> str:
        """The latest connection problem in plain words ('' once connected)."""
        return self._state.last_error

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("publisher already started")
        self.outbox.on_put(self.notify)  # publish as soon as a hit is stored, no polling delay
        self._threads = [threading.Thread(target=self._network_main, name="mqtt-net", daemon=True),
                         threading.Thread(target=self._worker_main, name="mqtt-pub", daemon=True)]
        for t in self._threads:
            t.start()

    def notify(self) -> None:
        """Wake the publisher: a new hit is in the outbox (called by Outbox.put; it also polls every 0.25 s)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Wait up to timeout for hits in flight, end the worker, publish 'offline', disconnect cleanly.

        The order matters: the clean DISCONNECT suppresses the will, so the retained status must
        already say 'offline', and no heartbeat the worker was still building may follow it.
        """
        deadline = time.monotonic() + timeout
        while self.connected and self._state.inflight and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self.outbox.off_put(self.notify)
        self._worker_stop.set()
        self._wake.set()
        for t in self._threads:
            if t.name == "mqtt-pub":
                t.join(max(0.1, deadline - time.monotonic()) + 2.0)
        client = self._client
        info = None
        with self._pub_lock:  # a worker still stuck past its join cannot publish after this
            self._closing = True
            if client is not None and self.connected:
                try:  # publish() only queues: the network thread writes it, then the DISCONNECT
                    info = client.publish(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        self._offline_on = client
                except (RuntimeError, ValueError):
                    pass
        if info is not None:
            try:
                info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError):
                pass
        self._stop.set()  # the network thread sends DISCONNECT itself: it is the only one that writes
        self._wake.set()
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()) + 2.0)
        self._threads = []

    # -- connection -----------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        proto = mqtt.MQTTv5 if self._use_v5 else mqtt.MQTTv311
        cid = self.cfg.client_id or f"anpr-edge-{self.device_id}"
        kw = {} if self._use_v5 else {"clean_session": True}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                        reconnect_on_failure=False, **kw)
        c.max_inflight_messages_set(self.cfg.max_inflight)
        c.max_queued_messages_set(0)
        c.connect_timeout = self.cfg.connect_timeout_s
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self._password)
        if self._ssl is not None:
            c.tls_set_context(self._ssl)
            if self.cfg.tls is not None and self.cfg.tls.insecure:
                c.tls_insecure_set(True)
        c.will_set(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
        gen = self._generation = self._generation + 1
        c.on_connect = lambda cl, ud, flags, rc, props: self._on_connect(gen, rc, props)
        c.on_disconnect = lambda cl, ud, flags, rc, props: self._on_disconnect(gen, rc)
        c.on_publish = lambda cl, ud, mid, rc, props: self._on_publish(gen, mid, rc)
        c.on_log = self._on_log
        # Only the network thread may write to the socket. Without an event loop registered, paho's
        # publish() writes from the calling thread too, racing the network thread's own writes:
        # packets left out of order, and a partial write could be spliced into another packet.
        # With this hook set, publish() only queues and wakes the network thread's select().
        c.on_socket_register_write = lambda client, userdata, sock: None
        self.stats.protocol = "5" if self._use_v5 else "3.1.1"
        return c

    def _on_log(self, client, userdata, level, buf) -> None:
        # paho reports socket failures (e.g. a TLS alert after the handshake) only as log lines.
        if level == mqtt.MQTT_LOG_ERR:
            self._sock_errors.append(buf)

    def _on_connect(self, gen: int, rc, props=None) -> None:
        """CONNACK (network thread, inside client.loop()). The link is marked ready in _link_up, after that loop() call."""
        if gen != self._generation:
            return
        if rc.is_failure:
            self._state.last_error = describe_connack(rc, self.cfg.username)
            log.error("%s", self._state.last_error)
        else:
            size = getattr(props, "MaximumPacketSize", None) if props is not None else None
            self._max_packet = int(size) if size else None
        self._connack = rc

    def _link_up(self) -> None:
        """The CONNACK was handled: let the worker publish (network thread, outside paho's callbacks)."""
        self._state.connected = True
        self._state.last_error = ""
        self.stats.connects += 1
        self._announce = True
        limit = f", max packet {self._max_packet} bytes" if self._max_packet else ""
        log.info("connected to MQTT broker %s:%d (MQTT %s%s)", self.cfg.host, self.cfg.effective_port,
                 self.stats.protocol, limit)
        self._wake.set()

    def _on_disconnect(self, gen: int, rc) -> None:
        if gen != self._generation:
            return
        if self._state.connected:
            self.stats.disconnects += 1
            if not self._stop.is_set():
                log.warning("disconnected from MQTT broker (%s); hits stay in the outbox", rc)
        self._state.connected = False

    def _on_publish(self, gen: int, mid: int, rc) -> None:
        self._events.put(("ack", gen, mid, rc))
        self._wake.set()

    def _sleep(self, seconds: float) -> bool:
        """Interruptible wait; True when stopping."""
        return self._stop.wait(seconds)

    def _network_main(self) -> None:
        backoff = self.cfg.reconnect_min_s
        host, port = self.cfg.host, self.cfg.effective_port
        while not self._stop.is_set():
            with self._client_lock:
                if self._client is None:
                    self._client = self._new_client()
                client = self._client
            self._connack = None
            self._max_packet = None
            self._sock_errors = []
            try:
                client.connect(host, port, self.cfg.keepalive_s)
            except Exception as e:  # noqa: BLE001 - OSError/SSLError expected; anything else must not end the thread
                self._fail(describe_connect_error(e, host, port, self.cfg.tls))
                if self._sleep(backoff * random.uniform(0.5, 1.0)):  # jitter: a fleet must not reconnect in step
                    break
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            started = time.monotonic()
            up_since = 0.0
            gen = self._generation
            rc = mqtt.MQTT_ERR_SUCCESS
            while not self._stop.is_set():
                try:
                    rc = client.loop(timeout=0.2)
                except Exception as e:  # noqa: BLE001 - treat like a lost connection, reconnect
                    log.warning("MQTT network loop error %s; reconnecting", _where(e))
                    break
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self._connack is None and time.monotonic() - started > self.cfg.connect_timeout_s:
                    self._fail(f"MQTT broker {host}:{port}: no CONNACK within {self.cfg.connect_timeout_s:g} s")
                    break
                if self._connack is not None and self._connack.is_failure:
                    break
                if not up_since and self._connack is not None:
                    # Only now, after the loop() call that handled the CONNACK returned: the worker must
                    # not publish from inside paho's CONNACK handling (a reused client re-sends its
                    # unacknowledged messages there, after on_connect; new hits would overtake them).
                    up_since = time.monotonic()
                    self._link_up()
            self._state.connected = False
            if self._stop.is_set():
                self._say_goodbye(client, bool(up_since))
                break
            if up_since:
                self._events.put(("down", gen, 0, None))
                self._wake.set()
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
            with self._client_lock:
                # A fresh client for the next connection: paho would otherwise re-send its unacknowledged
                # messages by itself, the oldest first, including a hit the broker keeps dropping us for.
                # The worker re-sends from the outbox instead (in order, without held-back hits).
                if self._client is client:
                    self._client = None
            if self._connack is None:
                errs = self._sock_errors
                err = next((e for e in errs if "certificate" in e.lower() or "alert" in e.lower()),
                           errs[0] if errs else "")
                msg = f"MQTT broker {host}:{port}: connection closed before CONNACK"
                detail = err.split(":", 1)[-1].strip()
                low = err.lower()
                if self.cfg.tls is not None and self.cfg.tls.cert is None and (
                        "certificate required" in low or "eof occurred in violation of protocol" in low):
                    # TLS 1.3: the broker's refusal arrives as an alert or as a bare close, depending on timing
                    log.debug("TLS closed by the broker: %s", detail)
                    msg = (f"MQTT broker {host}:{port}: TLS failed, the broker requires a client certificate "
                           "(set mqtt.tls.cert and mqtt.tls.key)")
                elif self.cfg.tls is not None and ("certificate" in low or "alert" in low or "eof occurred" in low):
                    log.debug("TLS closed by the broker: %s", detail)
                    msg = (f"MQTT broker {host}:{port}: TLS failed, the broker rejected our client certificate "
                           "(check mqtt.tls.cert/key: signed by a CA the broker trusts, not expired)")
                elif err and self.cfg.tls is None and "reset" in err.lower():
                    msg += f" ({err}; if this is a TLS port, configure mqtt.tls)"
                elif err:
                    msg += f" ({err})"
                if self.cfg.protocol == "auto" and not err:
                    self._use_v5 = not self._use_v5  # maybe an MQTT 3.1.1-only broker: alternate versions
                    self._client = None
                    log.debug("next attempt with MQTT %s", "5" if self._use_v5 else "3.1.1")
                self._fail(msg)
            elif self._connack.is_failure and self.cfg.protocol == "auto" and "protocol" in str(self._connack).lower():
                self._use_v5 = not self._use_v5
                self._client = None
            if up_since and time.monotonic() - up_since >= _STABLE_LINK_S:
                backoff = self.cfg.reconnect_min_s  # a link that was up a while: reconnect quickly
            if self._sleep(backoff * random.uniform(0.5, 1.0)):  # jitter: a fleet must not reconnect in step
                break
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    def _say_goodbye(self, client: mqtt.Client, up: bool) -> None:
        """A clean DISCONNECT, so the broker drops the will instead of publishing it.

        When the link came up only while stop() was running, stop() could not say 'offline': do it
        here, ahead of the DISCONNECT on the same connection.
        """
        try:
            if up and self._offline_on is not client:
                client.publish(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
            client.disconnect()
            client.loop_write()
        except Exception:  # noqa: BLE001 - the socket may already be gone; the will then says offline
            pass

    def _fail(self, message: str) -> None:
        if message != self._state.last_error:
            log.error("%s; retrying with backoff, hits stay in the outbox", message)
        self._state.last_error = message

    # -- publishing -----------------------------------------------------------------------------

    def _worker_main(self) -> None:
        next_beat = 0.0
        while not self._worker_stop.is_set() and not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            if self._worker_stop.is_set():
                break
            try:
                self._drain_events()
                client = self._client
                if client is None or not self._state.connected:
                    continue
                gen = self._generation
                if self._inflight_gen != gen:  # a new connection (and client): re-send from the outbox
                    self._state.inflight.clear()
                    self._inflight_gen = gen
                    self._acked_order = 0
                now = time.monotonic()
                if self._announce or now >= next_beat:
                    self._announce = False
                    self._heartbeat(client)
                    next_beat = now + self.cfg.heartbeat_s
                self._publish_pending(client)
            except Exception as e:  # noqa: BLE001 - keep publishing; the outbox still holds every hit
                log.error("publisher worker error %s (hits stay in the outbox)", _where(e))
                self._sleep(1.0)

    def _drain_events(self) -> None:
        done: list[str] = []
        while True:
            try:
                kind, gen, mid, rc = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "down":
                if done:  # acks that came before the drop count first
                    self.stats.acked += self.outbox.ack(*done)
                    done = []
                self._link_dropped(gen)
                continue
            if kind != "ack" or gen != self._inflight_gen:
                continue
            item = self._state.inflight.pop(mid, None)
            if item is None:
                continue
            if getattr(rc, "is_failure", False):
                self.stats.refused += 1
                delay = min(300.0, 5.0 * 2 ** min(item.attempts, 6))  # 5 s doubling to 5 min
                log.error("broker refused hit %s (%s); kept in the outbox, retry in %.0f s", item.hit_id, rc, delay)
                self.outbox.defer(item.hit_id, delay)
            else:
                done.append(item.hit_id)
                self._slim.pop(item.hit_id, None)
                self._omitted_logged.discard(item.hit_id)
                self._acked_order = max(self._acked_order, item.order)
                self._probe = False
                if item.hit_id == self._suspect[0]:
                    self._suspect = ("", 0)
        if done:
            self.stats.acked += self.outbox.ack(*done)

    def _link_dropped(self, gen: int) -> None:
        """The connection of generation gen was lost: is one hit the likely cause, again and again?

        Some brokers just drop the connection on a message they will not take (too large, or refused
        by a plugin) instead of answering with a reason code. Then the same hit would be sent first
        after every reconnect, forever, and nothing after it would get through.

        The first sent of the hits in flight ("oldest in flight": the broker reads them in send order,
        which follows the outbox's priority order, not its seq) is only a suspect: the broker may have taken it and lost our PUBACK
        when it dropped us for a later one. So after such a drop the next connection sends one hit at
        a time (probe) until one is acknowledged. A hit that has dropped the connection at least twice
        while it was the only hit in flight is then sent without its evidence images, if it has any
        (the likely cause is a size limit); only if that drops it too is it held back.
        """
        if gen != self._inflight_gen or not self._state.inflight:
            return  # nothing was published on that connection: it says nothing about any hit
        oldest = min(self._state.inflight.values(), key=lambda it: it.order)
        if self._acked_order > oldest.order:
            self._suspect = ("", 0)  # the broker took a later hit on that connection: not this one's fault
            return
        drops = self._suspect[1] + 1 if self._suspect[0] == oldest.hit_id else 1
        self._suspect = (oldest.hit_id, drops)
        self._probe = True
        if drops < DROPS_BEFORE_HOLDING_BACK:
            return
        self._suspect = ("", 0)
        if oldest.evidence and oldest.hit_id not in self._slim:
            # Most likely too large for a limit the broker did not announce (MQTT 3.1.1): holding the hit
            # back would only repeat this later. Without its images the operator still learns of it.
            if len(self._slim) >= 10_000:
                self._slim.clear()
            note = f"broker closed the connection {drops} times in a row while it was sent"
            self._slim[oldest.hit_id] = note
            self.outbox.omit_evidence(oldest.hit_id, note)  # also after a restart, without new drops
            log.warning("the connection dropped %d times in a row while hit %s was the oldest in flight; "
                        "sending it once more without its evidence images", drops, oldest.hit_id)
            self._state.inflight.clear()  # that connection is gone; the next one re-sends from the outbox
            return
        self.stats.held_back += 1
        delay = min(TOO_LARGE_RETRY_S, 60.0 * 2 ** min(oldest.attempts, 6))  # 1 min doubling to 1 h
        log.error("the connection dropped %d times in a row while hit %s was the oldest in flight; "
                  "holding it back for %.0f s so later hits get through (it stays in the outbox)",
                  drops, oldest.hit_id, delay)
        self.outbox.defer(oldest.hit_id, delay)
        self._state.inflight.clear()  # that connection is gone; the next one re-sends from the outbox

    def _publish_pending(self, client: mqtt.Client) -> None:
        now = time.monotonic()
        stale = [mid for mid, it in self._state.inflight.items() if now - it.sent > self.ack_timeout_s]
        for mid in stale:  # no PUBACK for too long while connected: send again (dedup by hit id)
            self._state.inflight.pop(mid, None)
        window = 1 if self._probe else self.cfg.max_inflight
        free = window - len(self._state.inflight)
        if free <= 0:
            return
        busy = {it.hit_id for it in self._state.inflight.values()}
        limit = self._max_packet
        for item in self.outbox.pending(limit=free + len(busy)):
            if item.hit_id in busy:
                continue
            payload, note = self._payload_for(item, limit)
            if payload is None:
                self._too_large(item.hit_id, limit or 0)
                continue
            try:
                info = client.publish(item.topic, payload, qos=1, retain=False)
            except ValueError as e:
                log.error("hit %s cannot be published on its topic (%s); held back", item.hit_id, e)
                self.outbox.defer(item.hit_id, self.cfg.reconnect_max_s)
                continue
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                log.warning("publish of hit %s not queued (rc %s)", item.hit_id, info.rc)
                break
            self._sent += 1
            self._state.inflight[info.mid] = _Inflight(item.hit_id, now, item.attempts, self._sent,
                                                       not note and b'"evidence":' in payload)
            self.stats.published += 1
            if note:
                self._omitted(item, len(payload), note)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                break  # the link is gone; the next connection re-sends it from the outbox

    def _payload_for(self, item: OutboxItem, limit: int | None) -> tuple[bytes | None, str]:
        """What to send for item, and the evidence_omitted note if its evidence was left out.

        The stored message as it is, unless the broker cannot take it whole (over its Maximum Packet
        Size, or it kept dropping the connection for it): then without the evidence, same hit_id, as
        the hit matters more than its pictures. The outbox keeps the full message; the PUBACK of the
        smaller one deletes it. (None, "") when not even that fits the broker's limit.
        """
        payload, note = item.payload, self._slim.get(item.hit_id) or item.evidence_omitted
        if note:
            slim = without_evidence(item.payload, note)
            payload, note = (slim, note) if slim is not None else (item.payload, "")
        if limit and publish_packet_size(item.topic, len(payload), self._use_v5) > limit:
            note = f"broker maximum packet size {limit} bytes"
            slim = without_evidence(item.payload, note)
            if slim is None or publish_packet_size(item.topic, len(slim), self._use_v5) > limit:
                return None, ""
            payload = slim
        return payload, note

    def _omitted(self, item: OutboxItem, size: int, note: str) -> None:
        """Log (once per hit, by hit id and sizes only) that a hit went out without its evidence."""
        if item.hit_id in self._omitted_logged:
            return
        if len(self._omitted_logged) >= 10_000:
            self._omitted_logged.clear()
        self._omitted_logged.add(item.hit_id)
        self.stats.evidence_omitted += 1
        log.warning("hit %s (%d bytes) sent without its evidence images (%d bytes): %s",
                    item.hit_id, len(item.payload), size, note)

    def _too_large(self, hit_id: str, limit: int) -> None:
        """A hit the broker would drop the connection for even without evidence: keep it, let later hits pass."""
        # paho 2.2 does not enforce the broker's Maximum Packet Size; sending it would only get the
        # connection closed, and the hit would come first again after every reconnect.
        if hit_id not in self._too_large_logged:
            if len(self._too_large_logged) >= 10_000:
                self._too_large_logged.clear()
            self._too_large_logged.add(hit_id)
            self.stats.too_large += 1
            log.error("hit %s is larger than the broker's maximum packet size (%d bytes), even without evidence "
                      "images; not sent, kept in the outbox and retried every %.0f s (raise the broker's "
                      "max_packet_size)",
                      hit_id, limit, TOO_LARGE_RETRY_S)
        self.outbox.defer(hit_id, TOO_LARGE_RETRY_S)

    # -- status ---------------------------------------------------------------------------------

    def _status_payload(self, state: str, extra: dict | None = None) -> bytes:
        body = {"device": self.device_id, "state": state,
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if extra:
            body.update(extra)
        return json.dumps(body, separators=(",", ":")).encode()

    def status_snapshot(self) -> dict:
        """The publisher's own part of the status (counts only, no plate content).

        The hits_* counts let an operator see from the heartbeat alone that hits arrive without
        their pictures or are stuck at the unit, not only from the unit's log.
        """
        return {"mqtt_connected": self.connected, "mqtt_error": self.last_error,
                "outbox_depth": self.outbox.depth(), "outbox_alarm": self.outbox.alarm,
                "outbox_rejected": self.outbox.rejected, "outbox_oldest_s": round(self.outbox.oldest_age_s(), 1),
                "hits_acked": self.stats.acked, "hits_evidence_omitted": self.stats.evidence_omitted,
                "hits_too_large": self.stats.too_large, "hits_held_back": self.stats.held_back}

    def _heartbeat(self, client: mqtt.Client) -> None:
        from edge.status import sanitize_status  # local import: status depends on nothing of ours

        try:
            extra = dict(self.status_provider() if self.status_provider else {})
        except Exception as e:  # noqa: BLE001 - a status problem must not stop hits
            log.error("status provider failed %s; heartbeat sent without its fields", _where(e))
            extra = {}
        extra.update(self.status_snapshot())
        payload = self._status_payload("online", sanitize_status(extra))
        with self._pub_lock:
            if self._closing:  # stop() is publishing 'offline': a late heartbeat must not overwrite it
                return
            client.publish(self.status_topic, payload, qos=1, retain=True)
        self.stats.heartbeats += 1
