"""pytest-django's `django_db_setup` on test databases made beforehand, for a
role that may not create databases (economy_sync.django.testing says how);
in your conftest.py:

    from economy_sync.django.pytest_plugin import django_db_setup  # noqa: F401
"""

import pytest
from django.test.utils import setup_databases, teardown_databases

from economy_sync.django.testing import finish, prepare


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker, django_db_keepdb):
    """pytest-django's fixture of that name, on test databases that exist
    already (see the module); import it into your conftest.py."""
    with django_db_blocker.unblock():
        dsns = prepare(keep=django_db_keepdb)
        old_config = setup_databases(
            verbosity=request.config.option.verbose, interactive=False, keepdb=True
        )
    yield
    with django_db_blocker.unblock():
        teardown_databases(old_config, verbosity=request.config.option.verbose, keepdb=True)
        finish(dsns)
