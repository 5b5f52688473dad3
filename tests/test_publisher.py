"""Publisher against a real Mosquitto: outages, restarts, cut links and SIGKILL lose no hit.

Every scenario ends with: each hit id put into the outbox arrived at a subscriber, and the outbox
is empty (deleted only after PUBACK). The subscriber keeps a persistent session on a broker with
persistence on, so what the broker acknowledged is delivered even across a broker restart.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.hits import new_hit_id
from edge.outbox import Outbox
from edge.publisher import MqttConfig, Publisher

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "anpr/politie/unit-1/hits"


def wait_for(cond, timeout=15.0, step=0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Collector:
    """A subscriber with a persistent session that records every hit id it receives."""

    def __init__(self, port: int, topic: str = "anpr/#", client_id: str = "collector"):
        self.ids: list[str] = []
        self.bodies: dict[str, dict] = {}  # hit id -> the last message received with it
        self.status: list[dict] = []
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=False)
        self.c.reconnect_delay_set(0.05, 0.3)
        self.subscribed = threading.Event()
        self.c.on_connect = lambda cl, ud, f, rc, p: cl.subscribe(topic, 1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(5), "collector could not subscribe"

    def _on_message(self, cl, ud, msg):
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic.startswith("anpr/status/"):
                self.status.append(body)
            else:
                self.ids.append(body["hit_id"])
                self.bodies[body["hit_id"]] = body

    def unique(self) -> set[str]:
        with self._lock:
            return set(self.ids)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def pump(src: socket.socket, dst: socket.socket, eat=lambda: False) -> None:
    """Copy bytes one way until either side closes (or drop them while eat() is true)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if not eat():
                dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.close()
        except OSError:
            pass


class Proxy:
    """A tiny TCP proxy: cut() drops every connection and refuses new ones; blackhole() silently eats bytes."""

    def __init__(self, target_port: int, listening: bool = True):
        self.target = target_port
        self.port = 0
        self.up = True
        self.eat = False
        self.conns: list[socket.socket] = []
        self._closed = False
        self.srv: socket.socket | None = None
        self.listen()
        if not listening:
            self.refuse()

    def listen(self):
        """(Re)open the listening port: connections are accepted and forwarded again."""
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", self.port))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.srv,), daemon=True).start()

    def refuse(self):
        """Close the listening port: new connections get 'connection refused'."""
        try:
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; close() alone would not
        except OSError:
            pass
        self.srv.close()

    def _accept(self, srv):
        while not self._closed:
            try:
                a, _ = srv.accept()
            except OSError:
                return
            if not self.up:
                a.close()
                continue
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                a.close()
                continue
            self.conns += [a, b]
            threading.Thread(target=pump, args=(a, b, lambda: self.eat), daemon=True).start()
            threading.Thread(target=pump, args=(b, a, lambda: self.eat), daemon=True).start()

    def cut(self):
        self.up = False
        for s in self.conns:  # reset (RST), like a link that died, not a polite close
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv(); close() alone would not
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.conns = []

    def restore(self):
        self.eat = False
        self.up = True

    def close(self):
        self._closed = True
        self.cut()
        self.refuse()


@pytest.fixture
def pbroker(broker):
    """The conftest broker, restarted with persistence so queued QoS 1 messages survive a restart."""
    broker.stop()
    store = broker.workdir / "store"
    store.mkdir()
    store.chmod(0o777)  # "user root" keeps a root-started mosquitto able to write here; 777 covers other users
    broker.extra_conf = f"user root\npersistence true\npersistence_location {store}/\nautosave_interval 1\n"
    broker.start()
    return broker


def cfg_for(port: int, **kw) -> MqttConfig:
    base = dict(host="127.0.0.1", port=port, keepalive_s=2, heartbeat_s=0.5, reconnect_min_s=0.05,
                reconnect_max_s=0.5, connect_timeout_s=3)
    base.update(kw)
    return MqttConfig(**base)


def put_hits(outbox: Outbox, n: int, publisher: Publisher | None = None) -> list[str]:
    ids = []
    for _ in range(n):
        h = new_hit_id()
        assert outbox.put(TOPIC, json.dumps({"hit_id": h, "plate": "XSNB23"}).encode(), h)
        ids.append(h)
        if publisher:
            publisher.notify()
    return ids


