import os

import pytest


@pytest.fixture
def committed(transactional_db):
    """Tests whose writes commit (the management command reads them on a
    connection of its own). Django empties the tables after such a test with
    one TRUNCATE of them all, which the attached ledger allows: its wallets go
    with it."""


if os.environ.get("ECONOMY_SYNC_DJANGO_EXISTING_DB"):
    # On a server where the role may not create databases (a managed service):
    # migrate the database the settings name, instead of creating test_<name>.
    @pytest.fixture(scope="session")
    def django_db_setup(django_db_blocker):
        from django.core.management import call_command

        with django_db_blocker.unblock():
            call_command("migrate", verbosity=0)
