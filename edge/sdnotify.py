"""sd_notify for systemd Type=notify services, without a dependency on libsystemd.

The service tells systemd READY=1 once it reads frames, STOPPING=1 when it shuts down, a STATUS=
line for `systemctl status`, and WATCHDOG=1 keep-alives. The `Watchdog` feeds systemd only while
frames really flow, so a unit whose camera froze (or whose inference loop hangs) is restarted by
systemd instead of silently reading nothing. Everything is a no-op when not started by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class SdNotifyError(ValueError):
    """The systemd notify environment is malformed (set by hand, not by systemd)."""


def _address(env: Mapping[str, str]) -> str | None:
    """The AF_UNIX address from $NOTIFY_SOCKET: '@name' is abstract, '/path' a socket file."""
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    # vsock:... and other forms are for VMs and containers; this unit never runs under them.
    log.warning("NOTIFY_SOCKET=%r is neither an abstract (@name) nor a path socket; not notifying", addr)
    return None


def _clean(line: str) -> str:
    """One KEY=VALUE assignment per line: a newline inside a STATUS text would start a new one."""
    if "=" not in line:
        raise ValueError(f"sd_notify line {line!r} is not KEY=VALUE")
    return " ".join(line.splitlines())


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send assignments such as "READY=1", "STATUS=reading" in one datagram.

    Returns True when a datagram was sent, False when not under systemd or when sending failed
    (a failed notification must never stop the service; systemd then acts on its own timeouts).
    """
    env = os.environ if env is None else env
    addr = _address(env)
    if addr is None or not lines:
        return False
    payload = "\n".join(_clean(line) for line in lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, addr)
        return True
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", env.get("NOTIFY_SOCKET"), e.strerror or e)
        return False


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec in seconds when systemd asked this process for keep-alives, else None."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        if not pid.isdigit():
            raise SdNotifyError(f"WATCHDOG_PID={pid!r} is not a process id")
        if int(pid) != os.getpid():
            return None  # the watchdog belongs to another process (e.g. our parent shell)
    if not usec.isdigit() or int(usec) == 0:
        raise SdNotifyError(f"WATCHDOG_USEC={usec!r} is not a positive number of microseconds")
    return int(usec) / 1_000_000


class Watchdog:
    """Feeds the systemd watchdog only while frames arrive.

    Call `frame_seen()` for every frame taken from the camera and `tick()` regularly from the main
    loop (at least a few times per WatchdogSec). `tick()` sends WATCHDOG=1 only if a frame was seen
    within the last WatchdogSec/2, and at most every WatchdogSec/4, so a stalled camera or a hung
    loop stops the keep-alives and systemd restarts the service within WatchdogSec + WatchdogSec/2.
    """

    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic):
        self._env = dict(os.environ if env is None else env)
        self._clock = clock
        self.interval_s = watchdog_interval_s(self._env)  # WatchdogSec, None when not enabled
        self._last_frame: float | None = None
        self._last_sent: float | None = None
        self.sent = 0  # keep-alives sent, for status and tests
        self.withheld = 0  # ticks that found no recent frame

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    @property
    def window_s(self) -> float | None:
        """A frame must be this recent for a keep-alive to be sent (WatchdogSec/2)."""
        return None if self.interval_s is None else self.interval_s / 2

    def frame_seen(self) -> None:
        self._last_frame = self._clock()

    def tick(self) -> bool:
        """Send WATCHDOG=1 if frames are flowing and the last keep-alive is old enough; True if sent."""
        if self.interval_s is None:
            return False
        now = self._clock()
        window = self.interval_s / 2
        if self._last_frame is None or now - self._last_frame > window:
            self.withheld += 1
            return False
        if self._last_sent is not None and now - self._last_sent < window / 2:
            return False
        if notify("WATCHDOG=1", env=self._env):
            self._last_sent = now
            self.sent += 1
            return True
        return False
