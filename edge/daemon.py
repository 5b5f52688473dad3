"""The roadside service: wires source, pipeline, lists, outbox and publisher, and runs until told to stop.

SIGTERM/SIGINT stop it within seconds: capture stops, open tracks are closed and matched, and every
hit already accepted into the outbox stays there for the next start. SIGHUP reloads the config:
a config that fails validation, or whose parts cannot be built (missing password, certificate, key
or model files...), is refused and the running one kept.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from edge import __version__
from edge.audit import AuditError, AuditLog, changed_sections, file_sha256
from edge.capture import Capture
from edge.config import ConfigError, EdgeConfig, load_config
from edge.credentials import mask_credentials
from edge.dispatch import HitDispatcher
from edge.factory import build_pipeline, load_models, model_files, pipeline_settings
from edge.hits import HitIdentity, Site
from edge.lists.keys import KeyFileError
from edge.lists.matcher import ListMatcher
from edge.lists.store import ListStore
from edge.lists.sync import ListSync
from edge.logsetup import setup_logging
from edge.modelcontract import ModelContractError
from edge.outbox import Outbox, OutboxError
from edge.publisher import MqttSetupError, Publisher
from edge.sdnotify import Watchdog, notify
from edge.sources import SourceError, make_source
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
        self._capture_started = False
        self.outbox: Outbox | None = None
        self._live_lists: dict[str, str] | None = None  # list id -> name, for activation audit entries
        self._list_version = 0
        self._status_write_failing = False  # logged once per failure streak, not every 2 s

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
        """Build everything that depends on the config and put it in place (the outbox survives reloads)."""
        self._install(self._prepare(cfg))

    def _prepare(self, cfg: EdgeConfig) -> _Parts:
        """Construct (without starting) every part for `cfg`. Everything that can fail on a bad
        setting fails here (models, list keys and cache, password and TLS files, camera source),
        while the running parts are left untouched. A new outbox is opened only if its path changed,
        and closed again when a later step fails."""
        state_dir = cfg.device.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        outbox = self.outbox if self.outbox is not None and self.outbox.path == cfg.outbox.path else None
        opened: Outbox | None = None
        try:
            detector, recognizer = load_models(cfg.models.dir, threads=cfg.models.threads, **model_files(cfg))
            pipeline = build_pipeline(detector, recognizer, **pipeline_settings(cfg),
                                      keep_frames=cfg.evidence.mode in ("frame", "both"))
            store = ListStore.from_config(cfg.lists)
            matcher = ListMatcher(store, cfg.lists.enabled, lookalike_below=cfg.lists.lookalike_below)
            if outbox is None:
                outbox = opened = Outbox.from_config(cfg.outbox)
            audit_topic = cfg.audit.topic.replace("{device}", cfg.device.id)
            # the audit entries go through whichever outbox is in place when they are written
            audit = AuditLog.from_config(cfg.audit, state_dir, cfg.device.id,
                                         publish=lambda entry: self._publish_audit(audit_topic, entry))
            site = Site(lat=cfg.site.lat, lon=cfg.site.lon, road=cfg.site.road, direction=cfg.site.direction)

            def identity() -> HitIdentity:  # the clock-sync state is read afresh for every hit
                return HitIdentity(device=cfg.device.id, camera=cfg.camera.id, site=site,
                                   clock_sync=clock_sync_state())

            dispatcher = HitDispatcher(
                match=lambda p, now: matcher.match(p.text, p.alternatives, p.country, now, p.char_confidences),
                outbox=outbox, identity=identity, versions=self._versions, evidence=cfg.evidence,
                default_topic=cfg.mqtt.hit_topic, min_confidence=cfg.detection.min_read_confidence,
            )
            publisher = Publisher(cfg.mqtt, outbox, cfg.device.id, self.status)
            sync = ListSync(store, cfg.mqtt, cfg.lists)
            src = make_source(cfg.camera.source, width=cfg.camera.width, height=cfg.camera.height,
                              fps=cfg.camera.fps, loop=cfg.camera.loop)
            capture = Capture(src, cfg.camera.queue_size, cfg.camera.reconnect.initial_s,
                              cfg.camera.reconnect.max_s, on_state=self._camera_state)
        except BaseException:
            if opened is not None:
                opened.close()
            raise
        return _Parts(cfg, detector, recognizer, pipeline, store, matcher, outbox, audit, dispatcher,
                      publisher, sync, capture)

    def _install(self, parts: _Parts) -> None:
        """Put prepared parts in place of the (stopped) current ones; nothing here can fail on a setting."""
        if self.outbox is not None and self.outbox is not parts.outbox:
            self.outbox.close()
        self.cfg = parts.cfg
        self.detector, self.recognizer, self.pipeline = parts.detector, parts.recognizer, parts.pipeline
        self.store, self.matcher, self.outbox, self.audit = parts.store, parts.matcher, parts.outbox, parts.audit
        self.dispatcher, self.publisher, self.sync = parts.dispatcher, parts.publisher, parts.sync
        self.capture = parts.capture
        self._capture_started = False

    def _start(self) -> None:
        self.publisher.start()
        self.sync.start()
        self._await_lists(LIST_WAIT_S)
        self.capture.start()
        self._capture_started = True

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
        if self.capture is not None and self._capture_started:  # (a capture never started cannot be joined)
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
            _record(self.audit, "key_rotation", key="list_hash_key", reason=f"list package version {version}")
        self._list_version = version
        if self._live_lists is not None or live:
            before = self._live_lists or {}
            for list_id in sorted(live.keys() - before.keys()):
                _record(self.audit, "list_activated", list_id=list_id, name=live[list_id], version=version)
            for list_id in sorted(before.keys() - live.keys()):
                _record(self.audit, "list_deactivated", list_id=list_id, name=before[list_id], version=version,
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
        _record(self.audit, "start", software=__version__, detector=self.detector.version,
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
                    self._write_status_safely()
                    last_status = time.monotonic()
        finally:
            notify("STOPPING=1")
            log.info("stopping")
            self._stop_inputs()
            _record(self.audit, "stop", reason=stop_reason, uptime_s=round(time.monotonic() - self._started, 1),
                              outbox_depth=self.outbox.depth())
            self._stop_network()
            self._write_status_safely()
            log.info("stopped; %d item(s) waiting in the outbox", self.outbox.depth())
            self.outbox.close()
        return 0

    def _write_status_safely(self) -> None:
        """The status file is for people and `anpr-edge status`; failing to write it (a full disk) must not
        stop plate reading or hit delivery, and is logged once until it works again."""
        path = self.cfg.device.state_dir / STATUS_FILE
        try:
            self._write_status()
        except OSError as e:
            if not self._status_write_failing:
                log.warning("cannot write status file %s: %s; plates are still read and hits sent", path,
                            e.strerror or e)
            self._status_write_failing = True
        else:
            if self._status_write_failing:
                log.info("status file %s written again", path)
            self._status_write_failing = False

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.outbox.depth() > 0 and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.1)

    def _do_reload(self) -> None:
        """Apply the config file again. Everything the new config needs is built and checked before
        the running parts stop: a config that is invalid or cannot be put to work (a missing password,
        certificate, key or model file...) is refused, audited, and the running config kept. Should
        starting the new parts fail after all, the unit goes back to the config it ran before."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        new_sha = _sha_or_none(self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            _refuse_reload(self.audit, new_sha, _describe(e))
            return
        try:
            parts = self._prepare(new)
        except Exception as e:  # whatever the new config breaks, the running unit goes on
            _refuse_reload(self.audit, new_sha, _describe(e))
            return
        old_cfg = self.cfg
        sections = changed_sections(old_cfg, new)
        log.info("config reload: restarting the pipeline with the new config (changed: %s)", ", ".join(sections) or "none")
        old_keys = {k: _sha_or_none(getattr(old_cfg.lists, k)) for k in ("device_key", "signing_public_key")}
        old_lists = (self.store.version, self.store.seq)
        self._stop_parts()
        self._install(parts)
        if (self.store.version, self.store.seq) != old_lists:
            self._reload_list_cache()  # the old sync applied a package after the new store read the cache
        try:
            self._start()
        except Exception as e:
            problem = _describe(e)
            log.error("config reload failed while starting the new parts (%s); going back to the previous config",
                      problem)
            try:
                self._stop_parts()
            except Exception as stop_error:  # parts half started: stop what can be stopped, then go on
                log.warning("stopping the new parts: %s", _describe(stop_error))
            try:
                self._install(self._prepare(old_cfg))
            except Exception as again:  # worked before; if it no longer does, the unit cannot run
                log.critical("cannot go back to the previous config either: %s", _describe(again))
                raise
            _record(self.audit, "config_change", new_sha256=new_sha, sections=sections, accepted=False,
                              error=_audit_text(problem))
            self._start()
            log.warning("config reload rolled back: running the previous config again")
            return
        _record(self.audit, "config_change", new_sha256=new_sha, sections=sections, accepted=True)
        for key, old in old_keys.items():
            if _sha_or_none(getattr(new.lists, key)) != old:
                _record(self.audit, "key_rotation", key=key, reason="config reload")
        log.info("config reloaded")

    def _reload_list_cache(self) -> None:
        try:
            self.store.load_cache()
        except OSError as e:
            log.warning("cannot re-read the cached lists in %s: %s", self.store.store_dir, e.strerror or e)


