"""The example Django project (examples/django) runs its own test suite with
pytest-django on this run's PostgreSQL: its migrations install economy-sync and
attach it to the app's models; its tests write through the ORM."""

import os
import subprocess
import sys

import pytest
from conftest import EXISTING_DSN
from psycopg.conninfo import make_conninfo

from economy_sync._paths import SOURCE_ROOT


@pytest.mark.slow
def test_the_django_example_project_passes(request):
    if EXISTING_DSN:
        pytest.fail("the Django example creates its test database: it needs the throwaway server")
    server = request.getfixturevalue("pg_server")
    dsn = make_conninfo(host=server.host, port=server.port, user=server.user, dbname="esports")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=SOURCE_ROOT / "examples" / "django",
        env={**os.environ, "ECONOMY_SYNC_DJANGO_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
