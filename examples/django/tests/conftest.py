import os

import pytest


@pytest.fixture
def committed(transactional_db):
    """Tests whose writes commit (the management command reads them on a
    connection of its own). Django empties the tables after such a test with
    one TRUNCATE of them all, which the attached ledger allows: its wallets go
    with it."""


if os.environ.get("ECONOMY_SYNC_DJANGO_EXISTING_DB"):
    # A role that may not create databases (a hosted PostgreSQL): the test
    # database was made beforehand (README: your Django tests on a hosted PostgreSQL)
    from economy_sync.django.pytest_plugin import django_db_setup  # noqa: F401
