"""Settings of the example project: an esports platform's economy, shaped like
the app economy-sync grew out of. The database comes from
ECONOMY_SYNC_DJANGO_DSN (a libpq connection string)."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("ECONOMY_SYNC_DJANGO_DSN", "dbname=esports"))

SECRET_KEY = "example-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["esports", "economy_sync.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "esports"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        # the tests' database: Django's test_<NAME> unless named here
        "TEST": {"NAME": os.environ.get("ECONOMY_SYNC_DJANGO_TEST_DB")},
    }
}
