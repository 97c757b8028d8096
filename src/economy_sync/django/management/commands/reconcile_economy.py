"""`manage.py reconcile_economy`: the `economy-sync reconcile` command on a
Django database, by Django's conventions: its output through the command's
stdout and stderr (so `call_command(stdout=...)` captures it), the command line's
defaults (a dry run, every attachment unless --attachment narrows it), and its
exit codes as a CommandError's returncode (1 drift found in a dry run, 2 usage,
connection or privilege error, 3 skipped batches: run it again)."""

from contextlib import redirect_stderr, redirect_stdout

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from economy_sync.cli import main as economy_sync
from economy_sync.django.dsn import connection_dsn

WHAT_AN_EXIT_CODE_SAYS = {
    1: "drift found (dry run): repair it with --apply --all",
    2: "could not reconcile (see above)",
    3: "some batches were skipped (locks held too long): run it again",
}


class Command(BaseCommand):
    help = "Find (--dry-run, the default) or repair (--apply) drift between caches and ledgers."

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", dest="apply", action="store_false", help="report only")
        mode.add_argument("--apply", dest="apply", action="store_true", help="repair, logged")
        parser.set_defaults(apply=False)
        parser.add_argument("--user-id", type=int, action="append", dest="user_ids")
        parser.add_argument("--all", action="store_true", help="every owner (default: dry run)")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--limit", type=int)
        parser.add_argument(
            "--attachment", help="only this attachment (economy.attachments); default: every one"
        )
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        argv = ["--dsn", connection_dsn(connections[options["database"]]), "reconcile"]
        argv.append("--apply" if options["apply"] else "--dry-run")
        if options["all"]:
            argv.append("--all")
        for user_id in options["user_ids"] or []:
            argv += ["--user-id", str(user_id)]
        argv += ["--batch-size", str(options["batch_size"])]
        if options["limit"] is not None:
            argv += ["--limit", str(options["limit"])]
        if options["attachment"]:
            argv += ["--attachment", options["attachment"]]
        if options["json"]:
            argv.append("--json")
        # the command line writes whole lines itself: no ending added to each write
        self.stdout.ending = self.stderr.ending = ""
        with redirect_stdout(self.stdout), redirect_stderr(self.stderr):
            code = economy_sync(argv)
        if code:
            raise CommandError(WHAT_AN_EXIT_CODE_SAYS.get(code, f"exit {code}"), returncode=code)
