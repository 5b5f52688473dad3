"""List sync over MQTT: retained snapshots and QoS 1 deltas on a persistent session.

Topics under the configured prefix (default anpr/lists/<device>):
    <prefix>/snapshot   the latest full snapshot, retained (central republishes it after every delta)
    <prefix>/delta      each delta, QoS 1, not retained; the broker queues them while the unit is offline
There is no request topic: on a sequence gap the unit subscribes to <prefix>/snapshot again, and the
broker redelivers the retained latest snapshot, so no central server has to answer. The snapshot
subscription is dropped once a snapshot is applied, so later republished snapshots do not cost
bandwidth. Deltas that arrived during a gap are kept (a few) and retried after the snapshot.
When many delta changes pile up beside the sorted arrays (COMPACT_AT), the unit fetches the
retained snapshot of the same (version, seq) once, which folds them into one sorted array.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.lists.config import ListsConfig
from edge.lists.store import ApplyResult, ListStore
from edge.publisher import MqttConfig, describe_connect_error, make_ssl_context, read_password

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # deltas are kept by the broker for a unit offline up to a week
MAX_PENDING_DELTAS = 64
COMPACT_AT = 50_000  # delta changes held beside the arrays before the retained snapshot is fetched to fold them in
# Largest message taken from the broker: a 10-million-entry snapshot is about 160 MB. Anything
# bigger is dropped before it is queued, so a flood of huge messages cannot pile up in the
# 256-slot queue (or in the pending deltas) and exhaust the unit's memory.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_STOP = ("", b"")


def sync_topics(prefix: str) -> tuple[str, str]:
    """(snapshot topic, delta topic) under a prefix."""
    prefix = prefix.rstrip("/")
    return f"{prefix}/snapshot", f"{prefix}/delta"


@dataclass
class SyncStats:
    connected: bool = False
    received: int = 0
    applied: int = 0
    rejected: int = 0
    snapshot_requests: int = 0
    last_error: str = ""


class ListSync:
    """Own paho client + one worker thread that applies blobs in arrival order."""

    def __init__(self, store: ListStore, mqtt_cfg: MqttConfig, lists_cfg: ListsConfig):
        self.store = store
        self.mqtt_cfg = mqtt_cfg
        self.lists_cfg = lists_cfg
        self.snapshot_topic, self.delta_topic = sync_topics(lists_cfg.topic_prefix())
        self.stats = SyncStats()
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=256)
        self._pending: list[bytes] = []
        self._want_snapshot = True
        self.snapshot_subscribed = False  # True from SUBSCRIBE until the broker confirms UNSUBSCRIBE
        self._stop = threading.Event()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._password = read_password(mqtt_cfg.password_file) if mqtt_cfg.password_file else None
        self._ssl: ssl.SSLContext | None = make_ssl_context(mqtt_cfg.tls) if mqtt_cfg.tls is not None else None

    # --- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        c = self._client = self._new_client()
        self._worker = threading.Thread(target=self._work, name="list-sync", daemon=True)
        self._worker.start()
        kw = {}
        if c.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kw = {"clean_start": False, "properties": props}
        c.connect_async(self.mqtt_cfg.host, self.mqtt_cfg.effective_port, self.mqtt_cfg.keepalive_s, **kw)
        c.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass
        if self._worker is not None:
            self._worker.join(timeout)

    def request_snapshot(self) -> None:
        """(Re)subscribe to the snapshot topic: the broker sends the retained latest snapshot."""
        if self._want_snapshot and self.snapshot_subscribed:
            # Already subscribed and waiting: a new snapshot reaches us live. Subscribing again
            # would only make the broker resend the same retained snapshot (up to ~160 MB) for
            # every gap delta that arrives while we wait.
            return
        self._want_snapshot = True
        self.stats.snapshot_requests += 1
        if self._client is not None and self.stats.connected:
            self.snapshot_subscribed = True
            self._client.subscribe(self.snapshot_topic, qos=1)

    # --- paho callbacks (network thread) ----------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        cfg = self.mqtt_cfg
        cid = (cfg.client_id or f"anpr-edge-{self.lists_cfg.device_id}") + "-lists"
        if cfg.protocol == "3.1.1":
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=False)
        else:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        if cfg.username:
            c.username_pw_set(cfg.username, self._password)
        if self._ssl is not None:
            c.tls_set_context(self._ssl)
            if cfg.tls is not None and cfg.tls.insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_unsubscribe = self._on_unsubscribe
        return c

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.stats.last_error = f"list sync: broker refused the connection: {reason}"
            log.error("%s", self.stats.last_error)
            return
        self.stats.connected = True
        self.stats.last_error = ""
        client.subscribe(self.delta_topic, qos=1)
        if not getattr(flags, "session_present", False):
            self._want_snapshot = True  # a new session: deltas may have been missed while it did not exist
        if self._want_snapshot or self.store.index is None:
            self.snapshot_subscribed = True
            client.subscribe(self.snapshot_topic, qos=1)
        log.info("list sync connected; topics %s, %s", self.delta_topic, self.snapshot_topic)

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self.stats.connected and not self._stop.is_set():
            log.warning("list sync disconnected (%s); reconnecting", reason)
        self.stats.connected = False

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if not self._want_snapshot:
            self.snapshot_subscribed = False

    def _on_message(self, client, userdata, msg) -> None:
        self.stats.received += 1
        if len(msg.payload) > MAX_MESSAGE_BYTES:
            self.stats.rejected += 1
            self.stats.last_error = (f"list sync: dropped a {len(msg.payload)} byte message on {msg.topic}: "
                                     f"larger than the {MAX_MESSAGE_BYTES} byte limit")
            log.error("%s", self.stats.last_error)
            return
        try:
            self._queue.put(( msg.topic, bytes(msg.payload)), timeout=5)
        except queue.Full:
            log.error("list sync queue full; dropped a message on %s", msg.topic)

    # --- worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        next_expiry = 0.0
        while True:
            try:
                topic, blob = self._queue.get(timeout=1.0)
            except queue.Empty:
                topic, blob = None, b""
            if (topic, blob) == _STOP or self._stop.is_set():
                return
            if time.monotonic() >= next_expiry:
                self.store.check_expiry(datetime.now(timezone.utc))
                next_expiry = time.monotonic() + self.lists_cfg.expiry_check_s
            if topic is None:
                continue
            try:
                self._handle(topic, blob)
            except Exception as e:
                # Nothing a message does may end this thread: a dead worker stops all list updates
                # and, once the queue is full, blocks paho's network thread in _on_message. The type
                # only: the text of an unexpected error could quote decrypted content.
                self.stats.rejected += 1
                self.stats.last_error = f"list sync: message on {topic} failed: {type(e).__name__}"
                log.error("%s; keeping version %d seq %d", self.stats.last_error, self.store.version, self.store.seq)

    def _handle(self, topic: str, blob: bytes) -> None:
        if topic == self.snapshot_topic:
            self._on_snapshot(self._apply(blob))
        elif topic == self.delta_topic:
            r = self._apply(blob)
            index = self.store.index
            if r.status == "applied" and index is not None and index.overlay_size >= COMPACT_AT:
                log.info("list delta overlay has %d changes; fetching the snapshot to fold them in",
                         index.overlay_size)
                self.request_snapshot()
            if r.needs_snapshot:
                self._pending = (self._pending + [blob])[-MAX_PENDING_DELTAS:]
                log.warning("list delta gap (%s); requesting the retained snapshot", r.message)
                self.request_snapshot()

    def _apply(self, blob: bytes) -> ApplyResult:
        r = self.store.apply(blob)
        if r.status == "applied":
            self.stats.applied += 1
        elif r.status in ("rejected",):
            self.stats.rejected += 1
        return r

    def _on_snapshot(self, r: ApplyResult) -> None:
        if r.status == "gap" or (r.status == "rejected" and r.reason != "rollback"):
            return  # keep listening: a good snapshot may still come
        # applied, duplicate or older than ours: we are at or past the retained one
        pending, self._pending = self._pending, []
        progress = True
        while pending and progress:  # deltas held during the gap, in whatever order they came
            progress = False
            for blob in list(pending):
                res = self._apply(blob)
                if not res.needs_snapshot:
                    pending.remove(blob)
                    progress = progress or res.status == "applied"
        if pending:
            # Deltas still ahead of this snapshot: the broker's retained copy is behind them (the
            # delta is published before the snapshot that includes it). Stay subscribed so the newer
            # snapshot arrives live. The old code unsubscribed and subscribed again here, and the
            # broker answered with the same stale retained snapshot: a loop downloading the full
            # snapshot over and over for as long as the retained one stayed behind.
            self._pending = pending
            self.request_snapshot()  # a no-op while subscribed and waiting (see there)
            log.warning("%d list delta(s) still ahead of the snapshot (version %d seq %d); waiting for a newer one",
                        len(pending), self.store.version, self.store.seq)
            return
        self._want_snapshot = False
        if self._client is not None:
            self._client.unsubscribe(self.snapshot_topic)


def publish_blobs(items: list[tuple[str, bytes, bool]], mqtt_cfg: MqttConfig, client_id: str = "",
                  timeout_s: float = 30.0) -> None:
    """Publish (topic, payload, retain) items with QoS 1 and wait for every PUBACK (central side)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"anpr-lists-central-{int(time.time())}",
                    protocol=mqtt.MQTTv5 if mqtt_cfg.protocol != "3.1.1" else mqtt.MQTTv311)
    if mqtt_cfg.username:
        c.username_pw_set(mqtt_cfg.username, read_password(mqtt_cfg.password_file) if mqtt_cfg.password_file else None)
    if mqtt_cfg.tls is not None:
        c.tls_set_context(make_ssl_context(mqtt_cfg.tls))
    try:
        c.connect(mqtt_cfg.host, mqtt_cfg.effective_port, mqtt_cfg.keepalive_s)
    except OSError as e:  # "[Errno 111] Connection refused" alone did not say which broker
        raise ConnectionError(describe_connect_error(e, mqtt_cfg.host, mqtt_cfg.effective_port, mqtt_cfg.tls)) from e
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1, retain=r) for t, p, r in items]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"broker {mqtt_cfg.host}:{mqtt_cfg.effective_port} did not acknowledge in {timeout_s:g} s")
    finally:
        c.disconnect()
        c.loop_stop()
