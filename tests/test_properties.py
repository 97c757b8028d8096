"""Property tests: Hypothesis drives random sequences of operations; a small
Python model of the ledger predicts every balance and which operations must
fail; the database must agree after every step."""

import itertools
from decimal import Decimal

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from psycopg import errors
from psycopg.types.json import Jsonb

from economy_sync import advance_checkpoint

EARNING = {"prize", "reward"}
KINDS = ["prize", "reward", "purchase", "fee", "refund", "adjustment"]
LIMIT = Decimal("999999999999999.99")
USERS_PER_RUN = 4
_user_ranges = itertools.count(1_000_000, 1_000)

amounts = st.one_of(
    st.decimals(min_value=-300, max_value=300, places=2),
    st.sampled_from([Decimal("0"), Decimal("0.005"), Decimal("1.999"), Decimal("1e16")]),
)
keys = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
# a transfer's amount: mostly valid ones
transfer_amounts = st.one_of(
    st.decimals(min_value=Decimal("0.01"), max_value=5, places=2),
    st.sampled_from([Decimal("0"), Decimal("-1"), Decimal("0.005"), Decimal("1e16")]),
)


def valid_amount(amount: Decimal) -> bool:
    return amount != 0 and amount.as_tuple().exponent >= -2 and abs(amount) <= LIMIT


