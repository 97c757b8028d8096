"""The example Django project (examples/django) runs its own test suite with
pytest-django on this run's PostgreSQL: its migrations install economy-sync and
attach it to the app's models; its tests write through the ORM."""

import os
import subprocess
import sys

import pytest
from conftest import EXISTING_DSN, wipe
from psycopg.conninfo import make_conninfo

from economy_sync._paths import SOURCE_ROOT


@pytest.mark.slow
def test_the_django_example_project_passes(request):
    env = dict(os.environ)
    if EXISTING_DSN:  # no CREATEDB, maybe: the example migrates this database in place
        env |= {
            "ECONOMY_SYNC_DJANGO_DSN": wipe(EXISTING_DSN),
            "ECONOMY_SYNC_DJANGO_EXISTING_DB": "1",
        }
    else:
        server = request.getfixturevalue("pg_server")
        env["ECONOMY_SYNC_DJANGO_DSN"] = make_conninfo(
            host=server.host, port=server.port, user=server.user, dbname="esports"
        )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=SOURCE_ROOT / "examples" / "django",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
