"""Key files: Ed25519 (central signing) and X25519 (device decryption), as PEM.

Private keys are written with mode 0600. A trusted-signers file may hold several public keys
(one PEM block each) so the signing key can be rotated without a flag day.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

log = logging.getLogger(__name__)
_PEM_END = b"-----END PUBLIC KEY-----"


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or of the wrong kind."""


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    """8-byte id of a public key (first bytes of SHA-256 of its raw form)."""
    return hashlib.sha256(raw_public(key)).digest()[:8]


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    mode = 0o600 if private else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a temporary file left over by a crash keeps its old mode otherwise
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: no half-written key file left beside the real one
        tmp.unlink(missing_ok=True)
        raise


def _private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(key) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_signing_key(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    _write(Path(private_path), _private_pem(key), private=True)
    _write(Path(public_path), _public_pem(key.public_key()), private=False)
    return key


def generate_device_key(private_path: Path, public_path: Path) -> X25519PrivateKey:
    key = X25519PrivateKey.generate()
    _write(Path(private_path), _private_pem(key), private=True)
    _write(Path(public_path), _public_pem(key.public_key()), private=False)
    return key


def write_public_keys(path: Path, keys: list[Ed25519PublicKey | X25519PublicKey]) -> None:
    _write(Path(path), b"".join(_public_pem(k) for k in keys), private=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read {what} file: {e.strerror}") from None


def _load_private(path: Path, kind, what: str):
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({what})") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"{path}: expected a {what}, found a {type(key).__name__}")
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    return _load_private(path, Ed25519PrivateKey, "Ed25519 signing private key")


def load_device_key(path: Path) -> X25519PrivateKey:
    key = _load_private(path, X25519PrivateKey, "X25519 device private key")
    if Path(path).stat().st_mode & 0o077:
        log.warning("device key %s is readable by other users; chmod 600 it", path)
    return key


def _load_publics(path: Path, kind, what: str) -> list:
    data = _read(path, what)
    blocks = [b + _PEM_END for b in data.split(_PEM_END) if b.strip()]
    if b"-----BEGIN PUBLIC KEY-----" not in data or not blocks:
        raise KeyFileError(f"{path}: no PEM public key in {what} file")
    keys = []
    for n, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_public_key(block.strip() + b"\n")
        except ValueError:
            raise KeyFileError(f"{path}: PEM block {n} is not a readable public key") from None
        if not isinstance(key, kind):
            raise KeyFileError(f"{path}: PEM block {n} is a {type(key).__name__}, expected {what}")
        keys.append(key)
    return keys


def load_trusted_signers(path: Path) -> list[Ed25519PublicKey]:
    """All Ed25519 public keys in the file (one or more PEM blocks)."""
    return _load_publics(path, Ed25519PublicKey, "Ed25519 signing public key")


def load_device_public(path: Path) -> X25519PublicKey:
    keys = _load_publics(path, X25519PublicKey, "X25519 device public key")
    if len(keys) != 1:
        raise KeyFileError(f"{path}: expected exactly one device public key, found {len(keys)}")
    return keys[0]
