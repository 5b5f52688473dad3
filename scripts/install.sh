#!/usr/bin/env bash
# Installs (or removes) anpr-edge as a systemd service on Raspberry Pi OS / Debian bookworm.
#
#   sudo scripts/install.sh [install] [--start] [--keys DIR] [--wheels DIR] [--no-deps]
#   sudo scripts/install.sh uninstall [--purge]
#   scripts/install.sh --root /tmp/scratch ...   (staging/test root: no apt, no user, no systemctl)
#   scripts/install.sh --dry-run ...             (print every action, change nothing)
# Options: --keys DIR copies key files in (private 0600, public 0640); --wheels DIR installs offline
# from a wheelhouse; --no-deps leaves dependencies to the system packages; --python PATH picks the
# interpreter for the venv (default /usr/bin/python3); DESTDIR=DIR is the same as --root DIR.
#
# Idempotent: running it again brings an install up to date and never overwrites the edited
# config, the keys, the outbox or the audit trail. Layout:
#   /opt/anpr-edge/venv     virtual environment (--system-site-packages: sees the system picamera2)
#   /opt/anpr-edge/models   ONNX models from this checkout's models/
#   /etc/anpr-edge          edge.yaml (from config/edge.example.yaml), keys/ (0600/0640, owner anpr-edge)
#   /var/lib/anpr-edge      state: outbox, list packages, status.json, audit trail (owner anpr-edge)
#   /etc/systemd/system/anpr-edge.service
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USER_NAME=anpr-edge
ACTION=install
ROOT="${DESTDIR:-}"
DRY_RUN=0
PURGE=0
START=0
NO_DEPS=0
WHEELS=""
KEYS_FROM=""
PYTHON=/usr/bin/python3

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "install.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        install|uninstall) ACTION="$1" ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift ;;
        --root=*) ROOT="${1#--root=}" ;;
        --dry-run|-n) DRY_RUN=1 ;;
        --purge) PURGE=1 ;;
        --start) START=1 ;;
        --no-deps) NO_DEPS=1 ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS="$2"; shift ;;
        --keys) [ $# -ge 2 ] || die "--keys needs a directory"; KEYS_FROM="$2"; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter path"; PYTHON="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    if [ "$DRY_RUN" = 0 ]; then
        mkdir -p "$ROOT" || die "--root $ROOT cannot be created"
    fi
    if [ -d "$ROOT" ]; then
        ROOT="$(cd "$ROOT" && pwd)"
    fi
    [ "$ROOT" != "/" ] || ROOT=""
fi
[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die "--purge is only for uninstall"

OPT="$ROOT/opt/anpr-edge"
VENV="$OPT/venv"
ETC="$ROOT/etc/anpr-edge"
KEYS="$ETC/keys"
STATE="$ROOT/var/lib/anpr-edge"
UNIT="$ROOT/etc/systemd/system/anpr-edge.service"

# run: a change to files under the install root (shown, skipped with --dry-run).
run() {
    echo "+ $*"
    [ "$DRY_RUN" = 1 ] || "$@"
}
# system: a change to the running system (users, packages, services); skipped in a scratch root.
system() {
    if [ -n "$ROOT" ]; then
        echo "would (not in --root mode): $*"
    else
        run "$@"
    fi
}
# own OWNER:GROUP PATH...: ownership needs the system user, which a scratch root does not have.
own() {
    local who="$1"; shift
    system chown "$who" "$@"
}
note() { echo "== $*"; }

preflight() {
    if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo), or use --root DIR / --dry-run"
    fi
    if [ -z "$ROOT" ] && [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        . /etc/os-release
        [ "${VERSION_CODENAME:-}" = bookworm ] || echo "warning: made for Debian/Raspberry Pi OS bookworm, this is ${PRETTY_NAME:-unknown}" >&2
    fi
}

install_packages() {
    note "system packages"
    local pkgs=(python3-venv python3-pip)
    if [ -r /proc/device-tree/model ] && grep -qa "Raspberry Pi" /proc/device-tree/model; then
        pkgs+=(python3-picamera2)  # libcamera bindings come from Raspberry Pi OS, not from PyPI
    fi
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        system apt-get update
        system env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "ok: ${pkgs[*]} installed"
    fi
}

create_user() {
    note "system user $USER_NAME"
    if getent passwd "$USER_NAME" >/dev/null 2>&1; then
        echo "ok: user $USER_NAME exists"
    else
        system useradd --system --user-group --home-dir /var/lib/anpr-edge --no-create-home \
            --shell /usr/sbin/nologin --comment "anpr-edge roadside service" "$USER_NAME"
    fi
    if getent group video >/dev/null 2>&1 && ! id -nG "$USER_NAME" 2>/dev/null | grep -qw video; then
        system usermod --append --groups video "$USER_NAME"  # camera devices
    fi
}

make_dirs() {
    note "directories"
    run install -d -m 0755 "$OPT" "$OPT/models" "$OPT/docs" "$ROOT/etc/systemd/system"
    run install -d -m 0750 "$ETC" "$KEYS" "$STATE"
    own "root:$USER_NAME" "$ETC" "$KEYS"
    own "$USER_NAME:$USER_NAME" "$STATE"
}

# copy SRC DST MODE: install only when the content differs (keeps reruns quiet and mtimes stable).
copy() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        [ "$(stat -c %a "$2")" = "${3#0}" ] || run chmod "$3" "$2"
        return 0
    fi
    run install -m "$3" "$1" "$2"
}

make_venv() {
    note "virtual environment $VENV"
    [ -x "$PYTHON" ] || die "python interpreter $PYTHON not found (install python3, or give --python)"
    if [ -x "$VENV/bin/python" ] && grep -qx "include-system-site-packages = true" "$VENV/pyvenv.cfg" 2>/dev/null; then
        echo "ok: venv exists"
    else
        [ ! -e "$VENV" ] || run rm -rf "$VENV"  # a venv without system site packages cannot see picamera2
        run "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)
    [ "$NO_DEPS" = 0 ] || pip+=(--no-deps)
    if [ -n "$WHEELS" ]; then
        [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a directory"
        run "${pip[@]}" --no-index --find-links "$WHEELS" --upgrade anpr-edge
    else
        run "${pip[@]}" --upgrade "$SRC"
    fi
}

install_files() {
    note "models, docs, unit, config"
    local n=0 f
    for f in "$SRC"/models/*.onnx "$SRC"/models/*.json; do
        [ -f "$f" ] || continue
        copy "$f" "$OPT/models/$(basename "$f")" 0644
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || echo "warning: no models in $SRC/models; the service cannot start without detector.onnx and recognizer.onnx" >&2
    [ ! -f "$SRC/docs/field-guide.md" ] || copy "$SRC/docs/field-guide.md" "$OPT/docs/field-guide.md" 0644
    copy "$SRC/systemd/anpr-edge.service" "$UNIT" 0644
    [ -f "$SRC/config/edge.example.yaml" ] || die "config template $SRC/config/edge.example.yaml is missing"
    copy "$SRC/config/edge.example.yaml" "$ETC/edge.example.yaml" 0640
    if [ -f "$ETC/edge.yaml" ]; then
        echo "ok: $ETC/edge.yaml kept (compare with edge.example.yaml after upgrades)"
        # its content is kept, its mode is not: an edited copy put back with `cp` is often 0644
        [ "$(stat -c %a "$ETC/edge.yaml")" = 640 ] || run chmod 0640 "$ETC/edge.yaml"
    else
        run install -m 0640 "$SRC/config/edge.example.yaml" "$ETC/edge.yaml"
    fi
    own "root:$USER_NAME" "$ETC/edge.yaml" "$ETC/edge.example.yaml"
}

# Private keys and secrets 0600, certificates and public keys 0640; all owned by the service user.
# A .pem holding a private key (e.g. a TLS client key) is a private key, whatever its name.
key_mode() {
    if [ -f "$1" ] && grep -q "PRIVATE KEY" "$1" 2>/dev/null; then
        echo 0600
        return
    fi
    case "$1" in
        *.pub|*.pem|*.crt) echo 0640 ;;
        *) echo 0600 ;;
    esac
}

install_keys() {
    note "keys in $KEYS"
    local f
    if [ -n "$KEYS_FROM" ]; then
        [ -d "$KEYS_FROM" ] || die "--keys $KEYS_FROM is not a directory"
        for f in "$KEYS_FROM"/*; do
            [ -f "$f" ] || continue
            copy "$f" "$KEYS/$(basename "$f")" "$(key_mode "$f")"
        done
    fi
    if [ ! -f "$KEYS/device.key" ]; then
        # The device's private key is made here and never leaves the unit; central gets device.pub.
        system "$VENV/bin/anpr-edge" lists keygen-device --key "$KEYS/device.key" --pub "$KEYS/device.pub"
    fi
    for f in "$KEYS"/*; do
        [ -f "$f" ] || continue
        local mode; mode="$(key_mode "$f")"
        [ "$(stat -c %a "$f")" = "${mode#0}" ] || run chmod "$mode" "$f"
        own "$USER_NAME:$USER_NAME" "$f"
    done
}

enable_service() {
    note "service"
    system systemctl daemon-reload
    system systemctl enable anpr-edge.service
    if [ "$START" = 1 ]; then
        system "$VENV/bin/anpr-edge" check-config "$ETC/edge.yaml"
        system systemctl restart anpr-edge.service
    else
        echo "next: edit $ETC/edge.yaml, run 'anpr-edge check-config $ETC/edge.yaml', then 'systemctl start anpr-edge'"
    fi
}

do_install() {
    preflight
    if [ -n "$ROOT" ]; then
        echo "scratch root $ROOT: no packages, user, ownership or systemctl changes (printed as 'would')"
    fi
    install_packages
    create_user
    make_dirs
    make_venv
    install_files
    install_keys
    enable_service
    note "installed${ROOT:+ under $ROOT}"
}

do_uninstall() {
    preflight
    note "service"
    system systemctl disable --now anpr-edge.service || true  # already gone is fine
    [ ! -e "$UNIT" ] || run rm -f "$UNIT"
    system systemctl daemon-reload
    note "program files"
    [ ! -e "$OPT" ] || run rm -rf "$OPT"
    if [ "$PURGE" = 1 ]; then
        note "purge: config, keys, state (outbox with unsent hits, audit trail)"
        [ ! -e "$ETC" ] || run rm -rf "$ETC"
        [ ! -e "$STATE" ] || run rm -rf "$STATE"
        if [ -n "$ROOT" ] || getent passwd "$USER_NAME" >/dev/null 2>&1; then
            system userdel "$USER_NAME"
        fi
    else
        echo "kept: $ETC (config, keys) and $STATE (outbox, audit trail); --purge removes them"
    fi
    note "uninstalled${ROOT:+ under $ROOT}"
}

case "$ACTION" in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
