"""`manage.py economy_attach APP --ledger MODEL --wallet MODEL [--profile MODEL]`:
writes the app's next migration, which installs economy-sync (unless an earlier
migration of the project does) and attaches it to those models. The mapping is
read from the models: the ledger's foreign key to the wallet, the wallet's to
the profile, and the cached columns declared with economy-sync's fields (a
field whose name says "earning" caches earnings, one that says "held" or
"pending" the sum of the wallet's holds, the other the balance); a
flag names whatever the models leave open. When every cached column is such a
field, an explicit write of one is refused (guard 'refuse'). Review the file,
then `migrate`."""

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import migrations
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.writer import MigrationWriter

from economy_sync.django.fields import CachedField
from economy_sync.django.operations import FIELD_ARGUMENTS, AttachEconomy, InstallEconomySync


def foreign_key_to(model, target) -> str | None:
    """The name of model's one foreign key to target; None when it has none."""
    found = [
        f.name for f in model._meta.concrete_fields if f.is_relation and f.related_model is target
    ]
    if len(found) > 1:
        raise CommandError(
            f"{model._meta.label} has {len(found)} foreign keys to {target._meta.label}"
            f" ({', '.join(found)}): name one with a flag"
        )
    return found[0] if found else None


CACHED_BY_NAME = {"earnings": ("earning",), "held": ("held", "pending")}


def cached(model) -> dict[str, str]:
    """{'balance': field, 'earnings': field, 'held': field} of model's
    economy-sync fields, told apart by their names (CACHED_BY_NAME)."""
    fields = [f.name for f in model._meta.concrete_fields if isinstance(f, CachedField)]
    kinds = {
        kind: [name for name in fields if any(word in name for word in words)]
        for kind, words in CACHED_BY_NAME.items()
    }
    kinds["balance"] = [name for name in fields if not any(name in k for k in kinds.values())]
    if any(len(names) > 1 for names in kinds.values()):
        raise CommandError(
            f"{model._meta.label} has several cached fields ({', '.join(fields)}): name them"
            " with flags"
        )
    return {kind: (names or [None])[0] for kind, names in kinds.items()}


class Command(BaseCommand):
    help = "Write the migration that attaches economy-sync to an app's models."

    def add_arguments(self, parser):
        parser.add_argument("app_label")
        parser.add_argument("--name", help="the attachment's name (default: the app label)")
        parser.add_argument("--ledger", required=True, help="the ledger model (app.Model)")
        parser.add_argument("--wallet", required=True, help="the wallet model")
        parser.add_argument("--profile", help="the profile model, if its figures are cached")
        parser.add_argument("--earning", default="amount > 0", help="SQL over the ledger row")
        parser.add_argument("--guard", choices=["keep", "refuse"])
        parser.add_argument("--overdraft-limit", help="SQL over the wallet row (NULL: no limit)")
        for field in FIELD_ARGUMENTS:
            parser.add_argument(f"--{field.replace('_', '-')}", metavar="FIELD")
        parser.add_argument(
            "--dry-run", action="store_true", help="print the migration instead of writing it"
        )

    def handle(self, *args, **options):
        try:
            models = {
                role: apps.get_model(options[role])
                for role in ("ledger", "wallet", "profile")
                if options[role]
            }
        except (LookupError, ValueError) as error:
            raise CommandError(str(error)) from None
        fields = self.mapping(models, options)
        attach = AttachEconomy(
            options["name"] or options["app_label"],
            **{role: model._meta.label for role, model in models.items()},
            earning=options["earning"],
            guard=options["guard"] or self.safe_guard(models, fields),
            overdraft_limit=options["overdraft_limit"],
            **fields,
        )
        loader = MigrationLoader(None, ignore_no_migrations=True)
        installed = any(
            isinstance(operation, InstallEconomySync)
            for migration in loader.disk_migrations.values()
            for operation in migration.operations
        )
        leaves = loader.graph.leaf_nodes(options["app_label"])
        if not leaves:
            raise CommandError(
                f"{options['app_label']} has no migrations yet: `manage.py makemigrations` first"
            )
        migration = migrations.Migration("economy", options["app_label"])
        migration.dependencies = leaves
        migration.operations = ([] if installed else [InstallEconomySync()]) + [attach]
        number = (MigrationAutodetector.parse_number(leaves[0][1]) or 0) + 1
        migration.name = f"{number:04d}_economy_{attach.name}"
        writer = MigrationWriter(migration)
        if options["dry_run"]:
            self.stdout.write(writer.as_string())
            return
        with open(writer.path, "w", encoding="utf-8") as file:
            file.write(writer.as_string())
        self.stdout.write(f"wrote {writer.path}: review it, then `manage.py migrate`")

    @staticmethod
    def safe_guard(models: dict, fields: dict) -> str | None:
        """'refuse' when every cached column is one of economy-sync's fields
        (Django never writes them, so only an explicit write is refused);
        else attach's default, 'keep' (a stale full-row save keeps the cache)."""
        cached_columns = [
            models[FIELD_ARGUMENTS[argument][0]]._meta.get_field(fields[argument])
            for argument in fields
            if argument.endswith(("balance_field", "earnings_field", "held_field"))
        ]
        return "refuse" if all(isinstance(f, CachedField) for f in cached_columns) else None

    def mapping(self, models: dict, options: dict) -> dict[str, str]:
        """The field arguments: what the flags name, else what the models say."""
        ledger, wallet, profile = models["ledger"], models["wallet"], models.get("profile")
        wallet_cached, profile_cached = cached(wallet), cached(profile) if profile else {}
        found = {
            "ledger_wallet_field": foreign_key_to(ledger, wallet),
            "amount_field": "amount" if hasattr_field(ledger, "amount") else None,
            "wallet_balance_field": wallet_cached["balance"],
            "wallet_earnings_field": wallet_cached["earnings"],
            "held_field": wallet_cached["held"],
            "wallet_owner_field": foreign_key_to(wallet, profile) if profile else None,
            "profile_balance_field": profile_cached.get("balance"),
            "profile_earnings_field": profile_cached.get("earnings"),
        }
        fields = {field: options[field] or found.get(field) for field in FIELD_ARGUMENTS}
        for required in ("ledger_wallet_field", "amount_field", "wallet_balance_field"):
            if not fields[required]:
                raise CommandError(
                    f"the models do not say the {required.replace('_', ' ')}: pass"
                    f" --{required.replace('_', '-')}"
                )
        return {field: value for field, value in fields.items() if value}


def hasattr_field(model, name: str) -> bool:
    return any(f.name == name for f in model._meta.concrete_fields)
