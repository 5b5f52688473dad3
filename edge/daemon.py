"""The roadside service: wires source, pipeline, lists, outbox and publisher, and runs until told to stop.

SIGTERM/SIGINT stop it within seconds: capture stops, open tracks are closed and matched, and every
hit already accepted into the outbox stays there for the next start. SIGHUP reloads the config:
a config that fails validation is refused and the running one kept.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

from edge import __version__
from edge.audit import AuditLog, changed_sections, file_sha256
from edge.capture import Capture
from edge.config import ConfigError, EdgeConfig, load_config
from edge.dispatch import HitDispatcher
from edge.factory import build_pipeline, load_models
from edge.hits import HitIdentity, Site
from edge.lists.matcher import ListMatcher
from edge.lists.store import ListStore
from edge.lists.sync import ListSync
from edge.logsetup import setup_logging
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.sdnotify import Watchdog, notify
from edge.sources import make_source
from edge.status import STATUS_FILE, clock_sync_state, cpu_temperature, write_status

log = logging.getLogger(__name__)

LIST_WAIT_S = 10.0  # longest wait at start-up for the first list package when none is cached


class Daemon:
    """One running unit. `run()` blocks until stopped; `request_stop()`/`request_reload()` are signal-safe."""

    def __init__(self, cfg: EdgeConfig, config_path: Path | None = None, exit_at_end: bool = False,
                 max_frames: int = 0):
        self.cfg = cfg
        self.config_path = config_path
        self.exit_at_end = exit_at_end
        self.max_frames = max_frames
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._started = time.monotonic()
        self._fps_window: list[float] = []
        self.watchdog = Watchdog()
        self.capture: Capture | None = None
        self.outbox: Outbox | None = None
        self._live_lists: dict[str, str] | None = None  # list id -> name, for activation audit entries
        self._list_version = 0

    # ----- signals -------------------------------------------------------------------------
    def request_stop(self, *_args) -> None:
        self._stop.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # ----- wiring ---------------------------------------------------------------------------
    def _build(self, cfg: EdgeConfig) -> None:
        """Build everything that depends on the config (the outbox survives reloads)."""
        state_dir = cfg.device.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.detector, self.recognizer = load_models(cfg.models.dir, cfg.models.detector, cfg.models.recognizer,
                                                     cfg.models.threads)
        self.pipeline = build_pipeline(
            self.detector, self.recognizer, tracking=cfg.tracking, motion=cfg.motion, roi=cfg.camera.roi,
            min_score=cfg.detection.min_score, min_plate_width=cfg.detection.min_plate_width,
            keep_frames=cfg.evidence.mode in ("frame", "both"),
        )
        self.store = ListStore.from_config(cfg.lists)
        self.matcher = ListMatcher(self.store, cfg.lists.enabled, lookalike_below=cfg.lists.lookalike_below)
        if self.outbox is None or self.outbox.path != cfg.outbox.path:
            if self.outbox is not None:
                self.outbox.close()
            self.outbox = Outbox.from_config(cfg.outbox)
        audit_topic = cfg.audit.topic.replace("{device}", cfg.device.id)
        self.audit = AuditLog.from_config(cfg.audit, state_dir, cfg.device.id,
                                          publish=lambda entry: self._publish_audit(audit_topic, entry))
        site = Site(lat=cfg.site.lat, lon=cfg.site.lon, road=cfg.site.road, direction=cfg.site.direction)

        def identity() -> HitIdentity:  # the clock-sync state is read afresh for every hit
            return HitIdentity(device=cfg.device.id, camera=cfg.camera.id, site=site, clock_sync=clock_sync_state())

        self.dispatcher = HitDispatcher(
            match=lambda p, now: self.matcher.match(p.text, p.alternatives, p.country, now, p.char_confidences),
            outbox=self.outbox, identity=identity, versions=self._versions, evidence=cfg.evidence,
            default_topic=cfg.mqtt.hit_topic, min_confidence=cfg.detection.min_read_confidence,
        )
        self.publisher = Publisher(cfg.mqtt, self.outbox, cfg.device.id, self.status)
        self.sync = ListSync(self.store, cfg.mqtt, cfg.lists)
        src = make_source(cfg.camera.source, width=cfg.camera.width, height=cfg.camera.height,
                          fps=cfg.camera.fps, loop=cfg.camera.loop)
        self.capture = Capture(src, cfg.camera.queue_size, cfg.camera.reconnect.initial_s,
                               cfg.camera.reconnect.max_s, on_state=self._camera_state)

    def _start(self) -> None:
        self.publisher.start()
        self.sync.start()
        self._await_lists(LIST_WAIT_S)
        self.capture.start()

    def _await_lists(self, timeout: float) -> None:
        """With no cached list yet, give the broker's retained snapshot a moment to arrive before reading
        plates: passages read before any list is loaded could never become hits."""
        deadline = time.monotonic() + timeout
        while self.store.version == 0 and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        if self.store.version == 0:
            log.warning("no reference list loaded yet: no hits are possible until one arrives on %s",
                        self.sync.snapshot_topic)

    def _stop_inputs(self) -> None:
        """Stop capture and close open tracks into the outbox."""
        if self.capture is not None:
            self.capture.stop(timeout=1.0)
        for passage in self.pipeline.finish():
            self.dispatcher.handle(passage)

    def _stop_network(self, timeout: float = 2.0) -> None:
        """Give a connected publisher a moment to send what is queued; the rest waits on disk."""
        if self.publisher.connected:
            deadline = time.monotonic() + 1.0
            while self.outbox.depth() > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        self.sync.stop()
        self.publisher.stop(timeout=timeout)

    def _stop_parts(self) -> None:
        self._stop_inputs()
        self._stop_network()

    def _publish_audit(self, topic: str, entry: dict) -> None:
        """Audit entries travel through the durable outbox like hits, so none is lost in an outage."""
        payload = json.dumps(entry, separators=(",", ":")).encode()
        self.outbox.put(topic, payload, f"audit-{entry['seq']}-{entry['hash'][:16]}")

    def _audit_lists(self) -> None:
        """Record lists that became live or stopped being live (delta, time window, expiry) and
        new package versions, each of which brings a fresh hash key."""
        status = self.store.status()
        live = {e["id"]: e["name"] for e in status.get("lists", []) if e["live"]}
        version = self.store.version
        if version != self._list_version and version:
            self.audit.record("key_rotation", key="list_hash_key", reason=f"list package version {version}")
        self._list_version = version
        if self._live_lists is not None or live:
            before = self._live_lists or {}
            for list_id in sorted(live.keys() - before.keys()):
                self.audit.record("list_activated", list_id=list_id, name=live[list_id], version=version)
            for list_id in sorted(before.keys() - live.keys()):
                self.audit.record("list_deactivated", list_id=list_id, name=before[list_id], version=version,
                                  reason="inactive, outside its time window, expired or removed")
        self._live_lists = live

    def _versions(self) -> dict:
        return {"software": __version__, "detector": self.detector.version, "recognizer": self.recognizer.version,
                "lists": self.store.version}

    def _camera_state(self, state: str, error: str) -> None:
        log.log(logging.WARNING if state == "reconnecting" else logging.INFO, "camera %s%s", state,
                f": {error}" if error else "")

    # ----- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        """Heartbeat and `anpr-edge status` content: counters only, never plate texts."""
        now = time.monotonic()
        window = [t for t in self._fps_window if now - t <= 10.0]
        cap = self.capture.stats if self.capture else None
        stats = self.pipeline.stats
        lists = self.store.status()
        out = {
            "device": self.cfg.device.id,
            "state": "online" if not self._stop.is_set() else "stopping",
            "uptime_s": round(now - self._started, 1),
            "camera_state": cap.state if cap else "starting",
            "fps": round(len(window) / 10.0, 2),
            "frames": stats.frames,
            "frames_dropped": cap.dropped if cap else 0,
            "inference_ms": round(stats.last_infer_ms, 1),
            "passages": stats.passages,
            "hits": self.dispatcher.stats.hits,
            "hits_suppressed": self.dispatcher.stats.suppressed,
            "list_version": self.store.version,
            "lists_active": sum(1 for entry in lists.get("lists", []) if entry["live"]),
            "cpu_temp_c": cpu_temperature(),
            "clock_sync": clock_sync_state(),
            "model_versions": {"detector": self.detector.version, "recognizer": self.recognizer.version},
            "version": __version__,
        }
        out.update(self.publisher.status_snapshot())
        return out

    def _write_status(self) -> None:
        write_status(self.cfg.device.state_dir / STATUS_FILE, self.status())

    # ----- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        self._build(self.cfg)
        self._start()
        notify("READY=1", f"STATUS=reading plates from {self.capture.source.label}")
        self.audit.record("start", software=__version__, detector=self.detector.version,
                          recognizer=self.recognizer.version, lists_version=self.store.version,
                          config_sha256=file_sha256(self.config_path) if self.config_path else None)
        self._audit_lists()
        stop_reason = "signal"
        log.info("anpr-edge %s started: device %s camera %s", __version__, self.cfg.device.id, self.cfg.camera.id)
        last_status = 0.0
        try:
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    self._do_reload()
                frame = self.capture.get(timeout=0.5)
                if frame is not None:
                    self.watchdog.frame_seen()
                    self._fps_window.append(time.monotonic())
                    if len(self._fps_window) > 2000:
                        del self._fps_window[:1000]
                    for passage in self.pipeline.process(frame):
                        self.dispatcher.handle(passage)
                    if self.max_frames and self.pipeline.stats.frames >= self.max_frames:
                        stop_reason = "frame limit"
                        break
                elif self.capture.ended:
                    for passage in self.pipeline.finish():
                        self.dispatcher.handle(passage)
                    if self.exit_at_end:
                        self._drain(timeout=30.0)
                        stop_reason = "source ended"
                        break
                    self._stop.wait(0.5)
                self.watchdog.tick()
                if time.monotonic() - last_status >= 2.0:
                    self._audit_lists()
                    self._write_status()
                    last_status = time.monotonic()
        finally:
            notify("STOPPING=1")
            log.info("stopping")
            self._stop_inputs()
            self.audit.record("stop", reason=stop_reason, uptime_s=round(time.monotonic() - self._started, 1),
                              outbox_depth=self.outbox.depth())
            self._stop_network()
            self._write_status_safely()
            log.info("stopped; %d item(s) waiting in the outbox", self.outbox.depth())
            self.outbox.close()
        return 0

    def _write_status_safely(self) -> None:
        try:
            self._write_status()
        except OSError as e:
            log.warning("cannot write status file: %s", e)

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.outbox.depth() > 0 and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.1)

    def _do_reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        new_sha = file_sha256(self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("config reload refused, keeping the running config: %s", e)
            self.audit.record("config_change", new_sha256=new_sha, accepted=False, error=str(e).splitlines()[-1][:200])
            return
        sections = changed_sections(self.cfg, new)
        log.info("config reload: restarting the pipeline with the new config (changed: %s)", ", ".join(sections) or "none")
        self._stop_parts()
        old_keys = {k: _sha_or_none(getattr(self.cfg.lists, k)) for k in ("device_key", "signing_public_key")}
        self.cfg = new
        self._build(new)
        self.audit.record("config_change", new_sha256=new_sha, sections=sections, accepted=True)
        for key, old in old_keys.items():
            if _sha_or_none(getattr(new.lists, key)) != old:
                self.audit.record("key_rotation", key=key, reason="config reload")
        self._start()
        log.info("config reloaded")


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def run_daemon(cfg: EdgeConfig, config_path: Path | None = None, max_frames: int = 0,
               exit_at_end: bool = False) -> int:
    setup_logging(cfg.logging.level, cfg.logging.format)
    daemon = Daemon(cfg, config_path, exit_at_end=exit_at_end, max_frames=max_frames)
    daemon.install_signal_handlers()
    return daemon.run()
