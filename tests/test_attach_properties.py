"""Property tests on an attachment: Hypothesis drives random inserts, updates
(amount, wallet, earning column), deletes and stale saves of the app's own
tables; a Python model predicts every cache; the database must agree after
every step, and its drift check must be empty."""

import itertools

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

KINDS = ["prize", "reward", "purchase", "fee"]
EARNING = {"prize", "reward"}
_runs = itertools.count()


class AttachedLedgerModel(RuleBasedStateMachine):
    dsn: str
    entries = Bundle("entries")

    @initialize()
    def attach(self):
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.name = f"prop{next(_runs)}"
        n = self.name
        # owners 1 and 2 (1 has two accounts), and an ownerless account 3
        self.conn.execute(
            f"CREATE TABLE {n}_owner (id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0,"
            f" earned bigint NOT NULL DEFAULT 0, note text);"
            f"CREATE TABLE {n}_account (id bigint PRIMARY KEY, owner_id bigint,"
            f" balance bigint NOT NULL DEFAULT 0, earned bigint NOT NULL DEFAULT 0);"
            f"CREATE TABLE {n}_entry (id bigserial PRIMARY KEY, account_id bigint NOT NULL,"
            f" cents bigint NOT NULL, kind text NOT NULL);"
            f"INSERT INTO {n}_owner (id) VALUES (1), (2);"
            f"INSERT INTO {n}_account (id, owner_id) VALUES (1, 1), (2, 1), (3, 2), (4, NULL);"
        )
        self.conn.execute(
            "SELECT economy.attach(%s, %s, %s, ledger_wallet_column => 'account_id',"
            " amount_column => 'cents', wallet_earnings_column => 'earned',"
            " wallet_owner_column => 'owner_id', profile => %s,"
            " profile_balance_column => 'balance', profile_earnings_column => 'earned',"
            " earning => 'kind IN (''prize'', ''reward'')')",
            [n, f"{n}_entry", f"{n}_account", f"{n}_owner"],
        )
        self.rows = {}  # entry id -> [account, cents, kind]
        self.owners = {1: 1, 2: 1, 3: 2, 4: None}

    def teardown(self):
        self.conn.close()

    @rule(target=entries, account=st.integers(1, 4), cents=st.integers(-10**6, 10**6),
          kind=st.sampled_from(KINDS))  # fmt: skip
    def insert(self, account, cents, kind):
        entry_id = self.conn.execute(
            f"INSERT INTO {self.name}_entry (account_id, cents, kind) VALUES (%s, %s, %s)"
            " RETURNING id",
            [account, cents, kind],
        ).fetchone()[0]
        self.rows[entry_id] = [account, cents, kind]
        return entry_id

    @rule(entry=entries, account=st.integers(1, 4), cents=st.integers(-10**6, 10**6),
          kind=st.sampled_from(KINDS))  # fmt: skip
    def update(self, entry, account, cents, kind):
        if entry not in self.rows:
            return
        self.conn.execute(
            f"UPDATE {self.name}_entry SET account_id = %s, cents = %s, kind = %s WHERE id = %s",
            [account, cents, kind, entry],
        )
        self.rows[entry] = [account, cents, kind]

    @rule(entry=entries)
    def delete(self, entry):
        self.conn.execute(f"DELETE FROM {self.name}_entry WHERE id = %s", [entry])
        self.rows.pop(entry, None)

    @rule(account=st.integers(1, 4), stale=st.integers(-100, 100))
    def stale_save(self, account, stale):
        """An ORM saving the whole row with a stale cached value: ignored."""
        self.conn.execute(
            f"UPDATE {self.name}_account SET balance = %s, earned = %s WHERE id = %s",
            [stale, stale, account],
        )
        self.conn.execute(f"UPDATE {self.name}_owner SET balance = %s, note = 'x'", [stale])

    @rule(account=st.sampled_from([2, 4]), owner=st.sampled_from([1, 2, None]))
    def give_account(self, account, owner):
        self.conn.execute(
            f"UPDATE {self.name}_account SET owner_id = %s WHERE id = %s", [owner, account]
        )
        self.owners[account] = owner

    @invariant()
    def caches_agree_with_the_model(self):
        if not hasattr(self, "rows"):
            return
        balance = dict.fromkeys(self.owners, 0)
        earned = dict.fromkeys(self.owners, 0)
        for account, cents, kind in self.rows.values():
            balance[account] += cents
            earned[account] += cents if kind in EARNING else 0
        accounts = self.conn.execute(
            f"SELECT id, balance, earned FROM {self.name}_account ORDER BY id"
        ).fetchall()
        assert accounts == [(a, balance[a], earned[a]) for a in sorted(self.owners)]
        owners = self.conn.execute(
            f"SELECT id, balance, earned FROM {self.name}_owner ORDER BY id"
        ).fetchall()
        expected = [
            (o, sum(balance[a] for a, w in self.owners.items() if w == o),
             sum(earned[a] for a, w in self.owners.items() if w == o))
            for o in (1, 2)
        ]  # fmt: skip
        assert owners == expected
        drift = self.conn.execute(
            "SELECT * FROM economy.balance_drift(attachment => %s)", [self.name]
        ).fetchall()
        assert drift == []


def test_attached_tables_agree_with_the_model(dsn):
    AttachedLedgerModel.dsn = dsn
    AttachedLedgerModel.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    AttachedLedgerModel.TestCase().runTest()
