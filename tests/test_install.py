"""Roadside install: the systemd unit's keys and `systemd-analyze verify`, and scripts/install.sh
run for real (venv, pip, files, permissions) in a scratch root: install twice, dry run, uninstall."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"
UNIT = ROOT / "systemd" / "anpr-edge.service"
BASE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def unit_entries(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit by `Section.Key`; repeated keys keep every value, in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(entries: dict[str, list[str]], key: str) -> str:
    values = entries.get(key)
    assert values is not None, f"{key} missing from the unit"
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def test_unit_keys():
    u = unit_entries(UNIT.read_text())
    assert one(u, "Service.Type") == "notify"
    assert one(u, "Service.NotifyAccess") == "main"
    watchdog = one(u, "Service.WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and 30 < int(watchdog[:-1]) <= 300, \
        "WatchdogSec must exceed the camera reconnect backoff (30 s) yet catch a frozen camera"
    # the daemon exits 0 on SIGTERM: with on-failure a stray kill left the unit down until a reboot
    assert one(u, "Service.Restart") == "always"
    # temporary files (onnxruntime's .ses per model load) on RAM, removed at every stop, not on the SD card
    assert one(u, "Service.RuntimeDirectory") == "anpr-edge" and one(u, "Service.RuntimeDirectoryMode") == "0700"
    assert "TMPDIR=/run/anpr-edge" in u["Service.Environment"]
    assert re.fullmatch(r"\d+(%|[MG])", one(u, "Service.MemoryMax")), "a leak must end in a restart"
    assert one(u, "Unit.StartLimitIntervalSec") == "0", "a roadside unit must never stop restarting"
    assert one(u, "Service.User") == one(u, "Service.Group") == "anpr-edge"
    assert one(u, "Service.StateDirectory") == "anpr-edge"
    assert one(u, "Service.ExecStart") == "/opt/anpr-edge/venv/bin/anpr-edge run --config /etc/anpr-edge/edge.yaml"
    assert one(u, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(u, "Service.StandardOutput") == one(u, "Service.StandardError") == "journal"
    assert one(u, "Service.LimitCORE") == "0" and one(u, "Service.MemorySwapMax") == "0", \
        "memory holding plates and decrypted lists must not reach a core dump or swap"
    assert one(u, "Service.ProtectSystem") == "strict"
    for key in ("PrivateTmp", "NoNewPrivileges", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality", "RestrictNamespaces"):
        assert one(u, f"Service.{key}") == "yes", key
    assert one(u, "Service.CapabilityBoundingSet") == "" and one(u, "Service.AmbientCapabilities") == ""
    assert one(u, "Service.DevicePolicy") == "closed"
    assert sorted(u["Service.DeviceAllow"]) == ["char-dma_heap rw", "char-media rw", "char-video4linux rw"]
    assert "PrivateDevices" not in {k.split(".", 1)[1] for k in u}, "PrivateDevices would hide the camera"
    assert "ReadWritePaths" not in {k.split(".", 1)[1] for k in u}, "only the StateDirectory is writable"
    assert one(u, "Install.WantedBy") == "multi-user.target"


def test_script_syntax():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning", str(SCRIPT)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def run_script(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"install.sh {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A real wheel of this checkout, built offline (the field's `--wheels` path from a USB stick)."""
    src = tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "edge", src / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheels")
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)]
    # offline with this venv's setuptools; where that is too old (a fresh CI venv), the isolated build
    # fetches the pyproject's build requirements instead
    r = subprocess.run([*cmd, "--no-build-isolation", "--no-index"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r2.returncode == 0, f"cannot build the wheel:\n{r.stderr}\n{r2.stderr}"
    assert list(out.glob("anpr_edge-*.whl"))
    return out


@pytest.fixture
def key_files(tmp_path) -> Path:
    """Key material as a technician brings it (real keys; the modes are deliberately too open)."""
    d = tmp_path / "usb-keys"
    d.mkdir()
    (d / "device.key").write_bytes(X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / "signer.pub").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (d / "mqtt.password").write_text("s3cret-for-test\n")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (d / "client-key.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    for f in d.iterdir():
        f.chmod(0o666)
    return d


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root: (mode, content hash or 'dir'/'link'), skipping byte-code caches."""
    out = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        rel = str(p.relative_to(root))
        st = p.lstat()
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        out[rel] = (oct(st.st_mode & 0o7777), kind)
    return out


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def install_args(root: Path, wheels: Path, *extra: str) -> list[str]:
    # --no-deps: the scratch venv has no network; the system site packages stand in for Debian's.
    return ["--root", str(root), "--wheels", str(wheels), "--no-deps", "--python", BASE_PYTHON, *extra]


def test_install_twice_then_uninstall(tmp_path, wheelhouse, key_files):
    root = tmp_path / "root"
    first = run_script(*install_args(root, wheelhouse, "--keys", str(key_files)))
    out = first.stdout
    # system changes are printed, not done
    assert "would (not in --root mode): useradd --system" in out
    assert "would (not in --root mode): systemctl enable anpr-edge.service" in out
    assert "would (not in --root mode): chown anpr-edge:anpr-edge" in out

    opt, etc, state = root / "opt/anpr-edge", root / "etc/anpr-edge", root / "var/lib/anpr-edge"
    assert (root / "etc/systemd/system/anpr-edge.service").read_text() == UNIT.read_text()
    assert (etc / "edge.yaml").read_text() == (ROOT / "config/edge.example.yaml").read_text()
    assert mode(etc) == mode(etc / "keys") == mode(state) == 0o750
    assert mode(etc / "edge.yaml") == 0o640
    assert mode(etc / "keys/device.key") == mode(etc / "keys/mqtt.password") == 0o600
    assert mode(etc / "keys/signer.pub") == mode(etc / "keys/ca.pem") == 0o640
    assert mode(etc / "keys/client-key.pem") == 0o600, "a private key in a .pem file is still a private key"
    assert (etc / "keys/device.key").read_bytes() == (key_files / "device.key").read_bytes()
    assert "keygen-device" not in out, "a device key was given: none may be generated"
    # the venv sees the system site packages (picamera2 on a Pi) and holds the installed package
    cfg = (opt / "venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    assert (opt / "venv/bin/anpr-edge").exists()
    probe = subprocess.run([str(opt / "venv/bin/python"), "-c",
                            "import edge, edge.sdnotify; print(edge.__version__, edge.sdnotify.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert str(opt / "venv") in probe.stdout, "edge must come from the installed venv, not the checkout"
    if (ROOT / "docs/field-guide.md").exists():
        assert (opt / "docs/field-guide.md").read_text() == (ROOT / "docs/field-guide.md").read_text()
    for m in (ROOT / "models").glob("*.onnx"):
        assert (opt / "models" / m.name).read_bytes() == m.read_bytes()

    # the technician edits the config and adds state; a second install changes nothing of it
    (etc / "edge.yaml").write_text("device: {id: nl-a13-km12-01}\n")
    (state / "audit.jsonl").write_text("{}\n")
    before = tree(root)
    mtimes = {p: p.stat().st_mtime_ns for p in etc.rglob("*")}
    second = run_script(*install_args(root, wheelhouse, "--keys", str(key_files)))
    assert tree(root) == before, "a second install must leave an up-to-date install exactly as it was"
    assert {p: p.stat().st_mtime_ns for p in etc.rglob("*")} == mtimes
    assert "edge.yaml kept" in second.stdout and "ok: venv exists" in second.stdout

    # the edited config put back too open (`cp` of a new file: 0644): the next install closes it again
    (etc / "edge.yaml").chmod(0o644)
    run_script(*install_args(root, wheelhouse, "--keys", str(key_files)))
    assert mode(etc / "edge.yaml") == 0o640 and (etc / "edge.yaml").read_text() == "device: {id: nl-a13-km12-01}\n"
    assert tree(root) == before

    # a dry run changes nothing and says what it would do
    dry = run_script(*install_args(root, wheelhouse, "--dry-run"))
    assert tree(root) == before and "+ install -d" in dry.stdout

    # uninstall keeps config, keys and state; a second uninstall is fine too
    for _ in range(2):
        gone = run_script("uninstall", "--root", str(root))
        assert not opt.exists() and not (root / "etc/systemd/system/anpr-edge.service").exists()
        assert (etc / "keys/device.key").exists() and (state / "audit.jsonl").exists()
        assert "would (not in --root mode): systemctl disable --now anpr-edge.service" in gone.stdout
    purge = run_script("uninstall", "--purge", "--root", str(root))
    assert not etc.exists() and not state.exists()
    assert "would (not in --root mode): userdel anpr-edge" in purge.stdout


def test_dry_run_creates_nothing(tmp_path, wheelhouse):
    root = tmp_path / "never"
    r = run_script(*install_args(root, wheelhouse, "--dry-run"))
    assert not root.exists()
    assert f"+ {BASE_PYTHON} -m venv --system-site-packages {root}/opt/anpr-edge/venv" in r.stdout
    assert f"+ install -m 0644 {SCRIPT.parent.parent}/systemd/anpr-edge.service {root}/etc/systemd/system" in r.stdout


def test_bad_arguments_are_named(tmp_path):
    r = run_script("--frobnicate", check=False)
    assert r.returncode == 2 and "unknown argument '--frobnicate'" in r.stderr
    r = run_script("install", "--purge", "--root", str(tmp_path), check=False)
    assert r.returncode == 2 and "--purge is only for uninstall" in r.stderr
    r = run_script("--root", str(tmp_path / "r"), "--wheels", str(tmp_path / "none"), "--no-deps",
                   "--python", BASE_PYTHON, check=False)
    assert r.returncode == 2 and "--wheels" in r.stderr and "is not a directory" in r.stderr


def test_systemd_analyze_verify(tmp_path, wheelhouse):
    """`systemd-analyze verify` on the installed unit (its ExecStart pointed at the scratch install)."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install -y systemd provides it); "
                    "the unit's keys are still checked by test_unit_keys")
    root = tmp_path / "root"
    run_script(*install_args(root, wheelhouse))
    installed = root / "opt/anpr-edge/venv/bin/anpr-edge"
    unit = tmp_path / "anpr-edge.service"
    text = (root / "etc/systemd/system/anpr-edge.service").read_text()
    assert text.count("/opt/anpr-edge/venv/bin/anpr-edge") == 1
    unit.write_text(text.replace("/opt/anpr-edge/venv/bin/anpr-edge", str(installed)))
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", f"systemd-analyze verify: {r.stdout}{r.stderr}"
    sec = subprocess.run([exe, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for anpr-edge.service: (\d+\.\d+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    assert float(m.group(1)) <= 3.0, f"hardening regressed: exposure {m.group(1)}\n{sec.stdout}"


def test_dry_run_on_the_real_system_prints_the_system_steps():
    """Without --root the same steps act on the system: a dry run shows them and changes nothing."""
    watched = [Path("/opt/anpr-edge"), Path("/etc/anpr-edge"), Path("/var/lib/anpr-edge"),
               Path("/etc/systemd/system/anpr-edge.service")]
    before = [p.exists() for p in watched]
    r = run_script("--dry-run", "--python", BASE_PYTHON)
    assert [p.exists() for p in watched] == before
    out = r.stdout
    assert "would (not in --root mode)" not in out
    assert "+ chown anpr-edge:anpr-edge /var/lib/anpr-edge" in out
    assert f"+ {BASE_PYTHON} -m venv --system-site-packages /opt/anpr-edge/venv" in out or "ok: venv exists" in out
    assert "+ install -m 0644 " in out and " /etc/systemd/system/anpr-edge.service" in out
    assert "+ systemctl daemon-reload" in out and "+ systemctl enable anpr-edge.service" in out
    un = run_script("uninstall", "--purge", "--dry-run")
    assert [p.exists() for p in watched] == before
    assert "+ systemctl disable --now anpr-edge.service" in un.stdout
