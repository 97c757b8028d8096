"""`manage.py check`: economy-sync's findings in Django's words.

- economy_sync.W001: another app's `reconcile_economy` command shadows the
  package's (Django runs the first app's of INSTALLED_APPS).
- economy_sync.E001 (with `--database`, and before `migrate`): an attachment of
  this project's models whose mapped columns, triggers, generated functions or
  sync role no longer match the database (a migration renamed a field, a
  trigger was switched off): what `economy-sync doctor` says, with its remedy.
"""

import psycopg
from django.apps import apps
from django.core import checks
from django.core.management import get_commands
from django.db import connections

from economy_sync import doctor
from economy_sync.django.dsn import connection_dsn

OURS = "economy_sync.django"

# this project's attachments: those whose ledger, wallet or profile is a model's table
PROJECT_ATTACHMENTS = """
SELECT a.name FROM economy.attachments a
WHERE a.name <> 'economy' AND ARRAY[a.ledger, a.wallet, a.profile]::oid[]
    && ARRAY(SELECT to_regclass(quote_ident(t))::oid FROM unnest(%s::text[]) t)
ORDER BY a.name
"""


@checks.register()
def reconcile_command_is_the_packages(app_configs, **kwargs):
    owner = get_commands().get("reconcile_economy")
    if owner in (None, OURS):
        return []
    return [
        checks.Warning(
            f"manage.py reconcile_economy runs {owner}'s command, not economy-sync's",
            hint=f"rename {owner}'s command, or list {OURS!r} before {owner!r} in INSTALLED_APPS",
            id="economy_sync.W001",
        )
    ]


@checks.register(checks.Tags.database)
def attachments_match_the_database(app_configs, databases=None, **kwargs):
    tables = sorted({model._meta.db_table for model in apps.get_models()})
    errors = []
    for alias in databases or []:
        if connections[alias].vendor != "postgresql":
            continue
        with psycopg.connect(connection_dsn(connections[alias]), autocommit=True) as conn:
            if not doctor.schema_installed_at(conn):
                continue
            for (name,) in conn.execute(PROJECT_ATTACHMENTS, [tables]).fetchall():
                errors += [
                    checks.Error(f"attachment {name!r}: {finding.message}", id="economy_sync.E001")
                    for finding in doctor.attachment_findings(conn, name)
                    if not finding.ok
                ]
    return errors
