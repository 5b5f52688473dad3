"""The `lists:` section of the unit's configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from edge.configbase import Section


class ListsConfig(Section):
    enabled: list[str] = Field(default_factory=list, description=(
        "List ids this deployment may match against ('select before you collect'); ['*'] = every list in the "
        "package. Lists not named here never produce hits. Empty = no hits at all."))
    store_dir: Path = Field(Path("/var/lib/anpr-edge/lists"), description=(
        "Folder where the sealed (encrypted, signed) snapshot and deltas are cached as received."))
    device_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description=(
        "Device id under which packages are addressed to this unit (normally equal to device.id)."))
    device_key: Path = Field(description="This unit's X25519 private key file (PEM, mode 0600).")
    signing_public_key: Path = Field(description=(
        "Trusted Ed25519 public key(s) of the central list signer (PEM; several blocks during a key rotation)."))
    sync_topic: str = Field("anpr/lists/{device}", min_length=1, description=(
        "MQTT topic prefix for list sync; '{device}' is replaced by device_id. Snapshots arrive retained on "
        "<prefix>/snapshot, deltas on <prefix>/delta."))
    expiry_check_s: float = Field(60.0, gt=0, description="How often expired lists are checked and flagged, seconds.")
    lookalike_below: float = Field(0.99, ge=0.0, le=1.0, description=(
        "Look-alike characters (0/O/D, 1/I, 8/B, 6/G, ...) are swapped when matching only where the passage's "
        "character confidence is below this. Higher finds more misread plates and reports more vehicles that "
        "are on no list; 0 = exact and alternative reads only."))

    @field_validator("enabled")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for item in v:
            if item != "*" and not (item and all(c.isalnum() or c in "._-" for c in item)):
                raise ValueError(f"list id {item!r} must be letters, digits, '.', '_' or '-', or '*'")
        return v

    @field_validator("sync_topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if "#" in v or "+" in v:
            raise ValueError("sync_topic must not contain MQTT wildcards")
        if v.replace("{device}", "").count("{") or v.replace("{device}", "").count("}"):
            raise ValueError("sync_topic supports only the {device} placeholder")
        return v

    def resolved(self, base: Path) -> "ListsConfig":
        """Relative paths taken from the config file's folder."""
        def fix(p: Path) -> Path:
            return p if p.is_absolute() else base / p
        return self.model_copy(update={"store_dir": fix(self.store_dir), "device_key": fix(self.device_key),
                                       "signing_public_key": fix(self.signing_public_key)})

    def topic_prefix(self) -> str:
        return self.sync_topic.replace("{device}", self.device_id).rstrip("/")
