"""List definitions: what a reference list is, and when it may produce hits.

Lists are defined centrally (YAML) and travel inside the sealed package, so the device
needs no list configuration besides which list ids are enabled on this deployment.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.topics import check_topic_template

CATEGORIES = (
    "fine", "tax_debt", "stolen_vehicle", "stolen_plate", "warrant", "driving_ban",
    "area_ban", "mobile_banditry", "cargo_theft", "observation",
)
Category = Literal[
    "fine", "tax_debt", "stolen_vehicle", "stolen_plate", "warrant", "driving_ban",
    "area_ban", "mobile_banditry", "cargo_theft", "observation",
]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LIST_ID_RE = r"^[A-Za-z0-9._-]{1,64}$"
REASON_RE = re.compile(r"^[A-Za-z0-9._-]{0,32}$")
EPOCH = date(1970, 1, 1)


def _hhmm(v: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", v)
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and m.group(2) != "00"):
        raise ValueError(f"time {v!r} is not HH:MM (00:00 to 24:00)")
    return time(0, 0) if v in ("24:00",) else time(int(m.group(1)), int(m.group(2)))


class TimeWindow(BaseModel):
    """A weekly window in the list's time zone; end before start means it runs past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = Field(
        DAYS, description="Days on which the window starts.")
    start: str = Field("00:00", description="Local start time HH:MM.")
    end: str = Field("24:00", description="Local end time HH:MM (24:00 = end of day).")

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, v: str) -> str:
        _hhmm(v)
        return v

    def _minutes(self) -> tuple[int, int]:
        s = _hhmm(self.start)
        e = 24 * 60 if self.end == "24:00" else _hhmm(self.end).hour * 60 + _hhmm(self.end).minute
        return s.hour * 60 + s.minute, e

    def contains(self, local: datetime) -> bool:
        """True when the local wall-clock time falls in this window."""
        start, end = self._minutes()
        minute = local.hour * 60 + local.minute
        today = DAYS[local.weekday()]
        yesterday = DAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in self.days and start <= minute < end
        if start == end:  # a full 24 h starting at start
            return (today in self.days and minute >= start) or (yesterday in self.days and minute < start)
        return (today in self.days and minute >= start) or (yesterday in self.days and minute < end)


class ListDef(BaseModel):
    """One reference list as the central side defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=LIST_ID_RE, description="Stable list id, used in deltas and device configs.")
    name: str = Field(min_length=1, max_length=200, description="Human-readable name.")
    category: Category = Field(description="What the vehicles on this list are wanted for.")
    action: Literal["intercept", "observe", "record"] = Field(description="What officers do on a hit.")
    priority: int = Field(0, ge=0, le=1000, description="Higher is more urgent.")
    agency: str = Field("", max_length=200, description="Owning agency.")
    topic: str = Field("", max_length=300, description="MQTT topic template for this list's hits ('' = default).")
    active: bool = Field(True, description="Inactive lists never produce hits.")
    timezone: str = Field("Europe/Amsterdam", description="IANA time zone of the active windows.")
    windows: tuple[TimeWindow, ...] = Field((), description="Weekly active windows; empty = always.")
    expires: datetime | None = Field(None, description="After this instant the list produces no hits.")

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, v: str) -> str:
        """A bad template is refused where the list is defined, not at its first hit."""
        return check_topic_template(v) if v else v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _aware_expiry(self):
        if self.expires is not None and self.expires.tzinfo is None:
            raise ValueError("expires needs a time zone, e.g. 2027-01-01T00:00:00Z")
        return self

    def is_expired(self, now_utc: datetime) -> bool:
        return self.expires is not None and now_utc >= self.expires

    def is_live(self, now_utc: datetime) -> bool:
        """Active, not expired, and inside one of its windows (if it has any)."""
        if not self.active or self.is_expired(now_utc):
            return False
        if not self.windows:
            return True
        local = now_utc.astimezone(ZoneInfo(self.timezone))
        return any(w.contains(local) for w in self.windows)


class ListFile(BaseModel):
    """The central lists definition file: `lists: [...]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lists: tuple[ListDef, ...] = Field(min_length=1, description="The reference lists.")

    @model_validator(mode="after")
    def _unique(self):
        seen: set[str] = set()
        for d in self.lists:
            if d.id in seen:
                raise ValueError(f"list id {d.id!r} is defined twice")
            seen.add(d.id)
        return self


def day_number(d: date) -> int:
    """Days since 1970-01-01 as stored per entry (0 means no per-entry expiry)."""
    return (d - EPOCH).days


def today_number(now_utc: datetime) -> int:
    return day_number(now_utc.astimezone(timezone.utc).date())


def day_from_number(n: int) -> date:
    return EPOCH + timedelta(days=n)
