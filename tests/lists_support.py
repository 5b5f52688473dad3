"""Shared setup for the tests of edge/lists: a central state folder, device keys, a small list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge.lists import keys
from edge.lists.central import Central
from edge.lists.config import ListsConfig
from edge.lists.store import ListStore

LISTS_YAML = """\
lists:
  - id: stolen
    name: Stolen vehicles
    category: stolen_vehicle
    action: intercept
    priority: 90
    agency: Politie
    topic: "anpr/urgent/{device}"
  - id: tax
    name: Motor vehicle tax debt
    category: tax_debt
    action: record
    priority: 10
    agency: CJIB
    timezone: Europe/Amsterdam
    windows:
      - {days: [mon, tue, wed, thu, fri], start: "07:00", end: "19:00"}
  - id: night
    name: Cargo theft night watch
    category: cargo_theft
    action: observe
    priority: 50
    agency: Politie
    timezone: UTC
    windows:
      - {days: [sat], start: "22:00", end: "04:00"}
  - id: obs
    name: Observation
    category: observation
    action: observe
    priority: 20
    agency: Politie
    active: false
  - id: old
    name: Expired area ban
    category: area_ban
    action: record
    priority: 5
    agency: Gemeente
    expires: 2026-01-01T00:00:00Z
"""

PLATES_CSV = """\
plate,list_id,reason_code,valid_until
XS-NB-23,stolen,STOLEN-1,
xs nb 23,tax,T9,2099-12-31
12-ABC-3,tax,T1,
KL-012-B,night,C7,
GB-123-X,obs,O1,
99-XX-99,old,A1,
"""

# a Friday noon in Amsterdam (11:00 UTC), inside the tax window
FRIDAY_NOON = datetime(2026, 11, 27, 11, 0, tzinfo=timezone.utc)


@dataclass
class Fleet:
    root: Path
    central: Central
    trusted: Path

    def device(self, device_id: str) -> tuple[Path, Path]:
        key, pub = self.root / f"{device_id}.key", self.root / f"{device_id}.pub"
        if not key.exists():
            keys.generate_device_key(key, pub)
        return key, pub

    def register(self, device_id: str) -> None:
        self.central.add_device(device_id, self.device(device_id)[1])

    def config(self, device_id: str = "cam1", enabled=("*",), **kw) -> ListsConfig:
        key, _ = self.device(device_id)
        return ListsConfig(enabled=list(enabled), store_dir=self.root / f"store-{device_id}", device_id=device_id,
                           device_key=key, signing_public_key=self.trusted, **kw)

    def store(self, device_id: str = "cam1", cache: bool = True) -> ListStore:
        cfg = self.config(device_id)
        if cache:
            return ListStore.from_config(cfg)
        return ListStore(device_id, keys.load_device_key(cfg.device_key), keys.load_trusted_signers(self.trusted))


def make_fleet(root: Path, devices=("cam1", "cam2")) -> Fleet:
    central = Central(root / "central")
    trusted = central.init()
    fleet = Fleet(root, central, trusted)
    for d in devices:
        fleet.register(d)
    (root / "lists.yaml").write_text(LISTS_YAML)
    (root / "plates.csv").write_text(PLATES_CSV)
    return fleet


def write_csv(path: Path, rows: list[str], remove: bool = False) -> Path:
    header = "plate,list_id" if remove else "plate,list_id,reason_code,valid_until"
    path.write_text("\n".join([header] + rows) + "\n")
    return path