class LedgerModel(RuleBasedStateMachine):
    dsn: str

    @initialize()
    def connect(self):
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.first_user = next(_user_ranges)
        self.wallets = {}  # slot -> wallet id
        self.limits, self.balance, self.earnings, self.held = {}, {}, {}, {}
        self.holds = []  # dicts: id, wallet, amount, status
        self.entries = []  # dicts: id, wallet, amount, kind, reverses, reversed
        self.keys = {}  # (wallet, key) -> entry
        self.calls = {}  # transfer_many's key -> (its transfers, metadata, entry ids)
        self.hot, self.ever_hot = set(), set()  # wallets

    def teardown(self):
        self.conn.close()

    def call(self, query, params):
        """Run one call; return (rows, error class or None)."""
        try:
            return self.conn.execute(query, params).fetchall(), None
        except psycopg.Error as error:
            return None, type(error)

    def apply(self, wallet, amount, kind, key=None, reverses=None, entry_id=None):
        entry = {"id": entry_id, "wallet": wallet, "amount": amount, "kind": kind,
                 "reverses": reverses, "reversed": False, "other_leg": None}  # fmt: skip
        self.entries.append(entry)
        if key is not None:
            self.keys[(wallet, key)] = entry
        self.balance[wallet] += amount
        if kind in EARNING:
            self.earnings[wallet] += amount
        return entry

    def apply_transfer(self, a, b, amount, key, debit_id, credit_id):
        """A transfer's two legs, each knowing the other (reversed together)."""
        debit = self.apply(a, -amount, "transfer", key, entry_id=debit_id)
        credit = self.apply(b, amount, "transfer", key, entry_id=credit_id)
        debit["other_leg"], credit["other_leg"] = credit, debit

    def overdraws(self, wallet, amount) -> bool:
        """Held amounts are not available to debits."""
        available = self.balance[wallet] - self.held[wallet]
        return amount < 0 and available + amount < -self.limits[wallet]

    @rule(slot=st.integers(0, USERS_PER_RUN - 1), limit=st.sampled_from(["0", "10", "50"]))
    def open_wallet(self, slot, limit):
        rows, error = self.call(
            "SELECT economy.open_wallet(%s, overdraft_limit => %s)",
            [self.first_user + slot, Decimal(limit)],
        )
        assert error is None
        wallet = rows[0][0]
        if slot in self.wallets:
            assert wallet == self.wallets[slot]
        else:
            self.wallets[slot] = wallet
            self.limits[wallet], self.balance[wallet], self.earnings[wallet] = Decimal(limit), 0, 0
            self.held[wallet] = 0

    @rule(data=st.data(), amount=amounts, kind=st.sampled_from(KINDS), key=keys)
    def post(self, data, amount, kind, key):
        if not self.wallets:
            return
        wallet = self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))]
        rows, error = self.call(
            "SELECT id FROM economy.post_transaction(%s, %s, %s, %s)", [wallet, amount, kind, key]
        )
        replayed = self.keys.get((wallet, key))
        if not valid_amount(amount):
            assert error is errors.CheckViolation
        elif replayed is not None:
            same = replayed["amount"] == amount and replayed["kind"] == kind
            assert (error, rows) == (
                (None, [(replayed["id"],)]) if same else (errors.UniqueViolation, None)
            )
        elif self.overdraws(wallet, amount):
            assert error is errors.CheckViolation
        else:
            assert error is None
            self.apply(wallet, amount, kind, key, entry_id=rows[0][0])

    @rule(
        data=st.data(),
        rows=st.lists(st.tuples(amounts, st.sampled_from(KINDS), keys), min_size=2, max_size=6),
        via=st.sampled_from(["values", "copy"]),
    )
    def post_many(self, data, rows, via):
        """Several rows in one statement (a VALUES list with ON CONFLICT DO
        NOTHING, or a COPY): each checked in its order, the statement refused
        whole, or applied as one row after the other would be."""
        if not self.wallets:
            return
        rows = [
            (self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))], amount, kind,
             key if via == "values" else None)
            for amount, kind, key in rows
        ]  # fmt: skip
        ids, error = self.insert_rows(rows, via)
        if not all(valid_amount(amount) for _, amount, _, _ in rows):
            assert error is errors.CheckViolation
            return
        balance, held, limits = dict(self.balance), self.held, self.limits
        applied, used = [], set(self.keys)
        for wallet, amount, kind, key in rows:
            if key is not None and (wallet, key) in used:
                continue  # skipped by ON CONFLICT DO NOTHING
            used.add((wallet, key))
            if amount < 0 and balance[wallet] - held[wallet] + amount < -limits[wallet]:
                assert error is errors.CheckViolation
                return
            balance[wallet] += amount
            applied.append((wallet, amount, kind, key))
        assert error is None
        assert len(ids) == len(applied)
        for (wallet, amount, kind, key), entry_id in zip(applied, ids, strict=True):
            self.apply(wallet, amount, kind, key, entry_id=entry_id)

    def insert_rows(self, rows, via):
        """The new entries' ids, in their order, or the error."""
        try:
            with self.conn.transaction():
                if via == "copy":
                    before = self.conn.execute(
                        "SELECT coalesce(max(id), 0) FROM economy.transaction"
                    ).fetchone()[0]
                    with self.conn.cursor().copy(
                        "COPY economy.transaction (wallet_id, amount, kind) FROM STDIN"
                    ) as copy:
                        for wallet, amount, kind, _ in rows:
                            copy.write_row((wallet, amount, kind))
                    found = self.conn.execute(
                        "SELECT id FROM economy.transaction WHERE id > %s ORDER BY id", [before]
                    ).fetchall()
                else:
                    found = self.conn.execute(
                        "INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key)"
                        " SELECT * FROM unnest(%s::bigint[], %s::numeric[], %s::text[], %s::text[])"
                        " ON CONFLICT DO NOTHING RETURNING id",
                        [list(column) for column in zip(*rows, strict=True)],
                    ).fetchall()
            return sorted(entry_id for (entry_id,) in found), None
        except psycopg.Error as error:
            return None, type(error)

    @rule(data=st.data(), amount=amounts, key=keys)
    def transfer(self, data, amount, key):
        if not self.wallets:
            return
        a = self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))]
        b = self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))]
        rows, error = self.call(
            "SELECT id FROM economy.transfer(%s, %s, %s, %s)", [a, b, amount, key]
        )
        debit, credit = self.keys.get((a, key)), self.keys.get((b, key))
        # (an amount the ledger cannot hold is refused by its check, before any
        # key is compared)
        if a == b or amount <= 0 or not valid_amount(amount):
            assert error is errors.CheckViolation
        elif debit is not None:
            same = (
                (debit["amount"], debit["kind"]) == (-amount, "transfer")
                and credit is not None
                and (credit["amount"], credit["kind"]) == (amount, "transfer")
            )
            if same:
                assert (error, rows) == (None, [(debit["id"],), (credit["id"],)])
            else:
                assert error is errors.UniqueViolation
        elif self.overdraws(a, -amount):
            assert error is errors.CheckViolation
        elif credit is not None:
            assert error is errors.UniqueViolation  # the key is taken on the receiving wallet
        else:
            assert error is None
            self.apply_transfer(a, b, amount, key, rows[0][0], rows[1][0])

    @rule(
        data=st.data(),
        transfers=st.lists(
            st.tuples(st.integers(0, 9), st.integers(0, 9), transfer_amounts), max_size=4
        ),
        key=st.sampled_from([None, "call-1", "call-2"]),
        metadata=st.sampled_from([None, {"order": 1}]),
    )
    def transfer_many(self, data, transfers, key, metadata):
        """Checked whole, then replayed whole by its key, then applied as each
        transfer in turn would be, or refused whole."""
        if not self.wallets:
            return
        # a call's key names it in the whole database: this run's own
        key = None if key is None else f"{self.first_user}-{key}"
        slots = sorted(self.wallets)
        # the payee: another wallet, but one time in ten the payer itself
        transfers = [
            (
                self.wallets[slots[a % len(slots)]],
                self.wallets[slots[(a + (0 if other == 9 else 1 + other)) % len(slots)]],
                amount,
            )
            for a, other, amount in transfers
        ]
        rows, error = self.call(
            "SELECT id FROM economy.transfer_many(%s::bigint[], %s::bigint[], %s::numeric[],"
            " idempotency_key => %s, metadata => %s)",
            [*([list(column) for column in zip(*transfers, strict=True)] or [[], [], []]),
             key, Jsonb(metadata) if metadata else None],
        )  # fmt: skip
        if not transfers:
            assert error is errors.InvalidParameterValue
            return
        if any(a == b or amount <= 0 for a, b, amount in transfers):
            assert error is errors.CheckViolation
            return
        if key in self.calls:
            replayed, replayed_metadata, ids = self.calls[key]
            if (replayed, replayed_metadata) == (transfers, metadata):
                assert (error, rows) == (None, [(i,) for i in ids])
            else:
                assert error is errors.UniqueViolation
            return
        balance = dict(self.balance)
        for a, b, amount in transfers:
            if not valid_amount(amount) or (balance[a] - self.held[a] - amount < -self.limits[a]):
                assert error is errors.CheckViolation
                return
            balance[a] -= amount
            balance[b] += amount
        assert error is None
        ids = [entry_id for (entry_id,) in rows]
        for (a, b, amount), debit_id, credit_id in zip(transfers, ids[::2], ids[1::2], strict=True):
            self.apply_transfer(a, b, amount, None, debit_id, credit_id)
        if key is not None:
            self.calls[key] = (transfers, metadata, ids)

    @rule(data=st.data(), hot=st.booleans())
    def set_hot(self, data, hot):
        """A hot wallet's credits are parked: its figures stay exact."""
        if not self.wallets:
            return
        wallet = self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))]
        assert self.call("SELECT economy.set_hot(%s, %s)", [wallet, hot])[1] is None
        (self.hot.add if hot else self.hot.discard)(wallet)
        self.ever_hot |= self.hot

    @rule(data=st.data())
    def reverse(self, data):
        """Reversing a leg of a transfer reverses both legs, or neither."""
        if not self.entries:
            return
        entry = data.draw(st.sampled_from(self.entries))
        rows, error = self.call("SELECT id FROM economy.reverse_transaction(%s)", [entry["id"]])
        legs = [entry] if entry["other_leg"] is None else [entry, entry["other_leg"]]
        if entry["reverses"] is not None:
            assert error is errors.CheckViolation
        elif entry["reversed"]:
            assert error is errors.UniqueViolation
        elif any(self.overdraws(leg["wallet"], -leg["amount"]) for leg in legs):
            assert error is errors.CheckViolation
        else:
            assert error is None
            reversal_ids = []
            for leg in legs:
                leg["reversed"] = True
                reversal_ids.append(
                    self.conn.execute(
                        "SELECT id FROM economy.transaction WHERE reverses_id = %s", [leg["id"]]
                    ).fetchone()[0]
                )
                self.apply(leg["wallet"], -leg["amount"], leg["kind"], reverses=leg["id"],
                           entry_id=reversal_ids[-1])  # fmt: skip
            assert rows == [(reversal_ids[0],)]  # the reversal of the leg it was given

    @rule(data=st.data())
    def forge_an_id_below_the_horizon(self, data):
        """Nobody, superuser included, may add an entry the checkpoint has passed."""
        if not self.entries:
            return
        entry = data.draw(st.sampled_from(self.entries))
        _, error = self.call(
            "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s, 1, 'prize')",
            [entry["id"], entry["wallet"]],
        )
        safe = self.conn.execute("SELECT safe_up_to FROM economy.ledger_horizon").fetchone()[0]
        # at or below the horizon: refused before the primary key is even looked at
        assert error is (errors.CheckViolation if entry["id"] <= safe else errors.UniqueViolation)

    @rule(data=st.data(), amount=amounts)
    def hold(self, data, amount):
        if not self.wallets:
            return
        wallet = self.wallets[data.draw(st.sampled_from(sorted(self.wallets)))]
        rows, error = self.call("SELECT id FROM economy.hold(%s, %s)", [wallet, amount])
        if not valid_amount(amount) or amount < 0 or self.overdraws(wallet, -amount):
            assert error is errors.CheckViolation
        else:
            assert error is None
            self.holds.append({"id": rows[0][0], "wallet": wallet, "amount": amount,
                               "status": "held"})  # fmt: skip
            self.held[wallet] += amount

    @rule(data=st.data(), part=st.sampled_from([None, Decimal("0.01"), Decimal("0.5")]))
    def capture_hold(self, data, part):
        """A capture never overdraws: its hold had set the amount aside."""
        if not self.holds:
            return
        held = data.draw(st.sampled_from(self.holds))
        amount = None if part is None else (held["amount"] * part).quantize(Decimal("0.01"))
        rows, error = self.call(
            "SELECT id FROM economy.capture_hold(%s, %s::numeric)", [held["id"], amount]
        )
        if held["status"] != "held" or amount == 0:
            assert error is errors.CheckViolation
            return
        assert error is None
        held["status"] = "captured"
        self.held[held["wallet"]] -= held["amount"]
        self.apply(held["wallet"], -(amount or held["amount"]), "purchase", entry_id=rows[0][0])

    @rule(data=st.data())
    def release_hold(self, data):
        if not self.holds:
            return
        held = data.draw(st.sampled_from(self.holds))
        _, error = self.call("SELECT economy.release_hold(%s)", [held["id"]])
        if held["status"] != "held":
            assert error is errors.CheckViolation
        else:
            assert error is None
            held["status"] = "released"
            self.held[held["wallet"]] -= held["amount"]

    @rule()
    def advance_checkpoint(self):
        """Must change no total: checked by the invariant."""
        advance_checkpoint(self.conn)

    @rule()
    def reverse_unknown_entry(self):
        assert self.call("SELECT economy.reverse_transaction(-1)", [])[1] is errors.NoDataFound

    @invariant()
    def database_agrees_with_model(self):
        if not getattr(self, "wallets", None):
            return
        ids = list(self.wallets.values())
        # a hot wallet's figures with its parked credits: exact after every commit
        rows = self.conn.execute(
            "SELECT w.id, economy.wallet_balance(w.id), p.balance + coalesce(h.balance, 0),"
            " p.lifetime_earnings + coalesce(h.lifetime_earnings, 0), w.held, w.hot"
            " FROM economy.wallet w JOIN economy.profile p USING (user_id)"
            " LEFT JOIN economy.hot_pending h ON h.wallet_id = w.id WHERE w.id = ANY(%s)",
            [ids],
        ).fetchall()
        for wallet, wallet_balance, profile_balance, earnings, held, hot in rows:
            assert wallet_balance == profile_balance == self.balance[wallet]
            assert earnings == self.earnings[wallet]
            assert held == self.held[wallet]
            assert wallet_balance - held >= -self.limits[wallet]
            assert hot == (wallet in self.hot)
        users = [self.first_user + slot for slot in self.wallets]
        drift = self.conn.execute("SELECT * FROM economy.balance_drift(%s)", [users]).fetchall()
        assert drift == []
        # each wallet's balance_after values, in id order, are its running sum
        # (a parked credit of a hot wallet has none)
        assert (
            self.conn.execute(
                "SELECT * FROM (SELECT id, wallet_id, balance_after,"
                " sum(amount) OVER (PARTITION BY wallet_id ORDER BY id) AS running"
                " FROM economy.transaction WHERE wallet_id = ANY(%s)) e"
                " WHERE balance_after IS DISTINCT FROM running"
                " AND NOT (balance_after IS NULL AND wallet_id = ANY(%s))",
                [ids, list(self.ever_hot)],
            ).fetchall()
            == []
        )


def test_database_agrees_with_the_model(dsn):
    LedgerModel.dsn = dsn
    LedgerModel.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        database=None,  # no example database written into the checkout
        suppress_health_check=[HealthCheck.too_slow],
    )
    LedgerModel.TestCase().runTest()
