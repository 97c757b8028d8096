"""Where the machine's PostgreSQL server binaries are: one search, for the
throwaway servers, the tests and scripts/lib/setup.sh (which runs this file
before any dependency is installed, so it imports only the standard library):
prints pg_ctl's path, or exits 1 with the install hint."""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALL_HINT = "install the server: sudo apt-get install -y postgresql"


def find_pg_ctl() -> str:
    """pg_ctl of the machine's PostgreSQL: pg_config --bindir, else the newest
    /usr/lib/postgresql/*/bin, else PATH."""
    candidates = []
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates.append(Path(bindir) / "pg_ctl")
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda path: int(Path(path).parent.parent.name),
        reverse=True,
    )
    candidates += [Path(path) for path in versions]
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"no PostgreSQL server binaries (pg_ctl) found: {INSTALL_HINT}")


if __name__ == "__main__":
    try:
        print(find_pg_ctl())
    except FileNotFoundError as missing:
        sys.exit(str(missing))
