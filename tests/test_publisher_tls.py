"""TLS and authentication against a real Mosquitto with certificates made at test time.

Listeners: plain (for the test's own subscriber), TLS requiring a client certificate, and TLS
with user name/password. Good settings deliver every hit; each kind of bad setting gives an
error that names the problem, and the hits wait in the outbox.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import Broker, free_ports
from edge.outbox import Outbox
from edge.publisher import MqttConfig, MqttSetupError, Publisher, TlsConfig
from test_publisher import Collector, cfg_for, put_hits, wait_for


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(dir_: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    c, k = dir_ / f"{stem}.pem", dir_ / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    return c, k


def make_ca(dir_: Path, stem: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(_name(stem))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(dir_, stem, cert, key)
    return cert, key


def make_leaf(dir_: Path, stem: str, ca, server: bool) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return _write(dir_, stem, b.sign(ca_key, hashes.SHA256()), key)


def write_password_file(path: Path, user: str, password: str) -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.fail("mosquitto_passwd not found (it comes with the mosquitto package)")
    subprocess.run([exe, "-c", "-b", str(path), user, password], check=True, capture_output=True)
    path.chmod(0o644)


@dataclass
class TlsSetup:
    broker: Broker
    dir: Path
    tls_port: int  # TLS, client certificate required
    auth_port: int  # TLS, user name + password required


class TlsBroker(Broker):
    """Mosquitto with a plain listener plus `body` (per-listener security must come first in the file)."""

    body: str = ""
    tls_ports: tuple[int, ...] = ()

    def config_text(self) -> str:
        return (f"per_listener_settings true\nuser root\npersistence false\n"
                f"listener {self.port} {self.host}\nallow_anonymous true\n" + self.body)

    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.tls_ports)


@pytest.fixture
def tls_broker(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    d.chmod(0o755)
    ca = make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_leaf(d, "server", ca, server=True)
    make_leaf(d, "client", ca, server=False)
    make_leaf(d, "rogue-client", make_ca(d, "rogue-ca2"), server=False)
    write_password_file(d / "passwd", "unit1", "s3cret-pw")
    (d / "good.pw").write_text("s3cret-pw\n")
    (d / "bad.pw").write_text("wrong\n")
    for attempt in range(3):
        # three distinct ports; another process may still take one between here and the bind, so a
        # broker that finds its address in use is started again on fresh ports
        plain_port, tls_port, auth_port = free_ports(3)
        b = TlsBroker("127.0.0.1", plain_port, tmp_path)
        b.tls_ports = (tls_port, auth_port)
        b.body = (
            f"listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
            "require_certificate true\nallow_anonymous true\n"
            f"listener {auth_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
            f"allow_anonymous false\npassword_file {d}/passwd\n")
        try:
            b.start()
            break
        except RuntimeError as e:
            b.stop()
            if "Address already in use" not in str(e) or attempt == 2:
                raise
    yield TlsSetup(b, d, tls_port, auth_port)
    b.stop()


def run_publisher(tmp_path, cfg: MqttConfig, n: int = 10):
    ob = Outbox(tmp_path / f"o-{cfg.port}-{id(cfg)}.sqlite")
    pub = Publisher(cfg, ob, "unit-1")
    pub.start()
    return ob, pub, put_hits(ob, n, pub)


def test_client_certificate_tls_delivers(tls_broker, tmp_path):
    d = tls_broker.dir
    col = Collector(tls_broker.broker.port)
    cfg = cfg_for(tls_broker.tls_port, tls=TlsConfig(ca=d / "ca.pem", cert=d / "client.pem", key=d / "client.key"))
    ob, pub, ids = run_publisher(tmp_path, cfg)
    try:
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids)), pub.last_error
    finally:
        pub.stop()
        col.close()


def test_password_over_tls_delivers(tls_broker, tmp_path):
    d = tls_broker.dir
    col = Collector(tls_broker.broker.port)
    cfg = cfg_for(tls_broker.auth_port, tls=TlsConfig(ca=d / "ca.pem"), username="unit1", password_file=d / "good.pw")
    ob, pub, ids = run_publisher(tmp_path, cfg)
    try:
        assert wait_for(lambda: ob.depth() == 0 and col.unique() >= set(ids)), pub.last_error
    finally:
        pub.stop()
        col.close()


@pytest.mark.parametrize("case,expect", [
    ("untrusted_broker", "TLS certificate of the broker rejected"),
    ("no_client_cert", "the broker requires a client certificate"),
    ("rogue_client_cert", "rejected our client certificate"),
    ("bad_password", "wrong user name or password"),
    ("no_credentials", "requires a user name and password"),
    ("plain_to_tls_port", "if this is a TLS port, configure mqtt.tls"),
])
def test_failures_give_clear_errors_and_keep_hits(tls_broker, tmp_path, case, expect):
    d = tls_broker.dir
    cfgs = {
        "untrusted_broker": cfg_for(tls_broker.tls_port, tls=TlsConfig(ca=d / "rogue-ca.pem", cert=d / "client.pem",
                                                                       key=d / "client.key")),
        "no_client_cert": cfg_for(tls_broker.tls_port, tls=TlsConfig(ca=d / "ca.pem")),
        "rogue_client_cert": cfg_for(tls_broker.tls_port, tls=TlsConfig(ca=d / "ca.pem", cert=d / "rogue-client.pem",
                                                                        key=d / "rogue-client.key")),
        "bad_password": cfg_for(tls_broker.auth_port, tls=TlsConfig(ca=d / "ca.pem"), username="unit1",
                                password_file=d / "bad.pw"),
        "no_credentials": cfg_for(tls_broker.auth_port, tls=TlsConfig(ca=d / "ca.pem")),
        "plain_to_tls_port": cfg_for(tls_broker.tls_port, protocol="5"),
    }
    ob, pub, ids = run_publisher(tmp_path, cfgs[case], n=3)
    try:
        assert wait_for(lambda: expect in pub.last_error, timeout=10), pub.last_error
        assert not pub.connected and ob.depth() == 3
    finally:
        pub.stop(0.5)


def test_bad_local_files_fail_at_construction_with_their_path(tls_broker, tmp_path):
    d = tls_broker.dir
    ob = Outbox(tmp_path / "o.sqlite")
    cases = [
        (TlsConfig(ca=d / "missing.pem"), "missing.pem: file not found"),
        (TlsConfig(ca=d / "passwd"), "not a valid PEM CA certificate"),
        (TlsConfig(ca=d / "ca.pem", cert=d / "client.pem", key=d / "server.key"), "is the key the one of this certificate"),
    ]
    for tls, msg in cases:
        with pytest.raises(MqttSetupError, match=msg):
            Publisher(cfg_for(tls_broker.tls_port, tls=tls), ob, "unit-1")
    with pytest.raises(MqttSetupError, match="nope.pw: cannot read"):
        Publisher(cfg_for(tls_broker.auth_port, username="u", password_file=d / "nope.pw"), ob, "unit-1")
    with pytest.raises(ValueError, match="tls.cert and tls.key must be given together"):
        TlsConfig(cert=d / "client.pem")
