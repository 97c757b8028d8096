"""What the command line shows: tables, progress, summaries, JSON rows."""

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict
from decimal import Decimal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from economy_sync import api


def cell(value) -> str:
    """A table cell: empty for NULL (an ownerless wallet's user_id, say)."""
    return "" if value is None else str(value)


def row_json(row) -> dict:
    """A result row as JSON-ready values, amounts as strings (exact)."""
    return {
        key: (str(value) if isinstance(value, Decimal) else value)
        for key, value in asdict(row).items()
    }


def drift_table(rows: Iterable, title: str) -> Table:
    table = Table(title=title)
    for name in ("user_id", "wallet_id", "field", "cached", "ledger", "difference"):
        if name == "field":
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, justify="right")
    for row in rows:
        difference = row.ledger_value - row.cached_value
        table.add_row(
            cell(row.user_id),
            cell(row.wallet_id),
            row.field,
            cell(row.cached_value),
            cell(row.ledger_value),
            f"{difference:+}",
        )
    return table


@contextmanager
def progress_bar(total: int, description: str, enabled: bool):
    """Yield a callback advancing a progress bar on stderr; no bar when stderr
    is not a terminal."""
    if not enabled or not Console(stderr=True).is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


def run_reconcile(  # api.reconcile, with a progress bar on a terminal
    conn,
    dry_run: bool,
    user_ids=None,
    batch_size=1000,
    limit=None,
    show_progress=True,
    attachment=None,
    into=None,
) -> api.ReconcileSummary:
    total = len(set(user_ids)) if user_ids else api.count_users(conn, attachment)
    if limit is not None:
        total = min(total, limit)
    label = "checking" if dry_run else "repairing"
    with progress_bar(total, label, show_progress) as advance:
        return api.reconcile(
            conn,
            dry_run=dry_run,
            user_ids=user_ids,
            batch_size=batch_size,
            limit=limit,
            progress=advance,
            attachment=attachment,
            into=into,
        )


def print_rows(summary: api.ReconcileSummary, out: Console) -> None:
    if summary.rows:
        title = "drift found (dry run: nothing written)" if summary.dry_run else "repaired"
        out.print(drift_table(summary.rows, title))
    if summary.rows_omitted:
        out.print(f"... and {summary.rows_omitted} more rows")


def print_counts(summary: api.ReconcileSummary, out: Console) -> None:
    verb = "to sync" if summary.dry_run else "synced"
    if not summary.dry_run:
        out.print(f"Run id: {summary.run_id} (economy.reconcile_log)")
    out.print(f"Processed: {summary.processed}")
    out.print(f"Balance {verb}: {summary.balance_fixes}")
    out.print(f"Earnings {verb}: {summary.earnings_fixes}")
    out.print(f"Errors: {summary.errors}")