def test_publishes_in_order_acks_and_keeps_retained_status_with_lwt(pbroker, tmp_path):
    col = Collector(pbroker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(pbroker.port), ob, "unit-1", lambda: {"fps": 12.5, "camera_state": "streaming"})
    pub.start()
    try:
        ids = put_hits(ob, 30, pub)
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids))
        assert col.ids[:30] == ids  # in order
        assert pub.stats.acked == 30 and pub.connected
        assert wait_for(lambda: any(s.get("outbox_depth") == 0 and s["state"] == "online" for s in col.status))
        beat = [s for s in col.status if s["state"] == "online"][-1]
        assert beat["fps"] == 12.5 and beat["camera_state"] == "streaming"
        assert beat["mqtt_connected"] is True and beat["device"] == "unit-1" and beat["outbox_alarm"] is False
    finally:
        pub.stop()
    assert wait_for(lambda: col.status and col.status[-1]["state"] == "offline")
    col.close()
    # A new subscriber gets the retained status.
    late = Collector(pbroker.port, "anpr/status/#", "late")
    assert wait_for(lambda: late.status and late.status[-1]["state"] == "offline")
    late.close()


def test_last_will_marks_unit_offline_when_link_dies(pbroker, tmp_path):
    proxy = Proxy(pbroker.port)
    col = Collector(pbroker.port, "anpr/status/#")
    pub = Publisher(cfg_for(proxy.port), Outbox(tmp_path / "o.sqlite"), "unit-1")
    pub.start()
    try:
        assert wait_for(lambda: col.status and col.status[-1]["state"] == "online")
        proxy.cut()  # the broker sees the connection drop without DISCONNECT: it sends the will
        assert wait_for(lambda: col.status[-1]["state"] == "offline", timeout=10)
    finally:
        pub.stop(1)
        proxy.close()
        col.close()


def test_broker_down_at_startup_then_up(pbroker, tmp_path):
    col = Collector(pbroker.port)
    pbroker.stop()
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(pbroker.port), ob, "unit-1")
    t0 = time.monotonic()
    pub.start()
    assert time.monotonic() - t0 < 0.5  # never blocks the caller
    try:
        ids = put_hits(ob, 20, pub)
        assert wait_for(lambda: "connection refused" in pub.last_error, timeout=5), pub.last_error
        assert not pub.connected and ob.depth() == 20
        pbroker.start()
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=20), (ob.depth(), len(col.unique()))
        assert pub.last_error == ""
    finally:
        pub.stop()
        col.close()


def test_broker_restarted_mid_stream(pbroker, tmp_path):
    col = Collector(pbroker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(pbroker.port), ob, "unit-1")
    pub.start()
    ids: list[str] = []
    try:
        for round_ in range(3):
            assert wait_for(lambda: pub.connected, timeout=10)
            ids += put_hits(ob, 40, pub)
            time.sleep(0.05)
            pbroker.stop()  # some hits are in flight, some not yet sent
            ids += put_hits(ob, 10, pub)  # accepted while the broker is down
            pbroker.start()
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=30), \
            (ob.depth(), len(set(ids) - col.unique()))
        assert pub.stats.connects >= 4
    finally:
        pub.stop()
        col.close()


def test_network_cut_and_blackhole(pbroker, tmp_path):
    proxy = Proxy(pbroker.port)
    col = Collector(pbroker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(proxy.port), ob, "unit-1")
    pub.start()
    ids: list[str] = []
    try:
        assert wait_for(lambda: pub.connected)
        ids += put_hits(ob, 30, pub)
        proxy.cut()
        ids += put_hits(ob, 30, pub)
        assert wait_for(lambda: not pub.connected, timeout=5)
        time.sleep(0.5)
        proxy.restore()
        assert wait_for(lambda: pub.connected, timeout=10)
        # Black hole: the link stays open but nothing gets through; keep-alive must notice.
        proxy.eat = True
        ids += put_hits(ob, 20, pub)
        assert wait_for(lambda: not pub.connected, timeout=10), "dead link not detected by keep-alive"
        proxy.cut()
        proxy.restore()
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=20), \
            (ob.depth(), len(set(ids) - col.unique()))
    finally:
        pub.stop()
        proxy.close()
        col.close()


