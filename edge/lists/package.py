"""Sealed packages: AES-256-GCM payload, content key wrapped per device with X25519, Ed25519 signature.

Layout (all integers big-endian):
    magic "ANPRLST1" | signer key id (8) | total length (u64) | header length (u32) | header JSON
    | AES-GCM ciphertext of the payload (AAD = everything before it) | Ed25519 signature (64)
The signature covers every byte before it and is checked before the header is even parsed.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.lists.keys import key_id, raw_public

MAGIC = b"ANPRLST1"
_PREFIX = struct.Struct(">8s8sQI")
SIG_LEN = 64
MIN_LEN = _PREFIX.size + SIG_LEN
MAX_HEADER = 4 * 1024 * 1024
_WRAP_INFO = b"anpr-edge lists key wrap v1|"

Kind = Literal["snapshot", "delta"]
Reason = Literal["truncated", "corrupt", "unknown_signer", "bad_signature", "not_for_device",
                 "wrong_device_key"]


class PackageError(ValueError):
    """A package that must not be used; `reason` is a short machine-readable code."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """The signed, unencrypted part: enough to order packages and find one's wrapped key."""

    kind: Kind
    version: int
    seq: int
    created: str
    recipients: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class Opened:
    header: Header
    payload: bytes


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _kek(shared: bytes, eph_pub: bytes, dev_pub: bytes, device_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=eph_pub + dev_pub,
                info=_WRAP_INFO + device_id.encode("utf-8")).derive(shared)


def seal(payload: bytes, *, kind: Kind, version: int, seq: int,
         recipients: dict[str, X25519PublicKey], signing_key: Ed25519PrivateKey,
         created: datetime | None = None) -> bytes:
    """Encrypt payload for the given devices and sign the result."""
    if not recipients:
        raise ValueError("a package needs at least one recipient device")
    content_key = AESGCM.generate_key(256)
    eph = X25519PrivateKey.generate()
    eph_pub = raw_public(eph.public_key())
    wraps = {}
    for device_id, pub in sorted(recipients.items()):
        dev_pub = raw_public(pub)
        nonce = os.urandom(12)
        kek = _kek(eph.exchange(pub), eph_pub, dev_pub, device_id)
        wraps[device_id] = {"n": _b64(nonce), "k": _b64(AESGCM(kek).encrypt(nonce, content_key, device_id.encode())),
                            "kid": key_id(pub).hex()}
    nonce = os.urandom(12)
    header = json.dumps({
        "format": 1, "kind": kind, "version": int(version), "seq": int(seq),
        "created": (created or datetime.now(timezone.utc)).isoformat(),
        "eph": _b64(eph_pub), "nonce": _b64(nonce), "recipients": wraps,
    }, sort_keys=True).encode("utf-8")
    total = _PREFIX.size + len(header) + len(payload) + 16 + SIG_LEN
    prefix = _PREFIX.pack(MAGIC, key_id(signing_key.public_key()), total, len(header)) + header
    body = b"".join((prefix, AESGCM(content_key).encrypt(nonce, payload, prefix)))
    return b"".join((body, signing_key.sign(body)))


def verify(blob: bytes, trusted: list[Ed25519PublicKey]) -> tuple[dict, int]:
    """Check length and signature, then parse the header; returns (header dict, header end)."""
    if len(blob) < MIN_LEN:
        raise PackageError("truncated", f"package is {len(blob)} bytes, shorter than the minimum {MIN_LEN}")
    magic, kid, total, hlen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise PackageError("corrupt", "not a list package (bad magic bytes)")
    if len(blob) < total:
        raise PackageError("truncated", f"package is {len(blob)} bytes, its prefix says {total}")
    if len(blob) > total:
        raise PackageError("corrupt", f"package is {len(blob)} bytes, its prefix says {total}")
    signer = next((k for k in trusted if key_id(k) == kid), None)
    if signer is None:
        raise PackageError("unknown_signer", f"package is signed by key {kid.hex()}, which is not trusted")
    try:
        view = memoryview(blob)  # no copy of a package that may be 160 MB
        signer.verify(view[-SIG_LEN:], view[:-SIG_LEN])
    except InvalidSignature:
        raise PackageError("bad_signature", f"signature by key {kid.hex()} does not verify") from None
    end = _PREFIX.size + hlen
    if hlen > MAX_HEADER or end + 16 > total - SIG_LEN:
        raise PackageError("corrupt", "header length out of range")
    try:
        header = json.loads(blob[_PREFIX.size:end])
        # a signed header that is not an object (or whose recipients are not) would raise
        # AttributeError below and in open_package, escaping every caller's PackageError handling
        if not isinstance(header, dict) or not isinstance(header.get("recipients", {}), dict):
            raise ValueError("header is not a JSON object")
        if header.get("format") != 1 or header.get("kind") not in ("snapshot", "delta"):
            raise ValueError("unknown format or kind")
        int(header["version"]), int(header["seq"])
    except (ValueError, KeyError, TypeError) as e:
        raise PackageError("corrupt", f"header unreadable: {e}") from None
    return header, end


def _header(h: dict, size: int) -> Header:
    return Header(kind=h["kind"], version=int(h["version"]), seq=int(h["seq"]), created=str(h.get("created", "")),
                  recipients=tuple(sorted(h.get("recipients", {}))), size=size)


def read_header(blob: bytes, trusted: list[Ed25519PublicKey]) -> Header:
    """Verified header only (no device key needed): for inspection and ordering."""
    h, _ = verify(blob, trusted)
    return _header(h, len(blob))


def open_package(blob: bytes, trusted: list[Ed25519PublicKey], device_id: str,
                 device_key: X25519PrivateKey) -> Opened:
    """Verify, then decrypt in memory for this device; raises PackageError."""
    h, end = verify(blob, trusted)
    wrap = h.get("recipients", {}).get(device_id)
    if wrap is None:
        raise PackageError("not_for_device", f"package is not addressed to device {device_id!r}")
    try:
        eph_pub = _unb64(h["eph"])
        dev_pub = raw_public(device_key.public_key())
        kek = _kek(device_key.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, dev_pub, device_id)
        content_key = AESGCM(kek).decrypt(_unb64(wrap["n"]), _unb64(wrap["k"]), device_id.encode())
    except InvalidTag:
        raise PackageError("wrong_device_key",
                           f"content key does not unwrap with this device key (package wrapped for key "
                           f"{wrap.get('kid', '?')}, ours is {key_id(device_key.public_key()).hex()})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise PackageError("corrupt", f"key wrap unreadable: {e}") from None
    try:
        view = memoryview(blob)
        payload = AESGCM(content_key).decrypt(_unb64(h["nonce"]), view[end:-SIG_LEN], view[:end])
    except (InvalidTag, ValueError, KeyError) as e:
        raise PackageError("corrupt", f"payload does not decrypt: {type(e).__name__}") from None
    return Opened(_header(h, len(blob)), payload)