@dataclass
class _Parts:
    """Everything built from one config, not yet started."""

    cfg: EdgeConfig
    detector: object
    recognizer: object
    pipeline: object
    store: ListStore
    matcher: ListMatcher
    outbox: Outbox
    audit: AuditLog
    dispatcher: HitDispatcher
    publisher: Publisher
    sync: ListSync
    capture: Capture


# errors whose texts are written for the person who edits the config: they name the setting and
# file, never a secret or a plate text (URL credentials are masked anyway)
_DESCRIBED = (ConfigError, MqttSetupError, KeyFileError, ModelContractError, SourceError, OutboxError, AuditError,
              OSError)


def _describe(exc: BaseException) -> str:
    """One message for the log and the audit trail. Errors of other kinds show only their type and
    code location: their texts come from code that might quote a secret or a plate."""
    if isinstance(exc, ConfigError):
        return str(exc)  # masked by edge.config already
    if isinstance(exc, _DESCRIBED):
        text = mask_credentials(str(exc))  # any URL with a password in it
        return text or type(exc).__name__
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name}" if tb else ""
    return f"{type(exc).__name__}{where}"


def _record(audit: AuditLog, event: str, **data) -> None:
    """Append an audit entry; a file that cannot be written (a full disk) is logged, not fatal: the
    unit keeps reading plates and delivering hits, and the audit chain continues with the next entry
    that can be written (a crash here restarted the daemon into the same error at every start)."""
    try:
        audit.record(event, **data)
    except OSError as e:
        log.error("audit entry %r not written (%s); the unit goes on", event, e.strerror or type(e).__name__)


def _refuse_reload(audit: AuditLog, new_sha: str | None, problem: str) -> None:
    """(A module function: tests call `Daemon._do_reload` on a stand-in holding only config_path and audit.)"""
    log.error("config reload refused, keeping the running config: %s", problem)
    _record(audit, "config_change", new_sha256=new_sha, accepted=False, error=_audit_text(problem))


def _audit_text(problem: str) -> str:
    """An audit field is one short line: the last line of the message (the problem itself)."""
    lines = [line.strip() for line in problem.splitlines() if line.strip()]
    return (lines[-1] if lines else problem)[:200]


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