CHILD = r"""
import json, sys, time
from edge.hits import new_hit_id
from edge.outbox import Outbox
from edge.publisher import MqttConfig, Publisher
port, db = int(sys.argv[1]), sys.argv[2]
ob = Outbox(db)
pub = Publisher(MqttConfig(host="127.0.0.1", port=port, keepalive_s=60), ob, "unit-1")
pub.start()
while True:
    h = new_hit_id()
    ob.put("anpr/politie/unit-1/hits", json.dumps({"hit_id": h}).encode(), h)
    pub.notify()
    print(h, flush=True)  # accepted: durable in the outbox
    time.sleep(0.002)
"""


def test_sigkill_between_accept_and_publish_then_new_process_drains(pbroker, tmp_path):
    """The child publishes through a proxy; after 100 hits the proxy swallows everything, so the
    hits after that are accepted but unacknowledged (in flight) or not yet sent (window full)."""
    col = Collector(pbroker.port)
    proxy = Proxy(pbroker.port)
    db = tmp_path / "o.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(proxy.port), str(db)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    accepted = []
    try:
        for line in proc.stdout:
            accepted.append(line.strip())
            if len(accepted) == 100:
                proxy.eat = True
            if len(accepted) >= 200:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proxy.close()
    accepted += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    ob = Outbox(db)
    assert ob.depth() >= 100  # everything after the 100th hit is accepted but unacknowledged
    drain = subprocess.run([sys.executable, "-c", DRAIN, str(pbroker.port), str(db)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    try:
        assert drain.returncode == 0, drain.stderr
        assert ob.depth() == 0
        assert wait_for(lambda: col.unique() >= set(accepted), timeout=10), len(set(accepted) - col.unique())
    finally:
        col.close()


DRAIN = r"""
import sys, time
from edge.outbox import Outbox
from edge.publisher import MqttConfig, Publisher
port, db = int(sys.argv[1]), sys.argv[2]
ob = Outbox(db)
pub = Publisher(MqttConfig(host="127.0.0.1", port=port), ob, "unit-1")
pub.start()
end = time.monotonic() + 30
while ob.depth() and time.monotonic() < end:
    time.sleep(0.05)
pub.stop()
sys.exit(0 if ob.depth() == 0 else 1)
"""


def test_auto_protocol_falls_back_to_311_when_v5_is_refused(tmp_path):
    """A broker that only speaks 3.1.1 answers a v5 CONNECT with 'unacceptable protocol version'."""
    from conftest import Broker, free_port

    class V311Only(Broker):
        def start(self, timeout=10.0):
            super().start(timeout)

    # Mosquitto speaks v5, so run a minimal 3.1.1-only front: refuse v5 CONNECT, pass v4 through.
    broker = V311Only("127.0.0.1", free_port(), tmp_path)
    broker.start()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                a, _ = srv.accept()
            except OSError:
                return
            head = a.recv(4096)
            # CONNECT: fixed header, remaining length, "\x00\x04MQTT", protocol level byte
            level = head[head.index(b"MQTT") + 4]
            if level == 5:
                a.sendall(b"\x20\x02\x00\x01")  # CONNACK 3.1.1: return code 1, unacceptable protocol version
                a.close()
                continue
            b = socket.create_connection(("127.0.0.1", broker.port))
            b.sendall(head)
            for s, d in ((a, b), (b, a)):
                threading.Thread(target=pump, args=(s, d), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    col = Collector(broker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(port, protocol="auto"), ob, "unit-1")
    pub.start()
    try:
        ids = put_hits(ob, 5, pub)
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=15), pub.last_error
        assert pub.stats.protocol == "3.1.1"
    finally:
        pub.stop()
        stop.set()
        srv.close()
        col.close()
        broker.stop()


def test_config_checks_topics_and_paths(tmp_path):
    with pytest.raises(ValueError, match="only use the {device} field"):
        MqttConfig(host="h", status_topic="anpr/{camera}/status")
    with pytest.raises(ValueError, match="wildcards"):
        MqttConfig(host="h", status_topic="anpr/#")
    with pytest.raises(ValueError, match="unknown field"):
        MqttConfig(host="h", hit_topic="anpr/{plate}")
    with pytest.raises(ValueError, match="Input should be 1"):
        MqttConfig(host="h", qos=0)
    with pytest.raises(ValueError, match="reconnect_min_s"):
        MqttConfig(host="h", reconnect_min_s=10, reconnect_max_s=1)
    cfg = MqttConfig.model_validate({"host": "h", "password_file": "pw", "tls": {"ca": "ca.pem", "cert": "/abs/c.pem",
                                                                                 "key": "k.key"}}).resolved(tmp_path)
    assert cfg.password_file == tmp_path / "pw" and cfg.tls.ca == tmp_path / "ca.pem"
    assert cfg.tls.cert == Path("/abs/c.pem") and cfg.tls.key == tmp_path / "k.key"
    assert cfg.effective_port == 8883 and MqttConfig(host="h").effective_port == 1883
    assert all(f.description for f in MqttConfig.model_fields.values())


def test_order_holds_under_concurrent_publishing(pbroker, tmp_path):
    """Hits leave in outbox order while acks, heartbeats and new hits all keep the client busy.

    paho's publish() wrote to the socket from the calling thread while the network thread wrote
    too; a packet one thread had taken off the queue could be overtaken by the other's (CI saw hit
    11 arrive before hit 10; on the old code this test fails about one run in fifteen).
    """
    col = Collector(pbroker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(pbroker.port, max_inflight=50, heartbeat_s=0.01), ob, "unit-1", lambda: {})
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often so the race shows up in a short test
    pub.start()
    try:
        ids = put_hits(ob, 1000, pub)
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=60)
        assert col.ids[:1000] == ids
    finally:
        sys.setswitchinterval(old)
        pub.stop()
        col.close()


# -- one hit the broker will not take must not hold up the rest -----------------------------------

BIG = 150_000  # frame evidence can make a hit a few hundred KB


@pytest.fixture
def small_broker(pbroker):
    """pbroker with `max_packet_size 100000`: Mosquitto closes the connection of a client that sends a
    larger packet, and announces the limit in the MQTT 5 CONNACK (3.1.1 clients are not told)."""
    pbroker.stop()
    pbroker.extra_conf += "max_packet_size 100000\n"
    pbroker.start()
    return pbroker


def put_with_big(outbox: Outbox) -> tuple[list[str], str]:
    """Five hits, the third one of BIG bytes even without evidence; returns (all ids in order, the big one's id)."""
    ids = []
    for i in range(5):
        h = new_hit_id()
        body = {"hit_id": h, "plate": "XSNB23", "notes": "Q" * (BIG if i == 2 else 10)}
        assert outbox.put(TOPIC, json.dumps(body).encode(), h)
        ids.append(h)
    return ids, ids[2]


def _small_hits_flow_around(big: str, ids: list[str], col: Collector, ob: Outbox, pub: Publisher) -> list[str]:
    """Every hit but the big one arrives, and so do 3 put afterwards; the big one stays in the outbox.
    Returns the later hits' ids."""
    small = set(ids) - {big}
    assert wait_for(lambda: col.unique() >= small, timeout=10), (len(small - col.unique()), pub.stats)
    later = put_hits(ob, 3, pub)  # and delivery goes on
    assert wait_for(lambda: col.unique() >= set(later), timeout=10)
    assert big not in col.unique()
    assert wait_for(lambda: ob.depth() == 1), ob.depth()  # acks may trail the subscriber's copy
    assert [i.hit_id for i in ob.pending(now=time.time() + 1e6)] == [big]  # kept
    return later


def test_hit_over_the_brokers_maximum_packet_size_is_kept_and_later_hits_flow(small_broker, tmp_path, caplog):
    """paho 2.2 ignores the broker's Maximum Packet Size: the old code sent the big hit, the broker
    closed the connection, and after every reconnect the same hit went first again; nothing behind it
    ever arrived (24 reconnects in 8 s)."""
    caplog.set_level(logging.INFO, logger="edge.publisher")
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    ids, big = put_with_big(ob)
    pub = Publisher(cfg_for(small_broker.port, protocol="5"), ob, "unit-1")
    pub.start()
    try:
        later = _small_hits_flow_around(big, ids, col, ob, pub)
        assert pub.stats.too_large == 1 and pub.stats.connects == 1  # never sent, so never cut off
        assert col.ids == [h for h in ids + later if h != big]  # the rest in order
    finally:
        pub.stop()
        col.close()
    told = [r for r in caplog.records if big in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.ERROR and "maximum packet size" in told[0].getMessage()
    assert "XSNB23" not in caplog.text and "QQQQ" not in caplog.text  # hit id only, never the content


def test_hit_the_broker_keeps_dropping_the_connection_for_is_held_back(small_broker, tmp_path, caplog):
    """MQTT 3.1.1: the broker cannot announce its limit and just closes the connection on the big
    hit. After a few drops in a row with that hit the oldest in flight, it is held back (kept in the
    outbox) so the hits behind it get through; the old code reconnected and re-sent it forever."""
    caplog.set_level(logging.INFO, logger="edge.publisher")
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite")
    ids, big = put_with_big(ob)
    pub = Publisher(cfg_for(small_broker.port, protocol="3.1.1"), ob, "unit-1")
    pub.start()
    try:
        _small_hits_flow_around(big, ids, col, ob, pub)
        assert pub.stats.held_back == 1 and pub.connected
        connects = pub.stats.connects
        time.sleep(1.0)
        assert pub.stats.connects == connects  # no reconnect loop any more
    finally:
        pub.stop()
        col.close()
    told = [r for r in caplog.records if big in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.ERROR
    assert "XSNB23" not in caplog.text and "QQQQ" not in caplog.text


def put_real_hits(outbox: Outbox) -> tuple[list[dict], dict]:
    """Three real hit messages in the outbox: crop-only, one with ~750 KB of frame evidence, crop-only.

    Returns (all messages in order, the big one). Built by enqueue_hit with a cap far above the
    broker's limit, as on a unit whose evidence.max_message_bytes was set higher than the broker allows.
    """
    from edge.hits import EvidenceConfig, enqueue_hit
    from edge.types import Hit
    from test_hits import IDENT, VERSIONS, make_match, make_passage

    msgs = []
    for mode in ("crop", "both", "crop"):
        r = enqueue_hit(outbox, Hit(make_passage(), (make_match(),)), IDENT, VERSIONS,
                        EvidenceConfig(mode=mode, max_message_bytes=2_000_000), "anpr/{agency}/{device}/hits")
        msgs.append(r.queued[0].message)
    big = msgs[1]
    assert len(json.dumps(big)) > 500_000 and all(len(json.dumps(m)) < 50_000 for m in msgs if m is not big)
    return msgs, big


def _delivered_without_evidence(msgs: list[dict], big: dict, col: Collector, ob: Outbox, pub: Publisher) -> dict:
    """Every hit arrives and leaves the outbox; the small ones exactly as stored. Returns what came of the big one."""
    ids = {m["hit_id"] for m in msgs}
    assert wait_for(lambda: col.unique() >= ids and ob.depth() == 0, timeout=20), (ob.depth(), pub.stats)
    for m in msgs:
        if m is not big:
            assert col.bodies[m["hit_id"]] == m  # intact, evidence and all
    got = col.bodies[big["hit_id"]]
    assert "evidence" not in got and {k: v for k, v in got.items() if k != "evidence_omitted"} == \
        {k: v for k, v in big.items() if k != "evidence"}  # the same hit, same hit_id, only the pictures left out
    assert pub.stats.acked == len(msgs) and pub.stats.too_large == 0 and pub.stats.held_back == 0
    assert pub.stats.evidence_omitted == 1
    return got


def test_hit_over_the_brokers_maximum_packet_size_is_delivered_without_its_evidence(small_broker, tmp_path, caplog):
    """An MQTT 5 broker announces its Maximum Packet Size: a hit over it was kept in the outbox and
    retried hourly forever, so the operator never learned of it. Now it goes out without its
    evidence (with evidence_omitted saying why) and leaves the outbox on that message's PUBACK."""
    caplog.set_level(logging.INFO, logger="edge.publisher")
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    msgs, big = put_real_hits(ob)
    pub = Publisher(cfg_for(small_broker.port, protocol="5"), ob, "unit-1")
    pub.start()
    try:
        got = _delivered_without_evidence(msgs, big, col, ob, pub)
        assert got["evidence_omitted"] == "broker maximum packet size 100000 bytes"
        assert pub.stats.connects == 1  # never sent whole, so never cut off
        assert [h for h in col.ids] == [m["hit_id"] for m in msgs]  # in order
    finally:
        pub.stop()
        col.close()
    told = [r for r in caplog.records if big["hit_id"] in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING and "without its evidence" in told[0].getMessage()
    assert "XSNB23" not in caplog.text and big["evidence"]["crop_jpeg"][:40] not in caplog.text


def test_hit_the_broker_keeps_dropping_the_connection_for_goes_out_without_its_evidence(small_broker, tmp_path,
                                                                                        caplog):
    """MQTT 3.1.1: the broker cannot announce its limit and closes the connection on the big hit. After
    a few drops in a row with that hit first in flight it was held back, and held back again each
    time it came up: never delivered. Now it is sent once more without its evidence, and arrives."""
    caplog.set_level(logging.INFO, logger="edge.publisher")
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    msgs, big = put_real_hits(ob)
    pub = Publisher(cfg_for(small_broker.port, protocol="3.1.1"), ob, "unit-1")
    pub.start()
    try:
        got = _delivered_without_evidence(msgs, big, col, ob, pub)
        assert got["evidence_omitted"] == "broker closed the connection 3 times in a row while it was sent"
    finally:
        pub.stop()
        col.close()
    told = [r for r in caplog.records if big["hit_id"] in r.getMessage()]
    assert told and all(r.levelno == logging.WARNING for r in told)
    assert "XSNB23" not in caplog.text and big["evidence"]["crop_jpeg"][:40] not in caplog.text


def test_a_hit_marked_before_a_restart_goes_without_its_evidence_at_once(small_broker, tmp_path):
    """The drops that made a hit go without its evidence are remembered in the outbox: after a
    restart it is sent slim straight away instead of dropping the connection three more times."""
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    msgs, big = put_real_hits(ob)
    note = "broker closed the connection 3 times in a row while it was sent"
    ob.omit_evidence(big["hit_id"], note)  # what the unit's previous run recorded
    ob.close()
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    pub = Publisher(cfg_for(small_broker.port, protocol="3.1.1"), ob, "unit-1")
    pub.start()
    try:
        got = _delivered_without_evidence(msgs, big, col, ob, pub)
        assert got["evidence_omitted"] == note
        assert pub.stats.connects == 1  # not cut off again
    finally:
        pub.stop()
        col.close()


@pytest.mark.parametrize("protocol, omitted, too_large, held_back", [
    ("5", 1, 1, 0),  # the broker announces its limit: the evidence left out, the hit too large even so kept
    ("3.1.1", 1, 0, 1),  # the broker just drops the connection: evidence left out, then the hit held back
])
def test_heartbeat_tells_the_operator_of_hits_without_evidence_too_large_or_held_back(
        small_broker, tmp_path, protocol, omitted, too_large, held_back):
    """Hits sent without their pictures, or stuck at the unit, were only in the unit's log: the
    operator reading the heartbeat saw nothing wrong. Now the heartbeat counts them."""
    col = Collector(small_broker.port)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    msgs, _ = put_real_hits(ob)  # one with ~750 KB of evidence: goes out without it
    ids, big = put_with_big(ob)  # one too large even without evidence: stays in the outbox
    pub = Publisher(cfg_for(small_broker.port, protocol=protocol), ob, "unit-1")
    pub.start()
    want = {"hits_evidence_omitted": omitted, "hits_too_large": too_large, "hits_held_back": held_back}
    try:
        sent = {m["hit_id"] for m in msgs} | (set(ids) - {big})
        assert wait_for(lambda: col.unique() >= sent and ob.depth() == 1, timeout=30), (ob.depth(), pub.stats)
        st = pub.stats
        assert (st.evidence_omitted, st.too_large, st.held_back) == (omitted, too_large, held_back), st
        assert wait_for(lambda: any({k: s.get(k) for k in want} == want and s.get("outbox_depth") == 1
                                    for s in col.status if s["state"] == "online"), timeout=10), col.status[-3:]
    finally:
        pub.stop()
        col.close()
    beats = [s for s in col.status if s["state"] == "online"]
    assert beats and all(k in s for s in beats for k in want)  # always there, 0 while all is well
    assert beats[0]["hits_evidence_omitted"] == beats[0]["hits_too_large"] == beats[0]["hits_held_back"] == 0
    assert all(s[k] <= v for s in beats for k, v in want.items())  # each hit counted once
    assert all("XSNB23" not in json.dumps(s) for s in col.status)  # counts only, never plate text


# -- 'offline' is the last word ---------------------------------------------------------------------

def test_offline_stays_the_retained_status_when_stop_meets_a_heartbeat(pbroker, tmp_path):
    """stop() published 'offline' while the worker was still building a heartbeat, which then went out
    after it; the clean DISCONNECT suppresses the will, so the retained status said 'online' for a
    unit that was down. The status provider here is slow just when stop() is called."""
    ob = Outbox(tmp_path / "o.sqlite")
    for round_ in range(3):
        watch = Collector(pbroker.port, "anpr/status/#", f"watch-{round_}")
        slow = threading.Event()
        inside = threading.Event()
        mark = [0]

        def provider():
            if slow.is_set():
                inside.set()
                # a slow status call (files, SQLite): back once 'offline' went out, or after 0.5 s
                wait_for(lambda: any(s["state"] == "offline" for s in watch.status[mark[0]:]), timeout=0.5)
            return {"camera_state": "streaming"}

        pub = Publisher(cfg_for(pbroker.port, heartbeat_s=0.01), ob, "unit-1", provider)
        pub.start()
        try:
            assert wait_for(lambda: watch.status and watch.status[-1]["state"] == "online", timeout=10)
            mark[0] = len(watch.status)
            slow.set()
            assert inside.wait(5)
        finally:
            pub.stop()
        watch.close()
        late = Collector(pbroker.port, "anpr/status/#", f"late-{round_}")
        assert wait_for(lambda: late.status, timeout=5)
        time.sleep(0.2)
        late.close()
        assert [s["state"] for s in late.status] == ["offline"], (round_, late.status)


# -- order across a reconnect -----------------------------------------------------------------------

def test_hits_in_flight_at_a_reconnect_are_not_overtaken_by_new_ones(pbroker, tmp_path):
    """paho calls on_connect before it re-sends the messages still unacknowledged from the last
    connection; the old code let the worker publish new hits in that gap, ahead of them. The gap is
    widened here with a sleep in on_connect so that the old code fails every time."""
    col = Collector(pbroker.port)
    proxy = Proxy(pbroker.port)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    pub = Publisher(cfg_for(proxy.port, heartbeat_s=60), ob, "unit-1", ack_timeout_s=600)
    on_connect = pub._on_connect

    def slow_on_connect(*a):
        on_connect(*a)
        time.sleep(0.05)

    pub._on_connect = slow_on_connect
    pub.start()
    ids: list[str] = []
    stop = threading.Event()

    def feeder():
        while not stop.is_set():
            ids.extend(put_hits(ob, 1, pub))
            time.sleep(0.005)

    t = threading.Thread(target=feeder)
    try:
        assert wait_for(lambda: pub.connected)
        ids += put_hits(ob, 5, pub)
        assert wait_for(lambda: ob.depth() == 0)
        proxy.eat = True
        ids += put_hits(ob, 10, pub)  # sent into a black hole: still in flight at the reconnect
        assert wait_for(lambda: pub.stats.published >= 15)
        time.sleep(0.2)
        t.start()
        proxy.cut()
        proxy.restore()
        assert wait_for(lambda: pub.stats.connects >= 2, timeout=10)
        time.sleep(0.5)
        stop.set()
        t.join()
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids), timeout=20), \
            (ob.depth(), len(set(ids) - col.unique()))
        first = list(dict.fromkeys(col.ids))  # the order in which each hit first arrived
        assert first == ids, [ids.index(h) for h in first][:40]
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        pub.stop()
        proxy.close()
        col.close()


# -- priority ---------------------------------------------------------------------------------------

def test_urgent_hit_queued_during_an_outage_is_delivered_before_older_low_priority_ones(pbroker, tmp_path):
    """30 unpaid-fine hits (priority 100) wait while the broker is unreachable; then a stolen car
    (priority 900). When the broker is back, the stolen car arrives first, then the fines in age order."""
    col = Collector(pbroker.port)
    proxy = Proxy(pbroker.port, listening=False)
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    pub = Publisher(cfg_for(proxy.port), ob, "unit-1")
    pub.start()
    try:
        fines = []
        for _ in range(30):
            h = new_hit_id()
            assert ob.put(TOPIC, json.dumps({"hit_id": h, "plate": "XSNB23"}).encode(), h, priority=100)
            fines.append(h)
        assert wait_for(lambda: "connection refused" in pub.last_error, timeout=5), pub.last_error
        stolen = new_hit_id()
        assert ob.put(TOPIC, json.dumps({"hit_id": stolen, "plate": "GZ123K"}).encode(), stolen, priority=900)
        assert not pub.connected and pub.stats.published == 0 and ob.depth() == 31
        proxy.listen()  # the broker is reachable again
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(fines) | {stolen}, timeout=20), ob.depth()
        first = list(dict.fromkeys(col.ids))
        assert first[0] == stolen and first[1:] == fines
    finally:
        pub.stop()
        proxy.close()
        col.close()


def test_the_suspect_of_a_drop_is_the_first_hit_sent_not_the_lowest_seq(tmp_path):
    """With priorities the send order is no longer the outbox seq order: an urgent hit put later is sent
    before older ones. The hit the broker likely dropped us for is the first one sent of those in flight."""
    from edge.publisher import _Inflight

    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    pub = Publisher(cfg_for(1883), ob, "unit-1")
    # sent in this order: the urgent hit (outbox seq 31) first, then an old fine (seq 1), then another
    pub._state.inflight = {1: _Inflight("urgent", 0.0, 0, 1), 2: _Inflight("fine-1", 0.0, 0, 2),
                           3: _Inflight("fine-2", 0.0, 0, 3)}
    pub._link_dropped(pub._inflight_gen)
    assert pub._suspect == ("urgent", 1) and pub._probe
    # The broker acknowledged the urgent hit, then dropped us: a later hit is to blame, not the first one left.
    pub._suspect, pub._probe = ("", 0), False
    pub._state.inflight = {2: _Inflight("fine-1", 0.0, 0, 2), 3: _Inflight("fine-2", 0.0, 0, 3)}
    pub._acked_order = 1
    pub._link_dropped(pub._inflight_gen)
    assert pub._suspect == ("fine-1", 1) and pub._probe
    pub._acked_order = 3  # a hit sent after fine-1 was acknowledged: fine-1 is not to blame
    pub._link_dropped(pub._inflight_gen)
    assert pub._suspect == ("", 0)
    ob.close()


def test_a_hit_dropping_the_connection_even_without_evidence_is_held_back_not_retried_forever(tmp_path):
    """Leaving the evidence out is tried once per hit: if the smaller message drops the connection
    too (or the hit had no evidence), the hit is held back as before, so later hits get through."""
    from edge.publisher import DROPS_BEFORE_HOLDING_BACK, _Inflight

    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    pub = Publisher(cfg_for(1883), ob, "unit-1")

    def drops(hit_id: str, evidence: bool, n: int = DROPS_BEFORE_HOLDING_BACK) -> None:
        for i in range(n):
            pub._state.inflight = {1: _Inflight(hit_id, 0.0, 0, i, evidence)}
            pub._link_dropped(pub._inflight_gen)

    drops("big", True)
    assert "big" in pub._slim and pub.stats.held_back == 0 and pub._probe  # next time: without evidence
    drops("big", False)  # sent without evidence, and the broker still drops us
    assert pub.stats.held_back == 1
    drops("plain", False)  # no evidence to leave out: held back at once, as before
    assert "plain" not in pub._slim and pub.stats.held_back == 2
    ob.close()
