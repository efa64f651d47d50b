#!/usr/bin/env bash
# Vectis worker installer: turns a fresh Linux server into a Vectis worker.
#
#   export VECTIS_TOKEN=... VECTIS_DASHBOARD_URL=https://<dashboard>
#   curl -fsSL "$VECTIS_DASHBOARD_URL/install.sh" | sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash
#   curl -fsSL https://<dashboard>/install.sh | sudo bash -s -- --uninstall [--purge]
#   sudo --preserve-env=... bash scripts/install.sh --package vectis-X-py3-none-any.whl
#   sudo bash scripts/install.sh [--uninstall [--purge]] [--help]
#
# Served by a dashboard, the script installs that dashboard's own build: the SERVED_* lines
# below are filled in then (the wheel's path and SHA-256, the dependency constraints). From a
# checkout they are empty, and --package / VECTIS_PACKAGE says what to install. No install
# ever asks a package index for 'vectis': on the public index that name is another project's.
#
# Everything runs inside main(), called on the last line, so that a script piped into bash is
# read completely before any command runs (and no command can swallow the rest of it).
set -euo pipefail

readonly PROG="vectis-install"
readonly ETC_DIR="/etc/vectis"
readonly VENV="/opt/vectis"
readonly UNIT_NAME="vectis-worker.service"
readonly UNIT="/etc/systemd/system/${UNIT_NAME}"
readonly BIN_DIR="/usr/local/bin"
readonly COMMANDS=(vectis vectis-status vectis-sync)

# Filled in by the dashboard that serves this script (GET /install.sh); empty in a checkout.
SERVED_FROM=""
SERVED_VERSION=""
SERVED_WHEEL=""
SERVED_WHEEL_SHA256=""
SERVED_CONSTRAINTS=""
SERVED_CONSTRAINTS_SHA256=""

usage() {
  cat <<'EOF'
Usage: install.sh [--package PATH [--sha256 HEX]] [--label KEY=VALUE ...]
                  [--uninstall [--purge]] [--help]

Install (or upgrade) the Vectis worker on this server. Run as root:

  export VECTIS_TOKEN=<enrollment token> VECTIS_DASHBOARD_URL=https://<dashboard>
  curl -fsSL "$VECTIS_DASHBOARD_URL/install.sh" \
    | sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash
  (the token passes through the environment: it never shows in the process list)

Uninstall, from the dashboard or a checkout:

  curl -fsSL https://<dashboard>/install.sh | sudo bash -s -- --uninstall [--purge]
  sudo bash scripts/install.sh --uninstall [--purge]

What is installed: the script a dashboard serves installs that dashboard's own build (a wheel
of the version it runs, checked against the SHA-256 written into the script, with the
dependencies pinned to the versions the dashboard runs with); re-running it upgrades the
worker to the dashboard's version. From a checkout, --package (or VECTIS_PACKAGE) is needed.
The index is never asked for a package named 'vectis'.

  (no option)   create the system user, /etc/vectis (0700), the venv /opt/vectis, the
                worker secret (only if missing), worker.conf, the systemd unit
                vectis-worker.service and the links in /usr/local/bin; start the service;
                register with the dashboard when VECTIS_TOKEN is set
  --uninstall   stop and remove the service, the links and the venv; keep /etc/vectis
  --purge       with --uninstall: remove /etc/vectis (the secret and state) too
  --package P   what to install (as VECTIS_PACKAGE); --sha256 HEX checks it (as
                VECTIS_PACKAGE_SHA256)
  --label K=V   a label to register with (repeatable; as VECTIS_LABELS), e.g. role=edge
  -h, --help    show this help

Environment:
  VECTIS_TOKEN          enrollment token; without it the worker stays 'pending'
  VECTIS_DASHBOARD_URL  the dashboard's URL (kept in /etc/vectis/worker.conf); needed with
                        a token unless worker.conf already has one; a served script
                        downloads the wheel from it (else from where it was served)
  VECTIS_PUBLIC_IP      this server's public IP, used to register and kept in the unit
                        (Environment=) for the daemon's heartbeats; a re-run without it
                        keeps the unit's value; 'detect' drops it (detected when unset)
  VECTIS_WORKER_PORT    the port the worker listens on (kept in worker.conf; default 3000)
  VECTIS_ALLOW_PLAIN_HTTP=1
                        send the token and heartbeats to an http:// dashboard URL that is
                        not this machine (in clear); kept in the unit for the daemon, a
                        re-run without it keeps the unit's value, 0 drops it
  VECTIS_DASHBOARD_CA   a PEM file of CA certificates that an https:// dashboard's
                        certificate is checked against (a private CA or a self-signed one)
                        instead of the system's; kept in the unit like the above, 'none'
                        drops it
  VECTIS_LABELS         labels to register with, k=v,k2=v2 (--label wins; kept in
                        worker.conf; with sudo: --preserve-env=...,VECTIS_LABELS)
  VECTIS_PACKAGE        what to install: a vectis wheel (a path, or an http(s) URL with
                        VECTIS_PACKAGE_SHA256) or a source tree; default: the dashboard's
                        build when served, none from a checkout (then it is required)
  VECTIS_PACKAGE_SHA256 the wheel's SHA-256 (64 hex digits): any other file is refused
  VECTIS_SYSTEM_PACKAGES=1
                        take vectis's dependencies from VECTIS_PYTHON's own site-packages
                        (e.g. distro packages) instead of the index: nothing but vectis
                        itself is installed into the venv (pip --no-deps)
  VECTIS_PYTHON         the Python 3.11+ that makes the venv (default: python3)
  VECTIS_USER           the service user (default: vectis)
  VECTIS_ROOT           install under this root instead of / (for tests: no user is created,
                        no systemctl is run; paths written into the unit and links stay real)

