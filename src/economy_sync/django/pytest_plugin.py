"""pytest-django's `django_db_setup` on test databases made beforehand, for a
role that may not create databases (economy_sync.django.testing says how);
in your conftest.py:

    from economy_sync.django.pytest_plugin import django_db_setup  # noqa: F401
"""

import pytest
from django.test.utils import setup_databases, teardown_databases
from pytest_django.fixtures import _disable_migrations

from economy_sync.django.testing import finish, prepare


@pytest.fixture(scope="session")
def django_db_setup(
    request,
    django_test_environment,
    django_db_blocker,
    django_db_use_migrations,
    django_db_keepdb,
    django_db_createdb,
    django_db_modify_db_settings,  # pytest-django's per-worker suffixes (xdist, tox)
):
    """pytest-django's fixture of that name (its options too: --reuse-db keeps
    the database as it is, --create-db empties it, --nomigrations), on test
    databases that exist already (see economy_sync.django.testing)."""
    if not django_db_use_migrations:
        _disable_migrations()
    with django_db_blocker.unblock():
        dsns = prepare(keep=django_db_keepdb and not django_db_createdb)
        old_config = setup_databases(
            verbosity=request.config.option.verbose, interactive=False, keepdb=True
        )
    yield
    with django_db_blocker.unblock():
        teardown_databases(old_config, verbosity=request.config.option.verbose, keepdb=True)
        finish(dsns)
