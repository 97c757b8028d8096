"""Migration operations: install the package's SQL, attach it to your models.

    from economy_sync.django.operations import AttachEconomy, InstallEconomySync

    class Migration(migrations.Migration):
        dependencies = [("esports", "0001_initial")]
        operations = [
            InstallEconomySync(),
            AttachEconomy(
                "esports",
                ledger="esports.DeltaCrownTransaction",
                wallet="esports.DeltaCrownWallet",
                wallet_balance_field="cached_balance",
                wallet_owner_field="profile",
                profile="esports.Profile",
                profile_balance_field="deltacoin_balance",
                profile_earnings_field="lifetime_earnings",
            ),
        ]

Both are reversible. The models are read from the migration state, fields are
named as in the models (a foreign key by its field name) and become columns.
"""

from contextlib import contextmanager

import psycopg
from django.core.management.base import CommandError
from django.db import migrations, utils

from economy_sync import migrate, roles
from economy_sync.errors import first_line


@contextmanager
def said_in_one_line(needs: str):
    """A missing privilege ends `manage.py migrate` with one line naming what
    is needed, not a traceback (the transaction is rolled back as usual)."""
    try:
        yield
    except utils.ProgrammingError as error:
        if isinstance(error.__cause__, psycopg.errors.InsufficientPrivilege):
            raise CommandError(f"{first_line(error.__cause__)}: run it as {needs}") from None
        if isinstance(error.__cause__, psycopg.errors.DuplicateObject):  # a role in the way
            raise CommandError(first_line(error.__cause__)) from None
        raise


class InstallEconomySync(migrations.operations.base.Operation):
    """The package's own migrations up to their head (what `economy-sync
    migrate` does), as SQL inside this migration's transaction; backwards,
    down to nothing. The package keeps its own revision history."""

    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def migrate_to(self, schema_editor, revision: str, needs: str) -> None:
        with schema_editor.connection.cursor() as cursor:
            current = migrate.installed_revision(cursor)
        if current != revision and not (current is None and revision == "base"):
            with said_in_one_line(needs):
                schema_editor.execute(migrate.script(current, revision), params=None)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self.migrate_to(schema_editor, migrate.head_revision(), roles.INSTALL_NEEDS)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self.migrate_to(schema_editor, "base", roles.REMOVE_NEEDS)
        # nothing left behind (our constant)
        schema_editor.execute(f"DROP TABLE IF EXISTS {migrate.VERSION_TABLE}")

    def describe(self):
        return "Install economy-sync's schema"


# AttachEconomy's field arguments: the model each names a field of, and the
# economy.attach argument that gets that field's column
FIELD_ARGUMENTS = {
    "ledger_wallet_field": ("ledger", "ledger_wallet_column"),
    "amount_field": ("ledger", "amount_column"),
    "balance_after_field": ("ledger", "balance_after_column"),
    "created_at_field": ("ledger", "created_at_column"),
    "wallet_balance_field": ("wallet", "wallet_balance_column"),
    "wallet_earnings_field": ("wallet", "wallet_earnings_column"),
    "wallet_owner_field": ("wallet", "wallet_owner_column"),
    "profile_key_field": ("profile", "profile_key_column"),
    "profile_balance_field": ("profile", "profile_balance_column"),
    "profile_earnings_field": ("profile", "profile_earnings_column"),
    "held_field": ("wallet", "held_column"),
    "kind_field": ("ledger", "kind_column"),
    "memo_field": ("ledger", "memo_column"),
}


class AttachEconomy(migrations.operations.base.Operation):
    """economy.attach() on the tables of the named models (see the module's
    docstring); backwards: economy.detach()."""

    reversible = True

    def __init__(
        self,
        name: str,
        ledger: str,
        wallet: str,
        profile: str | None = None,
        earning: str = "amount > 0",
        ledger_wallet_field: str = "wallet",
        amount_field: str = "amount",
        wallet_balance_field: str = "balance",
        wallet_earnings_field: str | None = None,
        wallet_owner_field: str | None = None,
        profile_key_field: str | None = None,
        profile_balance_field: str | None = None,
        profile_earnings_field: str | None = None,
        balance_after_field: str | None = None,
        created_at_field: str | None = None,
        held_field: str | None = None,
        kind_field: str | None = None,
        memo_field: str | None = None,
        guard: str | None = None,
        overdraft_limit: str | None = None,
    ):
        self.name, self.models, self.earning = name, {"ledger": ledger, "wallet": wallet}, earning
        # economy.attach's own SQL-valued options, passed as they are when given
        self.options = {"guard": guard, "overdraft_limit": overdraft_limit}
        if profile:
            self.models["profile"] = profile
        self.fields = {
            "ledger_wallet_field": ledger_wallet_field,
            "amount_field": amount_field,
            "wallet_balance_field": wallet_balance_field,
            "wallet_earnings_field": wallet_earnings_field,
            "wallet_owner_field": wallet_owner_field,
            "profile_key_field": profile_key_field,
            "profile_balance_field": profile_balance_field,
            "profile_earnings_field": profile_earnings_field,
            "balance_after_field": balance_after_field,
            "created_at_field": created_at_field,
            "held_field": held_field,
            "kind_field": kind_field,
            "memo_field": memo_field,
        }

    def deconstruct(self):
        kwargs = {"earning": self.earning, **self.models}
        kwargs.update(
            {
                key: value
                for key, value in {**self.fields, **self.options}.items()
                if value is not None
            }
        )
        return (self.__class__.__name__, [self.name], kwargs)

    def state_forwards(self, app_label, state):
        pass

    def arguments(self, apps) -> dict:
        """economy.attach's arguments: tables and columns of the models."""
        models = {role: apps.get_model(label) for role, label in self.models.items()}
        arguments = {role: model._meta.db_table for role, model in models.items()}
        for key, field in self.fields.items():
            role, argument = FIELD_ARGUMENTS[key]
            if role == "profile" and key == "profile_key_field" and role in models:
                field = field or models[role]._meta.pk.name
            if field is not None and role in models:
                arguments[argument] = models[role]._meta.get_field(field).column
        options = {key: value for key, value in self.options.items() if value is not None}
        return {"name": self.name, "earning": self.earning, **arguments, **options}

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        arguments = self.arguments(to_state.apps)
        call = ", ".join(f"{key} => %({key})s" for key in arguments)  # our own names
        with said_in_one_line(roles.ATTACH_NEEDS):
            schema_editor.execute(f"SELECT economy.attach({call})", arguments)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        with said_in_one_line(roles.ATTACH_NEEDS):
            schema_editor.execute("SELECT economy.detach(%s)", [self.name])

    def describe(self):
        return f"Attach economy-sync as {self.name!r}"