Exit codes: 0 installed (registered, or pending without a token); 1 a step failed and
nothing half-done was left; 2 bad usage; 3 installed, but registration failed
('vectis sync' retries).
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# Rollback state: what this run created or replaced, undone in reverse if a step fails.
STEP=""
STARTED=0
INSTALLED=0
WORK=""
CREATED=()         # paths (under the root) this run created
RESTORE=()         # "backup|original" pairs (under the root) to move back
SERVICE_TOUCHED=0  # this run changed the running service
WAS_ENABLED=0
WAS_ACTIVE=0

step() {
  STEP="$1"
  say "$1"
}

# shellcheck disable=SC2317  # reached through on_exit, from the EXIT trap
rollback() {
  local i path pair
  if [ "$SERVICE_TOUCHED" -eq 1 ]; then
    systemctl stop "$UNIT_NAME" >/dev/null 2>&1 || true
    [ "$WAS_ENABLED" -eq 1 ] || systemctl disable "$UNIT_NAME" >/dev/null 2>&1 || true
  fi
  for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do
    path="${CREATED[i]}"
    rm -rf -- "$path"
  done
  for ((i = ${#RESTORE[@]} - 1; i >= 0; i--)); do
    pair="${RESTORE[i]}"
    rm -rf -- "${pair#*|}"
    mv -- "${pair%%|*}" "${pair#*|}"
  done
  # A config dir this run made goes only if nothing was written into it (the secret stays).
  [ "$NEW_ETC" -eq 0 ] || rmdir -- "$R$ETC_DIR" 2>/dev/null || true
  if [ "$SERVICE_TOUCHED" -eq 1 ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    [ "$WAS_ACTIVE" -eq 0 ] || systemctl restart "$UNIT_NAME" >/dev/null 2>&1 || true
  fi
}

# shellcheck disable=SC2317  # the EXIT trap
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ "$STARTED" -eq 1 ] && [ "$INSTALLED" -eq 0 ]; then
    warn "step '${STEP}' failed (exit ${rc}); undoing what this run changed"
    rollback
    warn "nothing was left half-done: the venv, unit and links are as before this run;"
    warn "${ETC_DIR} (secret and state) is kept. Fix the cause above and run install.sh again."
    rc=1
  elif [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$INSTALLED" -eq 1 ]; then
    warn "step '${STEP}' failed (exit ${rc}) after the install was complete;"
    warn "check 'vectis status', fix the cause above and run install.sh again."
    rc=1
  fi
  [ -z "$WORK" ] || rm -rf -- "$WORK"
  exit "$rc"
}

fail() {
  warn "$*"
  exit 1
}

# --- checks ---------------------------------------------------------------------------------

check_root() {
  [ "$(uname -s)" = "Linux" ] || fail "this installer supports Linux only (found $(uname -s))"
  [ "$(id -u)" -eq 0 ] || fail "run as root, e.g.: sudo bash install.sh"
}

readonly OUTER_PIP_PY='
import sys, pip
sys.exit(tuple(int(part) for part in pip.__version__.split(".")[:2]) < (22, 3))
'

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 ||
    fail "'$PYTHON' not found: install Python 3.11 or newer, or set VECTIS_PYTHON"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "Python 3.11 or newer is needed; '$PYTHON' is $("$PYTHON" -V 2>&1)" \
      "(set VECTIS_PYTHON to a newer one)"
  if [ "$SANDBOX" -eq 0 ]; then
    case "$(realpath -- "$(command -v "$PYTHON")")" in
      /root/* | /home/*)
        fail "'$PYTHON' lives under /root or /home, which the service cannot see" \
          "(ProtectHome=yes): set VECTIS_PYTHON to a system-wide Python 3.11+"
        ;;
    esac
  fi
  "$PYTHON" -c 'import venv' >/dev/null 2>&1 ||
    fail "'$PYTHON' has no venv module: install it (Debian/Ubuntu: python3-venv)"
  # A pip that can install into another interpreter (22.3+) spares the venv a pip of its own.
  if "$PYTHON" -c "$OUTER_PIP_PY" >/dev/null 2>&1; then
    OUTER_PIP=1
  else
    "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 ||
      fail "'$PYTHON' has neither pip nor ensurepip: install python3-venv (or python3-pip)"
  fi
}

venv_pip() {
  if [ "$OUTER_PIP" -eq 1 ]; then
    "$PYTHON" -m pip --python "$R$VENV/bin/python" "$@"
  else
    "$R$VENV/bin/python" -m pip "$@"
  fi
}

check_common() {
  case "$ROOT" in
    /*) ;;
    *) fail "VECTIS_ROOT must be an absolute path (got '$ROOT')" ;;
  esac
  [[ "$SVC_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] ||
    fail "VECTIS_USER must be a plain user name (got '$SVC_USER')"
}

# Print a top-level key of an existing worker.conf ("" when the file or key is missing); a
# file that does not parse prints nothing either: the configure step reports it, with rollback.
readonly CONF_KEY_PY='
import sys, tomllib
try:
    with open(sys.argv[1], "rb") as f:
        value = tomllib.load(f).get(sys.argv[2])
except (OSError, ValueError):
    value = None
print("" if value is None else value)
'

conf_value() {
  "$PYTHON" -c "$CONF_KEY_PY" "$R$ETC_DIR/worker.conf" "$1"
}

# The rule `vectis` applies to an explicit address: any unicast IPv4 or IPv6, printed canonically.
readonly CHECK_IP_PY='
import ipaddress, sys
try:
    ip = ipaddress.ip_address(sys.argv[1])
except ValueError:
    sys.exit("not an IP address")
if ip.version == 6 and ip.scope_id is not None:
    sys.exit("an address with a zone index")
if ip.version == 6 and ip.ipv4_mapped is not None:
    ip = ip.ipv4_mapped
if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
    sys.exit("not a unicast address")
print(ip)
'

# VECTIS_PUBLIC_IP, else the installed unit's (a re-run keeps it), else none ('detect': none).
# The daemon reads it from the unit on every heartbeat; register and status get it exported.
check_public_ip() {
  local given="${VECTIS_PUBLIC_IP:-}" from="VECTIS_PUBLIC_IP" why
  if [ -z "$given" ] && [ -f "$R$UNIT" ]; then
    given="$(sed -n 's/^Environment=VECTIS_PUBLIC_IP=//p' "$R$UNIT" | tail -n 1)"
    from="VECTIS_PUBLIC_IP in ${UNIT} (set VECTIS_PUBLIC_IP to replace it)"
  fi
  PUBLIC_IP=""
  if [ -n "$given" ] && [ "$given" != detect ]; then
    why="$("$PYTHON" -c "$CHECK_IP_PY" "$given" 2>&1)" ||
      fail "$from must be a unicast IPv4 or IPv6 address, or 'detect' (got '$given': $why)"
    PUBLIC_IP="$why"
  fi
  if [ -n "$PUBLIC_IP" ]; then
    export VECTIS_PUBLIC_IP="$PUBLIC_IP"
  else
    unset VECTIS_PUBLIC_IP
  fi
}

# A setting given, else the installed unit's (a re-run keeps it): VECTIS_ALLOW_PLAIN_HTTP and
# VECTIS_DASHBOARD_CA reach the daemon's heartbeats through the unit, like VECTIS_PUBLIC_IP.
unit_setting() {
  local name="$1" given
  given="${!name:-}"
  if [ -z "$given" ] && [ -f "$R$UNIT" ]; then
    given="$(sed -n "s/^Environment=${name}=//p" "$R$UNIT" | tail -n 1)"
  fi
  printf '%s' "$given"
}

check_transport() {
  ALLOW_PLAIN="$(unit_setting VECTIS_ALLOW_PLAIN_HTTP)"
  case "$ALLOW_PLAIN" in
    "" | 0 | false | no | off) ALLOW_PLAIN="" ;;
    1 | true | yes | on) ALLOW_PLAIN=1 ;;
    *) fail "VECTIS_ALLOW_PLAIN_HTTP must be 1 or 0 (got '$ALLOW_PLAIN')" ;;
  esac
  DASHBOARD_CA="$(unit_setting VECTIS_DASHBOARD_CA)"
  [ "$DASHBOARD_CA" != none ] || DASHBOARD_CA=""
  if [ -n "$DASHBOARD_CA" ]; then
    [[ "$DASHBOARD_CA" =~ ^/[^[:space:]]*$ ]] ||
      fail "VECTIS_DASHBOARD_CA must be an absolute path without spaces (got '$DASHBOARD_CA')"
    { [ -f "$DASHBOARD_CA" ] && [ -r "$DASHBOARD_CA" ]; } ||
      fail "VECTIS_DASHBOARD_CA=$DASHBOARD_CA is not a readable file of CA certificates"
  fi
  # `vectis register` below reads them from its environment, as the daemon from the unit.
  unset VECTIS_ALLOW_PLAIN_HTTP VECTIS_DASHBOARD_CA
  [ -z "$ALLOW_PLAIN" ] || export VECTIS_ALLOW_PLAIN_HTTP=1
  [ -z "$DASHBOARD_CA" ] || export VECTIS_DASHBOARD_CA="$DASHBOARD_CA"
}

check_inputs() {
  if [ -n "${VECTIS_WORKER_PORT:-}" ]; then
    if ! [[ "$VECTIS_WORKER_PORT" =~ ^[0-9]{1,5}$ ]] || [ "$VECTIS_WORKER_PORT" -lt 1 ] ||
      [ "$VECTIS_WORKER_PORT" -gt 65535 ]; then
      fail "VECTIS_WORKER_PORT must be a port number 1-65535 (got '$VECTIS_WORKER_PORT')"
    fi
  fi
  if [ -n "${VECTIS_DASHBOARD_URL:-}" ]; then
    [[ "$VECTIS_DASHBOARD_URL" =~ ^https?://[^[:space:]]+$ ]] ||
      fail "VECTIS_DASHBOARD_URL must be an http:// or https:// URL (got '$VECTIS_DASHBOARD_URL')"
  elif [ -n "$TOKEN" ] && [ -z "$(conf_value dashboard_url)" ]; then
    # `vectis register` would fail on this after the install, and exit 3 means something else.
    fail "VECTIS_TOKEN is set but no dashboard URL is known: set VECTIS_DASHBOARD_URL too" \
      "(with sudo, pass both on: sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash)"
  fi
  check_public_ip
  check_transport
  check_labels
  local name link
  for name in "${COMMANDS[@]}"; do
    link="$R$BIN_DIR/$name"
    if { [ -e "$link" ] || [ -L "$link" ]; } &&
      [ "$(readlink -- "$link")" != "$VENV/bin/$name" ]; then
      fail "${BIN_DIR}/$name exists and is not a link to ${VENV}/bin/$name: move it away"
    fi
  done
  check_package
  if [ "$SANDBOX" -eq 0 ] && ! id -u "$SVC_USER" >/dev/null 2>&1; then
    command -v useradd >/dev/null 2>&1 ||
      fail "useradd not found: create the system user ${SVC_USER} first, then run again"
  fi
}

# Labels (--label, VECTIS_LABELS) roughly checked before anything is touched; `vectis register`
# holds the exact rules (docs/protocol.md#registration).
check_labels() {
  local item items=()
  if [ "${#LABEL_ARGS[@]}" -gt 0 ]; then
    items=("${LABEL_ARGS[@]}")
  elif [ -n "${VECTIS_LABELS:-}" ]; then
    IFS=, read -r -a items <<<"$VECTIS_LABELS"
  fi
  for item in ${items[@]+"${items[@]}"}; do
    item="${item#"${item%%[![:space:]]*}"}"
    item="${item%"${item##*[![:space:]]}"}"
    [ -n "$item" ] || continue
    [[ "$item" =~ ^[A-Za-z0-9][A-Za-z0-9./_-]*=[A-Za-z0-9._-]*$ ]] ||
      fail "label '$item' must be KEY=VALUE: letters, digits, '-', '_', '.' (and a key's" \
        "'prefix/'), e.g. role=edge"
  done
}

# What to install: --package / VECTIS_PACKAGE, else the build of the dashboard that served this
# script. Never a name: pip would look it up in the index, and 'vectis' there is not ours.
check_package() {
  local base
  if [ -z "$PACKAGE" ]; then
    [ -z "$PACKAGE_SHA256" ] || fail "VECTIS_PACKAGE_SHA256 (--sha256) goes with VECTIS_PACKAGE"
    [ -n "$SERVED_WHEEL" ] || fail "nothing to install: this copy of install.sh was not served" \
      "by a dashboard, so set VECTIS_PACKAGE (or --package) to a vectis wheel or source tree;" \
      "or run the script your dashboard serves: curl -fsSL <dashboard>/install.sh | sudo bash"
    base="${VECTIS_DASHBOARD_URL:-$SERVED_FROM}"
    base="${base%/}"
    PACKAGE="$base$SERVED_WHEEL"
    PACKAGE_SHA256="$SERVED_WHEEL_SHA256"
    CONSTRAINTS="$base$SERVED_CONSTRAINTS"
    CONSTRAINTS_SHA256="$SERVED_CONSTRAINTS_SHA256"
    WANT_VERSION="$SERVED_VERSION"
  fi
  [ -z "$PACKAGE_SHA256" ] || [[ "$PACKAGE_SHA256" =~ ^[0-9a-f]{64}$ ]] ||
    fail "VECTIS_PACKAGE_SHA256 must be 64 lowercase hex digits (got '$PACKAGE_SHA256')"
  case "$PACKAGE" in
    http://* | https://*)
      [[ "$PACKAGE" =~ ^https?://[^[:space:]?#]+/vectis-[^/[:space:]?#]+\.whl$ ]] ||
        fail "VECTIS_PACKAGE=$PACKAGE: a URL must name a vectis wheel (.../vectis-*.whl)"
      [ -n "$PACKAGE_SHA256" ] ||
        fail "VECTIS_PACKAGE=$PACKAGE: a wheel from a URL needs its VECTIS_PACKAGE_SHA256"
      ;;
    *)
      [ -e "$PACKAGE" ] || fail "VECTIS_PACKAGE=$PACKAGE does not exist: give a vectis wheel or" \
        "source tree (a name such as 'vectis' is never looked up in a package index)"
      PACKAGE="$(realpath -- "$PACKAGE")"
      if [ -n "$PACKAGE_SHA256" ] && [ ! -f "$PACKAGE" ]; then
        fail "VECTIS_PACKAGE_SHA256 checks a wheel file, and $PACKAGE is not a file"
      fi
      ;;
  esac
  PACKAGE_FROM="$PACKAGE"
}

# Copy a URL or a file to a path, refusing it unless its SHA-256 is the one given.
readonly FETCH_PY='
import hashlib, sys, urllib.request
source, dest, want = sys.argv[1:4]
digest = hashlib.sha256()
try:
    if source.startswith(("http://", "https://")):
        stream = urllib.request.urlopen(source, timeout=120)
    else:
        stream = open(source, "rb")
    with stream, open(dest, "wb") as out:
        while chunk := stream.read(1 << 16):
            digest.update(chunk)
            out.write(chunk)
except (OSError, ValueError) as exc:
    sys.exit(f"cannot download {source}: {exc}")
if digest.hexdigest() != want:
    sys.exit(f"SHA-256 mismatch for {source}: expected {want}, got {digest.hexdigest()}")
'

# --- install steps --------------------------------------------------------------------------

# Download the package (and the constraints) into the work dir and check their SHA-256: pip
# then installs those very files, which nobody can swap between the check and the install.
fetch_package() {
  local name
  if [ -z "$PACKAGE_SHA256" ]; then
    return 0
  fi
  name="${PACKAGE##*/}"
  step "download and check ${name}"
  mkdir "$WORK/dist"
  "$PYTHON" -c "$FETCH_PY" "$PACKAGE" "$WORK/dist/$name" "$PACKAGE_SHA256" ||
    fail "refused ${PACKAGE_FROM}: it is not the expected file (see above); nothing was installed"
  PACKAGE="$WORK/dist/$name"
  if [ -n "$CONSTRAINTS" ]; then
    "$PYTHON" -c "$FETCH_PY" "$CONSTRAINTS" "$WORK/dist/constraints.txt" "$CONSTRAINTS_SHA256" ||
      fail "refused ${CONSTRAINTS}: it is not the expected file (see above)"
    CONSTRAINTS="$WORK/dist/constraints.txt"
  fi
}


# Python snippets run by the venv's interpreter.
readonly SITE_DIRS_PY='import site; print("\n".join(site.getsitepackages()))'
readonly PURELIB_PY='import sysconfig; print(sysconfig.get_paths()["purelib"])'
readonly MISSING_DEPS_PY='
import re
from importlib.metadata import PackageNotFoundError, distribution, requires
missing = []
for req in requires("vectis") or []:
    if ";" not in req:
        name = re.split(r"[<>=!~ \[(]", req, maxsplit=1)[0]
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(name)
print(" ".join(missing))
'

make_venv() {
  local venv_args=() pip_args=(--disable-pip-version-check --no-input -q) missing
  step "install vectis into ${VENV} (${PACKAGE_FROM})"
  mkdir -p "$R/opt"
  if [ -e "$R$VENV" ]; then
    # Upgrade: keep the running version aside until the new one is in place.
    rm -rf -- "$R$VENV.previous"
    mv -- "$R$VENV" "$R$VENV.previous"
    RESTORE+=("$R$VENV.previous|$R$VENV")
  else
    CREATED+=("$R$VENV")
  fi
  [ "$OUTER_PIP" -eq 0 ] || venv_args+=(--without-pip)
  "$PYTHON" -m venv "${venv_args[@]}" "$R$VENV"
  if [ "$SYSTEM_PACKAGES" = "1" ]; then
    # The venv sees the site-packages of VECTIS_PYTHON's environment (plain paths, so that
    # their .pth files, e.g. another copy of vectis, do not load); vectis itself goes in the
    # venv, whatever copy those hold.
    "$PYTHON" -c "$SITE_DIRS_PY" >"$("$R$VENV/bin/python" -c "$PURELIB_PY")/vectis-deps.pth"
    pip_args+=(--no-deps --ignore-installed)
  fi
  # The dependencies at the versions the dashboard runs with (a served install).
  [ -z "$CONSTRAINTS" ] || pip_args+=(--constraint "$CONSTRAINTS")
  if ! venv_pip install "${pip_args[@]}" "$PACKAGE" >"$WORK/pip.log" 2>&1; then
    tail -n 25 "$WORK/pip.log" >&2
    fail "pip could not install '$PACKAGE_FROM' (check VECTIS_PACKAGE, the network or the index)"
  fi
  missing="$("$R$VENV/bin/python" -c "$MISSING_DEPS_PY")"
  [ -z "$missing" ] || fail "the venv lacks vectis's dependencies: ${missing}"
  "$R$VENV/bin/vectis" --help >/dev/null 2>"$WORK/check.log" || {
    cat "$WORK/check.log" >&2
    fail "the installed vectis does not run"
  }
  VERSION="$("$R$VENV/bin/python" -c 'import vectis; print(vectis.__version__)')"
  [ -z "$WANT_VERSION" ] || [ "$VERSION" = "$WANT_VERSION" ] ||
    fail "the installed vectis is ${VERSION}, but the dashboard serves ${WANT_VERSION}"
}

make_user() {
  step "service user ${SVC_USER}"
  if id -u "$SVC_USER" >/dev/null 2>&1; then
    HAVE_USER=1
  elif [ "$SANDBOX" -eq 1 ]; then
    HAVE_USER=0
    say "sandbox (VECTIS_ROOT=$ROOT): user ${SVC_USER} not created; files stay owned by $(id -un)"
  else
    # The user is kept even if a later step fails: the secret it owns is kept too.
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "Vectis worker" "$SVC_USER"
    HAVE_USER=1
  fi
}

make_config_dir() {
  step "configuration directory ${ETC_DIR}"
  if [ ! -d "$R$ETC_DIR" ]; then
    mkdir -p "$(dirname "$R$ETC_DIR")"
    mkdir -m 0700 "$R$ETC_DIR"
    NEW_ETC=1
  fi
  own_config
}

# Give the service user what the daemon writes: the directory, the secret, worker.conf, the lock.
own_config() {
  if [ "$HAVE_USER" -eq 1 ]; then
    chown -R "$SVC_USER:$(id -gn "$SVC_USER")" "$R$ETC_DIR"
  fi
  chmod 0700 "$R$ETC_DIR"
  find "$R$ETC_DIR" -maxdepth 1 -type f -exec chmod 0600 {} +
}

configure() {
  local args=()
  step "worker secret and worker.conf"
  [ -z "${VECTIS_DASHBOARD_URL:-}" ] || args+=(--dashboard-url "$VECTIS_DASHBOARD_URL")
  [ -z "${VECTIS_WORKER_PORT:-}" ] || args+=(--port "$VECTIS_WORKER_PORT")
  # `worker init` never replaces an existing secret and keeps worker.conf's state. Run as the
  # service user, so that a running daemon never meets a file it cannot read.
  as_service_user "$R$VENV/bin/vectis" worker init "${args[@]}" >/dev/null
  own_config
}

unit_text() {
  # worker.conf holds the port (configure wrote VECTIS_WORKER_PORT there; a re-run keeps it).
  local port
  port="$(conf_value port)"
  port="${port:-3000}"
  cat <<EOF
[Unit]
Description=Vectis worker (answers the dashboard's signed syncs)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
ExecStart=${VENV}/bin/vectis worker serve
User=${SVC_USER}
Group=${SVC_GROUP}
Restart=always
RestartSec=5
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1
${PUBLIC_IP:+Environment=VECTIS_PUBLIC_IP=${PUBLIC_IP}
}${ALLOW_PLAIN:+Environment=VECTIS_ALLOW_PLAIN_HTTP=1
}${DASHBOARD_CA:+Environment=VECTIS_DASHBOARD_CA=${DASHBOARD_CA}
}UMask=0077

# Hardening: a network daemon that reads /proc figures (psutil) and writes only ${ETC_DIR}.
# Not set, on purpose: PrivateNetwork (it serves the network), ProcSubset=pid (psutil reads
# /proc/stat and /proc/meminfo), MemoryDenyWriteExecute (libffi closures may need it).
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=${ETC_DIR}
PrivateTmp=yes
ProtectHome=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectProc=invisible
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
EOF
  if [ "$port" -lt 1024 ]; then
    printf 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n'
  else
    printf 'CapabilityBoundingSet=\n'
  fi
  printf '\n[Install]\nWantedBy=multi-user.target\n'
}

write_unit() {
  step "systemd unit ${UNIT}"
  mkdir -p "$(dirname "$R$UNIT")"
  unit_text >"$WORK/unit"
  chmod 0644 "$WORK/unit"
  if [ -e "$R$UNIT" ]; then
    mv -- "$R$UNIT" "$WORK/unit.previous"
    RESTORE+=("$WORK/unit.previous|$R$UNIT")
  else
    CREATED+=("$R$UNIT")
  fi
  mv -- "$WORK/unit" "$R$UNIT"
}

link_commands() {
  local name link
  step "links in ${BIN_DIR}"
  mkdir -p "$R$BIN_DIR"
  for name in "${COMMANDS[@]}"; do
    link="$R$BIN_DIR/$name"
    if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$VENV/bin/$name" ]; then
      continue
    fi
    if [ -e "$link" ] || [ -L "$link" ]; then
      fail "${BIN_DIR}/$name exists and is not a link to ${VENV}/bin/$name: move it away"
    fi
    ln -s -- "$VENV/bin/$name" "$link"
    CREATED+=("$link")
  done
}

start_service() {
  step "start ${UNIT_NAME}"
  if [ "$SANDBOX" -eq 1 ] || [ ! -d /run/systemd/system ]; then
    SERVICE="not started (systemd is not running here)"
    say "systemd is not running here: start the worker with"
    say "  runuser -u ${SVC_USER} -- ${VENV}/bin/vectis worker serve"
    return 0
  fi
  systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null && WAS_ENABLED=1
  systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null && WAS_ACTIVE=1
  SERVICE_TOUCHED=1
  systemctl daemon-reload
  systemctl enable --quiet "$UNIT_NAME"
  # Type=notify: this returns once the daemon said READY=1, or fails if it did not start.
  systemctl restart "$UNIT_NAME" || {
    journalctl -u "$UNIT_NAME" -n 20 --no-pager >&2 || true
    false
  }
  SERVICE="running"
}

# Run a vectis command as the service user when there is one and this is a real install.
as_service_user() {
  if [ "$SANDBOX" -eq 0 ] && [ "$HAVE_USER" -eq 1 ]; then
    setpriv --reuid="$SVC_USER" --regid="$SVC_GROUP" --init-groups -- "$@"
  else
    "$@"
  fi
}

register() {
  if [ -z "$TOKEN" ]; then
    return 0
  fi
  step "register with the dashboard"
  # The token reaches `vectis register` through its environment only: never argv, never a log.
  local labels=()
  if [ "${#LABEL_ARGS[@]}" -gt 0 ]; then
    labels=("${LABEL_ARGS[@]/#/--label=}")
  fi
  if VECTIS_TOKEN="$TOKEN" as_service_user "$R$VENV/bin/vectis" register \
    ${labels[@]+"${labels[@]}"}; then
    REGISTERED=1
  else
    REGISTERED=2
  fi
  own_config
}

summary() {
  local status as_user=""
  status="$(as_service_user "$R$VENV/bin/vectis" status --json 2>/dev/null || true)"
  say "installed vectis ${VERSION} from ${PACKAGE_FROM}"
  say "  venv      ${VENV}   config ${ETC_DIR}   unit ${UNIT}"
  say "  service   ${SERVICE}"
  printf '%s' "$status" | "$R$VENV/bin/python" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print(f"{sys.argv[1]}:   status    unknown (vectis status failed)")
    raise SystemExit(0)
for key in ("sync_status", "id", "subdomain", "ip", "port", "error"):
    if d.get(key) is not None:
        label = "status" if key == "sync_status" else key
        print(f"{sys.argv[1]}:   {label:<10}{d[key]}")
' "$PROG" || true
  # Suggested commands pass the token through the environment, never on a command line.
  if [ "$SANDBOX" -eq 0 ] && [ "$HAVE_USER" -eq 1 ]; then
    as_user="sudo -u ${SVC_USER} --preserve-env=VECTIS_TOKEN "
  fi
  if [ "$REGISTERED" -eq 2 ]; then
    warn "registration failed (see above); retry with:"
    warn "  export VECTIS_TOKEN=...; ${as_user}vectis sync"
  elif [[ "$status" =~ \"sync_status\":\ ?\"pending\" ]]; then
    say "pending: not registered (no VECTIS_TOKEN); register later with:"
    say "  export VECTIS_TOKEN=...; ${as_user}vectis register --dashboard-url URL"
  fi
}

install() {
  STARTED=1
  fetch_package
  make_venv
  make_user
  SVC_GROUP="$SVC_USER"
  if [ "$HAVE_USER" -eq 1 ]; then
    SVC_GROUP="$(id -gn "$SVC_USER")"
  fi
  make_config_dir
  configure
  write_unit
  link_commands
  start_service
  # From here on the install stands: a failed registration is exit 3, not a rollback.
  rm -rf -- "$R$VENV.previous"
  INSTALLED=1
  register
  STEP="summary"
  summary
  if [ "$REGISTERED" -eq 2 ]; then
    exit 3
  fi
  exit 0
}

uninstall() {
  local name link
  if [ "$SANDBOX" -eq 0 ] && [ -d /run/systemd/system ]; then
    say "stop and disable ${UNIT_NAME}"
    systemctl disable --now "$UNIT_NAME" >/dev/null 2>&1 || true
  fi
  say "remove ${UNIT}, the links in ${BIN_DIR} and ${VENV}"
  rm -f -- "$R$UNIT"
  if [ "$SANDBOX" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed "$UNIT_NAME" >/dev/null 2>&1 || true
  fi
  for name in "${COMMANDS[@]}"; do
    link="$R$BIN_DIR/$name"
    # Only our own links: never a file some other package put there.
    if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$VENV/bin/$name" ]; then
      rm -f -- "$link"
    fi
  done
  rm -rf -- "$R$VENV" "$R$VENV.previous"
  if [ "$PURGE" -eq 1 ]; then
    say "remove ${ETC_DIR} (the worker's secret and state)"
    rm -rf -- "$R$ETC_DIR"
  else
    say "kept ${ETC_DIR}: a new install reuses the secret and id (--purge removes it)"
  fi
  if id -u "$SVC_USER" >/dev/null 2>&1 && [ "$SANDBOX" -eq 0 ]; then
    say "kept the user ${SVC_USER}; remove it with: userdel ${SVC_USER}"
  fi
  say "uninstalled"
  exit 0
}

main() {
  local action=install PACKAGE_OPT="" SHA256_OPT=""
  PURGE=0
  LABEL_ARGS=()
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --uninstall) action=uninstall ;;
      --purge) PURGE=1 ;;
      --package | --sha256)
        if [ "$#" -lt 2 ]; then
          warn "$1 needs a value (see --help)"
          exit 2
        fi
        if [ "$1" = --package ]; then PACKAGE_OPT="$2"; else SHA256_OPT="$2"; fi
        shift
        ;;
      --package=*) PACKAGE_OPT="${1#*=}" ;;
      --label)
        if [ "$#" -lt 2 ]; then
          warn "--label needs KEY=VALUE (see --help)"
          exit 2
        fi
        LABEL_ARGS+=("$2")
        shift
        ;;
      --label=*) LABEL_ARGS+=("${1#*=}") ;;
      --sha256=*) SHA256_OPT="${1#*=}" ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        warn "unknown option '$1' (see --help)"
        exit 2
        ;;
    esac
    shift
  done
  if [ "$PURGE" -eq 1 ] && [ "$action" != uninstall ]; then
    warn "--purge goes with --uninstall (see --help)"
    exit 2
  fi

  umask 022
  ROOT="${VECTIS_ROOT:-/}"
  R="${ROOT%/}"
  SANDBOX=0
  [ -z "$R" ] || SANDBOX=1
  PYTHON="${VECTIS_PYTHON:-python3}"
  PACKAGE="${PACKAGE_OPT:-${VECTIS_PACKAGE:-}}"
  PACKAGE_SHA256="${SHA256_OPT:-${VECTIS_PACKAGE_SHA256:-}}"
  PACKAGE_FROM="$PACKAGE"
  CONSTRAINTS=""
  CONSTRAINTS_SHA256=""
  WANT_VERSION=""
  SYSTEM_PACKAGES="${VECTIS_SYSTEM_PACKAGES:-0}"
  SVC_USER="${VECTIS_USER:-vectis}"
  # Keep the token out of every child's environment but `vectis register`'s.
  TOKEN="${VECTIS_TOKEN:-}"
  unset VECTIS_TOKEN
  # Every command this script runs works on the installed config dir, whatever the caller set.
  export VECTIS_CONFIG_DIR="$R$ETC_DIR"
  HAVE_USER=0
  OUTER_PIP=0
  NEW_ETC=0
  REGISTERED=0
  PUBLIC_IP=""
  VERSION="?"
  SERVICE="?"

  check_root
  check_common
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if [ "$action" = uninstall ]; then
    uninstall
  fi
  check_python
  check_inputs
  # Commands run as the service user must not start in a directory it cannot enter.
  cd /
  WORK="$(mktemp -d)"
  install
}

main "$@" </dev/null
