-- economy-sync: functions.
-- Lock order, everywhere: wallet rows in ascending id order, then their profile
-- rows. Every writer follows it, so concurrent writers queue instead of
-- deadlocking. SECURITY DEFINER functions pin search_path and name every object
-- with its schema.

-- Raises with the reason an entry could not be applied to its wallet: an
-- unknown wallet, or an id at or below the safe horizon, which only an id
-- chosen by the writer can be (the checkpoint and drift checks rely on it).
CREATE FUNCTION economy.refuse_unapplied_entry(entry economy.transaction)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM economy.wallet w WHERE w.id = entry.wallet_id) THEN
        RAISE EXCEPTION 'wallet % does not exist', entry.wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RAISE EXCEPTION 'ledger id % is at or below the safe horizon: ids are the database''s',
        entry.id
        USING ERRCODE = 'check_violation',
        HINT = 'leave id out of the INSERT (no OVERRIDING SYSTEM VALUE)';
END;
$$;

-- A reversal, before it is applied: locks the wallet of the entry it reverses
-- (both wallets, in id order, for a leg of a transfer, whose other leg is
-- reversed with it), then checks under that lock, where a concurrent reversal
-- has either committed or not started, that the entry exists, is no reversal,
-- is not reversed yet, and that this is its exact negation.
CREATE FUNCTION economy.check_reversal(reversal economy.transaction)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    original economy.transaction;
BEGIN
    SELECT * INTO original FROM economy.transaction t WHERE t.id = reversal.reverses_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transaction % does not exist', reversal.reverses_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM FROM economy.wallet w
    WHERE w.id = original.wallet_id
        OR w.id IN (
            SELECT leg.wallet_id FROM economy.transaction leg
            WHERE leg.id = original.transfer_debit_id OR leg.transfer_debit_id = original.id
        )
    ORDER BY w.id
    FOR NO KEY UPDATE;
    IF original.reverses_id IS NOT NULL THEN
        RAISE EXCEPTION 'transaction % is a reversal and cannot be reversed', original.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT FROM economy.transaction t WHERE t.reverses_id = original.id) THEN
        RAISE EXCEPTION 'transaction % is already reversed', original.id
            USING ERRCODE = 'unique_violation';
    END IF;
    IF reversal.wallet_id <> original.wallet_id
        OR reversal.kind <> original.kind
        OR reversal.amount <> -original.amount THEN
        RAISE EXCEPTION 'a reversal of transaction % must have its wallet and kind and amount %',
            original.id, -original.amount
            USING ERRCODE = 'check_violation';
    END IF;
END;
$$;

-- An amount with exactly 2 decimals when that changes no value (5 -> 5.00);
-- any other amount as it is, for the ledger's CHECKs to refuse: 0.005 is
-- never rounded. The one place for that rule (apply_entry, apply_batch).
CREATE FUNCTION economy.exact_amount(amount numeric)
RETURNS numeric
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN min_scale(amount) <= 2 THEN round(amount, 2) ELSE amount END;
$$;

-- Moves a wallet's parked hot credits (economy.hot_credit) into its cached
-- figures and returns their sum. The caller holds the wallet's row lock, so
-- folds queue; a credit still in flight is not seen and stays parked.
CREATE FUNCTION economy.fold_hot_credits(wallet_id bigint)
RETURNS numeric
LANGUAGE plpgsql
AS $$
DECLARE
    folded_balance numeric;
    folded_earnings numeric;
BEGIN
    WITH folded AS (
        DELETE FROM economy.hot_credit c
        WHERE c.wallet_id = fold_hot_credits.wallet_id
        RETURNING c.amount, c.lifetime_earnings
    )

    SELECT sum(f.amount), sum(f.lifetime_earnings) INTO folded_balance, folded_earnings
    FROM folded f;
    IF folded_balance IS NULL THEN
        RETURN 0.00;
    END IF;
    WITH owner AS (
        UPDATE economy.wallet w SET balance = w.balance + folded_balance
        WHERE w.id = fold_hot_credits.wallet_id
        RETURNING w.user_id
    )

    UPDATE economy.profile p
    SET balance = p.balance + folded_balance,
        lifetime_earnings = p.lifetime_earnings + folded_earnings
    FROM owner o
    WHERE p.user_id = o.user_id;
    RETURN folded_balance;
END;
$$;

-- The setting that holds, while a statement inserts into the ledger, the
-- running balances of its wallets whose id falls in one of 256 groups: a
-- list ',wallet:balance:hot,…' (transaction-local, emptied by apply_entries
-- at the end of each statement). It only saves apply_entry a read per row:
-- any role can change a setting, so apply_entries checks every row's
-- balance_after against the cached balance, read under the wallet's lock.
-- (256: each group is a setting for the rest of the session, and on
-- PostgreSQL 15 every call of a function with a SET clause walks them all;
-- fewer groups would make the lists of a statement over many wallets long.)
CREATE FUNCTION economy.running_setting(wallet_id bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT 'economy.running_' || abs(wallet_id % 256)::text;  -- ::text: immutable, inlined
$$;

-- The running list with the wallet's entry set to balance:hot (replacing
-- `seen`, its entry so far, if any).
CREATE FUNCTION economy.with_running_balance(
    running_list text, wallet_id bigint, seen text, balance numeric, hot boolean
)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE
        WHEN seen IS NULL THEN coalesce(nullif(running_list, ''), ',')
            || wallet_id::text || ':' || balance::text || ':' || hot::text || ','
        ELSE replace(running_list, ',' || wallet_id::text || ':' || seen || ',',
            ',' || wallet_id::text || ':' || balance::text || ':' || hot::text || ',')
    END;
$$;

-- Raises the overdraft refusal of a debit that would take its wallet to
-- `balance` (the one wording of it, for apply_entry and apply_entries).
CREATE FUNCTION economy.refuse_overdraft(
    wallet_id bigint, balance numeric, held numeric, overdraft_limit numeric
)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % - held % < -%',
        wallet_id, balance, held, overdraft_limit
        USING ERRCODE = 'check_violation';
END;
$$;

-- Trigger function, BEFORE INSERT on the ledger, for each row: checks the
-- entry and applies it to the cached figures, or leaves that to the end of
-- its statement (apply_entries), and records the wallet's balance right
-- after it (balance_after). A wallet's first entry in a statement is applied
-- at once, as a single entry always was: one UPDATE of the wallet row both
-- applies the amount and takes the row lock every writer of that wallet, and
-- reconcile, queue on; then the profile's. Its later entries in the
-- statement are left to apply_entries (applied_at_statement_end), each with
-- its running balance, kept in a setting as the statement goes
-- (economy.running_setting): so a statement writes each wallet and profile
-- row at most twice, whatever its number of rows (a row-by-row update would
-- walk a growing chain of row versions: quadratic). Under the wallet's lock
-- an idempotency key already used is seen for sure: such a row is about to
-- be skipped by ON CONFLICT DO NOTHING (or refused as a duplicate), so it
-- counts for nothing. BEFORE, because the ledger is append-only:
-- balance_after must be known before the row is written; and the foreign
-- key's check, at the end of the statement, then finds the wallet row
-- already locked by this transaction.
-- A credit to a hot wallet takes no row lock but KEY SHARE (set_hot(false)
-- waits for it) and is parked, with balance_after NULL. Any other entry on a
-- hot wallet locks it and folds the parked credits first (the wallet's first
-- write), then is left to apply_entries (its second), as are the statement's
-- later entries of that wallet, credits too: it is locked already, and they
-- count in the running balance of its later debits.
CREATE FUNCTION economy.apply_entry()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    setting text;
    running_list text;
    seen text;  -- 'balance:hot' once the statement has applied an entry of the wallet
    running numeric;
    is_hot boolean;
    parkable boolean;
    beyond_horizon boolean;
    owner_id bigint;
    held numeric;
    overdraft numeric;
BEGIN
    IF NEW.wallet_id IS NULL OR NEW.kind IS NULL
        OR NEW.amount IS NULL OR NEW.amount IN ('NaN', 'Infinity', '-Infinity') THEN
        RETURN NEW;  -- refused by the table's NOT NULL and CHECK constraints
    END IF;
    IF scale(NEW.amount) <> 2 THEN  -- most amounts arrive with 2 decimals already
        NEW.amount := economy.exact_amount(NEW.amount);
    END IF;
    IF NEW.reverses_id IS NOT NULL THEN
        PERFORM economy.check_reversal(NEW);
    END IF;
    parkable := NEW.amount > 0 AND NEW.reverses_id IS NULL;
    NEW.applied_at_statement_end := false;
    setting := economy.running_setting(NEW.wallet_id);
    running_list := coalesce(pg_catalog.current_setting(setting, true), '');
    seen := nullif(split_part(split_part(running_list, ',' || NEW.wallet_id || ':', 2), ',', 1), '');

    IF seen IS NULL THEN
        UPDATE economy.wallet w
        SET balance = w.balance + NEW.amount
        WHERE w.id = NEW.wallet_id AND NOT w.hot
            -- the safe horizon: no entry at or below it may commit any more
            AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
        RETURNING w.user_id, w.balance, w.held, w.overdraft_limit
        INTO owner_id, running, held, overdraft;
        IF FOUND THEN
            IF NEW.idempotency_key IS NOT NULL AND EXISTS (
                SELECT FROM economy.transaction t
                WHERE t.wallet_id = NEW.wallet_id AND t.idempotency_key = NEW.idempotency_key
            ) THEN
                UPDATE economy.wallet w SET balance = w.balance - NEW.amount
                WHERE w.id = NEW.wallet_id
                RETURNING w.balance INTO running;
                NEW.balance_after := NULL;
            ELSE
                -- Only debits are refused: a credit to a wallet that is below its
                -- limit (after a repair of bad data) still brings it closer to
                -- allowed. Held amounts are not available.
                IF NEW.amount < 0 AND running - held < -overdraft THEN
                    PERFORM economy.refuse_overdraft(NEW.wallet_id, running, held, overdraft);
                END IF;
                UPDATE economy.profile p
                SET balance = p.balance + NEW.amount,
                    lifetime_earnings = p.lifetime_earnings
                    + economy.earned(NEW.amount, k.is_earning)
                FROM economy.transaction_kind k
                WHERE p.user_id = owner_id AND k.kind = NEW.kind;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'unknown transaction kind %', NEW.kind
                        USING ERRCODE = 'foreign_key_violation';
                END IF;
                NEW.balance_after := running;
            END IF;
            -- (an assignment, not PERFORM: evaluated without a query)
            running_list := pg_catalog.set_config(setting,
                economy.with_running_balance(running_list, NEW.wallet_id, NULL, running, false), true);
            RETURN NEW;
        END IF;
    ELSE
        running := split_part(seen, ':', 1)::numeric;
        is_hot := split_part(seen, ':', 2) = 'true';
    END IF;

    -- a hot wallet (or an unknown one, or an id below the horizon); read
    -- once: the horizon cannot move while this insert is in flight
    -- (mark_ledger_horizon waits for it)
    IF seen IS NULL THEN
        beyond_horizon := NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h);
    END IF;
    IF parkable AND seen IS NULL THEN
        IF NEW.idempotency_key IS NULL THEN
            INSERT INTO economy.hot_credit (wallet_id, amount, lifetime_earnings)
            SELECT w.id, NEW.amount, economy.earned(NEW.amount, k.is_earning)
            FROM economy.wallet w, economy.transaction_kind k
            WHERE w.id = NEW.wallet_id AND w.hot AND k.kind = NEW.kind AND beyond_horizon
            FOR KEY SHARE OF w;
        ELSE
            -- parked by apply_hot_credit once written: ON CONFLICT may skip it
            PERFORM FROM economy.wallet w
            WHERE w.id = NEW.wallet_id AND w.hot AND beyond_horizon
            FOR KEY SHARE;
        END IF;
        IF FOUND THEN
            NEW.balance_after := NULL;
            RETURN NEW;
        END IF;
    END IF;
    IF seen IS NULL THEN
        -- a debit on a hot wallet (or one turned back to normal meanwhile):
        -- locked and folded, then left to the end of the statement. The CTE,
        -- which updates nothing, takes the table's lock for that update
        -- before the row's, as an UPDATE would: a writer that holds a row
        -- must never queue for the table behind a schema change (ALTER TABLE)
        -- that queues for that row.
        WITH table_lock AS (UPDATE economy.wallet SET balance = balance WHERE false)
        SELECT w.balance, w.hot INTO running, is_hot
        FROM economy.wallet w
        WHERE w.id = NEW.wallet_id AND beyond_horizon
        FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            PERFORM economy.refuse_unapplied_entry(NEW);
        END IF;
        IF is_hot THEN
            running := running + economy.fold_hot_credits(NEW.wallet_id);
        END IF;
    END IF;

    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT FROM economy.transaction t
        WHERE t.wallet_id = NEW.wallet_id AND t.idempotency_key = NEW.idempotency_key
    ) THEN
        RETURN NEW;
    END IF;
    running := running + NEW.amount;
    NEW.balance_after := running;
    NEW.applied_at_statement_end := true;
    running_list := pg_catalog.set_config(setting,
        economy.with_running_balance(running_list, NEW.wallet_id, seen, running, is_hot), true);
    RETURN NEW;
END;
$$;

-- Trigger function, AFTER INSERT on the ledger, once per statement: empties
-- the statement's running balances, then applies the entries apply_entry
-- left to it (applied_at_statement_end: only apply_entry sets it) to the
-- cached figures, each wallet and profile updated once. Their wallets are
-- locked already: so this only checks, under those locks, that each
-- wallet's entries, in their order, form a running sum that starts from its
-- cached balance (the settings apply_entry read can be anyone's), that none
-- is at or below the checkpoint's safe horizon (which cannot move while the
-- statement is in flight), and that no debit takes its wallet below
-- -overdraft_limit at its place in the order. Only debits are refused: a
-- credit to a wallet that is below its limit (after a repair of bad data)
-- still brings it closer to allowed. Held amounts are not available.
CREATE FUNCTION economy.apply_entries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    any_left boolean;
    early economy.transaction;
    refused record;
BEGIN
    SELECT bool_or(g.left_here) INTO any_left
    FROM (
        SELECT bool_or(e.applied_at_statement_end) AS left_here,
            pg_catalog.set_config(economy.running_setting(e.wallet_id), '', true)
        FROM entries e
        GROUP BY economy.running_setting(e.wallet_id)
    ) g;
    IF any_left IS NOT TRUE THEN
        RETURN NULL;  -- each was applied by apply_entry (or parked)
    END IF;
    SELECT e.* INTO early FROM entries e
    WHERE e.applied_at_statement_end
        AND e.id <= (SELECT h.safe_up_to FROM economy.ledger_horizon h)
    LIMIT 1;
    IF FOUND THEN
        PERFORM economy.refuse_unapplied_entry(early);
    END IF;

    SELECT r.wallet_id, r.balance_after, r.running, r.held, r.overdraft_limit INTO refused
    FROM (
        SELECT e.id, e.wallet_id, e.amount, e.balance_after, w.held, w.overdraft_limit,
            w.balance + sum(e.amount) OVER (PARTITION BY e.wallet_id ORDER BY e.id) AS running
        FROM entries e
        -- locked already (taken again, in id order, if a setting lied)
        JOIN (
            SELECT w.id, w.balance, w.held, w.overdraft_limit FROM economy.wallet w
            WHERE w.id IN (SELECT x.wallet_id FROM entries x WHERE x.applied_at_statement_end)
            ORDER BY w.id
            FOR NO KEY UPDATE
        ) w ON w.id = e.wallet_id
        WHERE e.applied_at_statement_end
    ) r
    WHERE r.balance_after IS DISTINCT FROM r.running
        OR (r.amount < 0 AND r.running - r.held < -r.overdraft_limit)
    ORDER BY r.id
    LIMIT 1;
    IF FOUND AND refused.balance_after IS DISTINCT FROM refused.running THEN
        RAISE EXCEPTION 'wallet % changed while this statement was adding to it', refused.wallet_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'its balance_after values would not be a running sum: a write of the'
            ' statement''s own (a function it calls, or the reversal of a transfer leg whose'
            ' other wallet it also writes) changed the wallet; make that write in a statement'
            ' of its own';
    ELSIF FOUND THEN
        PERFORM economy.refuse_overdraft(
            refused.wallet_id, refused.running, refused.held, refused.overdraft_limit);
    END IF;

    WITH totals AS (
        SELECT e.wallet_id,
            sum(e.amount) AS amount,
            sum(economy.earned(e.amount, k.is_earning)) AS earnings
        FROM entries e
        JOIN economy.transaction_kind k ON k.kind = e.kind
        WHERE e.applied_at_statement_end
        GROUP BY e.wallet_id
    ),

    wallets AS (
        UPDATE economy.wallet w SET balance = w.balance + t.amount
        FROM totals t
        WHERE w.id = t.wallet_id
        RETURNING w.user_id, t.amount, t.earnings
    )

    UPDATE economy.profile p
    SET balance = p.balance + x.amount, lifetime_earnings = p.lifetime_earnings + x.earnings
    FROM wallets x
    WHERE p.user_id = x.user_id;
    RETURN NULL;
END;
$$;

-- Trigger function, AFTER INSERT of a credit with an idempotency key that
-- apply_entry left unapplied (balance_after NULL) to a hot wallet: parks it.
-- AFTER, so that a row skipped by ON CONFLICT DO NOTHING parks nothing. (The
-- wallet is checked again: with apply_entry alone switched off, entries are
-- left unapplied.)
CREATE FUNCTION economy.apply_hot_credit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO economy.hot_credit (wallet_id, amount, lifetime_earnings)
    SELECT w.id, NEW.amount, economy.earned(NEW.amount, k.is_earning)
    FROM economy.wallet w, economy.transaction_kind k
    WHERE w.id = NEW.wallet_id AND w.hot AND k.kind = NEW.kind;
    RETURN NULL;
END;
$$;

-- Trigger function, AFTER INSERT of a reversal: the legs of a transfer are
-- reversed together, so no reversal creates or destroys money. Reversing one
-- leg inserts the reversal of the other (whose own run of this trigger then
-- finds nothing left to do), in the same transaction, under the wallet locks
-- check_reversal took for both.
CREATE FUNCTION economy.reverse_transfer_leg()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    other_leg_id bigint;
BEGIN
    SELECT coalesce(o.transfer_debit_id, credit.id) INTO other_leg_id
    FROM economy.transaction o
    LEFT JOIN economy.transaction credit ON credit.transfer_debit_id = o.id
    WHERE o.id = NEW.reverses_id;
    IF other_leg_id IS NOT NULL
        AND NOT EXISTS (SELECT FROM economy.transaction r WHERE r.reverses_id = other_leg_id) THEN
        INSERT INTO economy.transaction (wallet_id, amount, kind, reverses_id, memo)
        SELECT o.wallet_id, -o.amount, o.kind, o.id, NEW.memo
        FROM economy.transaction o
        WHERE o.id = other_leg_id;
    END IF;
    RETURN NULL;
END;
$$;

-- Trigger function: the ledger is append-only; corrections are new entries.
CREATE FUNCTION economy.refuse_ledger_change()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'economy.transaction is append-only: % refused; post a reversal instead', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE FUNCTION economy.open_wallet(user_id bigint, overdraft_limit numeric DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    new_wallet_id bigint;
BEGIN
    IF open_wallet.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'not_null_violation';
    END IF;
    IF open_wallet.overdraft_limit IS NULL THEN
        RAISE EXCEPTION 'overdraft_limit must not be null' USING ERRCODE = 'not_null_violation';
    END IF;
    -- NaN is above every number, so BETWEEN also refuses it (and infinities)
    IF NOT open_wallet.overdraft_limit BETWEEN 0 AND 999999999999999.99
        OR scale(open_wallet.overdraft_limit) > 2 THEN
        RAISE EXCEPTION 'overdraft_limit must be from 0 to 999999999999999.99 with at most'
            ' 2 decimal places, got %', open_wallet.overdraft_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.profile (user_id) VALUES (open_wallet.user_id)
    ON CONFLICT DO NOTHING;
    INSERT INTO economy.wallet (user_id, overdraft_limit)
    VALUES (open_wallet.user_id, round(open_wallet.overdraft_limit, 2))
    ON CONFLICT (user_id) DO NOTHING
    RETURNING id INTO new_wallet_id;
    IF new_wallet_id IS NULL THEN
        SELECT w.id INTO new_wallet_id FROM economy.wallet w WHERE w.user_id = open_wallet.user_id;
    END IF;
    RETURN new_wallet_id;
END;
$$;

-- Raises unless a replayed entry carries the payload of the new request.
CREATE FUNCTION economy.check_replay(
    existing economy.transaction, amount numeric, kind text, memo text, metadata jsonb
)
RETURNS economy.transaction
LANGUAGE plpgsql
AS $$
BEGIN
    IF existing.amount <> check_replay.amount
        OR existing.kind <> check_replay.kind
        OR existing.memo IS DISTINCT FROM check_replay.memo
        OR existing.metadata IS DISTINCT FROM check_replay.metadata THEN
        RAISE EXCEPTION 'idempotency key % of wallet % was used for a different entry (#%: % %)',
            existing.idempotency_key, existing.wallet_id, existing.id, existing.amount, existing.kind
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN existing;
END;
$$;

CREATE FUNCTION economy.post_transaction(
    wallet_id bigint,
    amount numeric,
    kind text,
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
)
RETURNS economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    entry economy.transaction;
BEGIN
    -- ON CONFLICT waits for a concurrent insert of the same key; the SELECT,
    -- a new statement with a new snapshot, then sees the committed entry.
    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, idempotency_key, memo, metadata)
    VALUES (wallet_id, amount, kind, idempotency_key, memo, metadata)
    ON CONFLICT ON CONSTRAINT transaction_wallet_idempotency_key DO NOTHING
    RETURNING t.* INTO entry;
    IF entry.id IS NOT NULL THEN
        RETURN entry;
    END IF;
    SELECT t.* INTO STRICT entry
    FROM economy.transaction t
    WHERE t.wallet_id = post_transaction.wallet_id
      AND t.idempotency_key = post_transaction.idempotency_key;
    RETURN economy.check_replay(entry, amount, kind, memo, metadata);
END;
$$;

-- Returns the two entries, debit first: one INSERT of both legs, in wallet id
-- order, as every writer locks wallets (apply_entry locks each as it applies
-- its leg): opposite transfers queue instead of deadlocking. The ids are drawn
-- by that statement, after its lock of the ledger, as the credit names its
-- debit's. A hot payee is not locked: its credit is parked. A leg whose key
-- its wallet has used already is skipped (ON CONFLICT, after waiting for a
-- transfer of that key in flight): both skipped is a replay, one is an error.
CREATE FUNCTION economy.transfer(
    from_wallet_id bigint,
    to_wallet_id bigint,
    amount numeric,
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
)
RETURNS SETOF economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    legs economy.transaction[];
    debit economy.transaction;
    credit economy.transaction;
BEGIN
    IF from_wallet_id = to_wallet_id THEN
        RAISE EXCEPTION 'cannot transfer from wallet % to itself', from_wallet_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT amount > 0 OR amount = 'NaN' THEN
        RAISE EXCEPTION 'transfer amount must be positive, got %', amount
            USING ERRCODE = 'check_violation';
    END IF;
    WITH ids AS (
        SELECT
            nextval('economy.transaction_id_seq') AS debit_id,
            nextval('economy.transaction_id_seq') AS credit_id
    ),

    written AS (
        INSERT INTO economy.transaction AS t (
            id, wallet_id, amount, kind, idempotency_key, memo, metadata, transfer_debit_id
        )
        OVERRIDING SYSTEM VALUE
        SELECT leg.id, leg.wallet_id, leg.amount, 'transfer', idempotency_key, memo, metadata,
            leg.debit_id
        FROM ids,
            LATERAL (VALUES
                (ids.debit_id, from_wallet_id, -amount, NULL::bigint),
                (ids.credit_id, to_wallet_id, amount, ids.debit_id)
            ) AS leg (id, wallet_id, amount, debit_id)
        ORDER BY leg.wallet_id
        ON CONFLICT ON CONSTRAINT transaction_wallet_idempotency_key DO NOTHING
        RETURNING t
    )

    SELECT array_agg(w.t ORDER BY (w.t).id) INTO legs FROM written w;
    IF cardinality(legs) = 2 THEN
        RETURN NEXT legs[1];
        RETURN NEXT legs[2];
        RETURN;
    END IF;
    SELECT t.* INTO debit FROM economy.transaction t
    WHERE t.wallet_id = from_wallet_id AND t.idempotency_key = transfer.idempotency_key;
    SELECT t.* INTO credit FROM economy.transaction t
    WHERE t.wallet_id = to_wallet_id AND t.idempotency_key = transfer.idempotency_key;
    IF legs IS NOT NULL OR credit.transfer_debit_id IS DISTINCT FROM debit.id THEN
        RAISE EXCEPTION 'idempotency key % was used on wallet % for another entry',
            idempotency_key, CASE WHEN debit.id IS NULL THEN from_wallet_id ELSE to_wallet_id END
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEXT economy.check_replay(debit, -amount, 'transfer', memo, metadata);
    RETURN NEXT economy.check_replay(credit, amount, 'transfer', memo, metadata);
END;
$$;

-- The entries of an earlier transfer_many call made with this key, when this
-- call asks for the same transfers in the same order, memo and metadata.
CREATE FUNCTION economy.replay_transfer_many(
    idempotency_key text,
    from_wallet_ids bigint [],
    to_wallet_ids bigint [],
    amounts numeric [],
    memo text,
    metadata jsonb
)
RETURNS SETOF economy.transaction
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    ids bigint [];
BEGIN
    SELECT c.entry_ids INTO STRICT ids
    FROM economy.transfer_many_call c
    WHERE c.idempotency_key = replay_transfer_many.idempotency_key;
    IF cardinality(ids) <> 2 * cardinality(amounts) OR EXISTS (
        SELECT
        FROM unnest(from_wallet_ids, to_wallet_ids, amounts)
            WITH ORDINALITY AS x (payer, payee, amount, i)
        LEFT JOIN economy.transaction d ON d.id = ids[2 * x.i - 1]
        LEFT JOIN economy.transaction c ON c.id = ids[2 * x.i]
        WHERE d.wallet_id IS DISTINCT FROM x.payer OR c.wallet_id IS DISTINCT FROM x.payee
            OR d.amount IS DISTINCT FROM -x.amount OR c.amount IS DISTINCT FROM x.amount
            OR d.memo IS DISTINCT FROM memo OR d.metadata IS DISTINCT FROM metadata
    ) THEN
        RAISE EXCEPTION 'idempotency key % was used for a different transfer_many call'
            ' (entries #% to #%)', idempotency_key, ids[1], ids[cardinality(ids)]
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN QUERY SELECT t.* FROM economy.transaction t WHERE t.id = ANY (ids) ORDER BY t.id;
END;
$$;

-- n transfers in one statement, all or nothing: for each i in order its
-- debit, then its credit. The legs are inserted in wallet id order (each
-- wallet's legs in the order of the call), as every writer locks wallets:
-- calls in any order queue instead of deadlocking, and each wallet's running
-- balance and overdraft checks are those of the call's order. The ids are
-- drawn first, under the ledger's lock (so the safe horizon cannot pass
-- them), as a credit names its debit's. An idempotency key names the whole
-- call (economy.transfer_many_call): the legs carry none, as one wallet may
-- pay twice in one call.
CREATE FUNCTION economy.transfer_many(
    from_wallet_ids bigint [],
    to_wallet_ids bigint [],
    amounts numeric [],
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL,
    metadata jsonb DEFAULT NULL
)
RETURNS SETOF economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    n CONSTANT integer := cardinality(amounts);
    refused record;
    ids bigint [];
    claimed boolean;
BEGIN
    IF array_ndims(from_wallet_ids) IS DISTINCT FROM 1
        OR array_ndims(to_wallet_ids) IS DISTINCT FROM 1
        OR array_ndims(amounts) IS DISTINCT FROM 1
        OR cardinality(from_wallet_ids) <> n OR cardinality(to_wallet_ids) <> n THEN
        RAISE EXCEPTION 'transfer_many takes from_wallet_ids, to_wallet_ids and amounts of one'
            ' length n >= 1, got lengths %, % and %', coalesce(cardinality(from_wallet_ids), 0),
            coalesce(cardinality(to_wallet_ids), 0), coalesce(n, 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.* INTO refused
    FROM unnest(from_wallet_ids, to_wallet_ids, amounts) WITH ORDINALITY AS x (payer, payee, amount, i)
    WHERE x.payer IS NULL OR x.payee IS NULL OR x.payer = x.payee
        OR x.amount IS NULL OR NOT x.amount > 0 OR x.amount = 'NaN'
    ORDER BY x.i
    LIMIT 1;
    IF NOT FOUND THEN
        NULL;
    ELSIF refused.payer IS NULL OR refused.payee IS NULL THEN
        RAISE EXCEPTION 'transfer %: wallet ids must not be null', refused.i
            USING ERRCODE = 'not_null_violation';
    ELSIF refused.payer = refused.payee THEN
        RAISE EXCEPTION 'transfer %: cannot transfer from wallet % to itself', refused.i, refused.payer
            USING ERRCODE = 'check_violation';
    ELSE
        RAISE EXCEPTION 'transfer %: amount must be positive, got %', refused.i,
            coalesce(refused.amount::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;

    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    ids := ARRAY(
        SELECT nextval('economy.transaction_id_seq') FROM generate_series(1, 2 * n)
    );
    IF idempotency_key IS NOT NULL THEN
        -- waits for a concurrent call of the same key, before locking a wallet
        INSERT INTO economy.transfer_many_call AS c (idempotency_key, entry_ids)
        VALUES (idempotency_key, ids)
        ON CONFLICT ON CONSTRAINT transfer_many_call_pkey DO NOTHING
        RETURNING true INTO claimed;
        IF claimed IS NULL THEN
            RETURN QUERY SELECT * FROM economy.replay_transfer_many(
                idempotency_key, from_wallet_ids, to_wallet_ids, amounts, memo, metadata
            );
            RETURN;
        END IF;
    END IF;

    RETURN QUERY
    WITH legs AS (
        INSERT INTO economy.transaction AS t (
            id, wallet_id, amount, kind, memo, metadata, transfer_debit_id
        )
        OVERRIDING SYSTEM VALUE
        SELECT
            ids[2 * x.i - 1 + leg.is_credit::integer],
            CASE WHEN leg.is_credit THEN x.payee ELSE x.payer END,
            CASE WHEN leg.is_credit THEN x.amount ELSE -x.amount END,
            'transfer', memo, metadata,
            CASE WHEN leg.is_credit THEN ids[2 * x.i - 1] END
        FROM unnest(from_wallet_ids, to_wallet_ids, amounts)
            WITH ORDINALITY AS x (payer, payee, amount, i)
        CROSS JOIN (VALUES (false), (true)) AS leg (is_credit)
        ORDER BY CASE WHEN leg.is_credit THEN x.payee ELSE x.payer END, x.i
        RETURNING t.*
    )

    SELECT * FROM legs ORDER BY legs.id;
END;
$$;

CREATE FUNCTION economy.reverse_transaction(transaction_id bigint, memo text DEFAULT NULL)
RETURNS economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    reversal economy.transaction;
BEGIN
    -- check_reversal validates it under the wallet lock; a transfer's other
    -- leg is reversed with it by the reverse_transfer_leg trigger.
    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, reverses_id, memo)
    SELECT o.wallet_id, -o.amount, o.kind, o.id, coalesce(memo, 'reversal of #' || o.id)
    FROM economy.transaction o
    WHERE o.id = transaction_id
    RETURNING t.* INTO reversal;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transaction % does not exist', transaction_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN reversal;
END;
$$;

-- Raises unless the transaction takes a new snapshot for each statement
-- (READ COMMITTED): `step` waits for writers, then must see what they wrote.
CREATE FUNCTION economy.refuse_snapshot_isolation(step text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% needs READ COMMITTED: a snapshot taken after its waits', step
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
END;
$$;

-- Step 1 of advancing the checkpoint, in a short transaction of its own:
-- wait out the inserts in flight (SHARE conflicts with their ROW EXCLUSIVE
-- lock), then every id the identity has handed out belongs to an entry that
-- has committed or never will, and any later entry gets a larger id (an
-- entry with a chosen id is refused by apply_entry at or below the horizon).
-- Records that id as safe. Waits at most lock_timeout for the lock: new
-- inserts queue behind the wait. (An attachment's: mark_attached_horizon.)
CREATE FUNCTION economy.mark_ledger_horizon(attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN economy.mark_attached_horizon(economy.attachment(attachment));
    END IF;
    PERFORM economy.refuse_snapshot_isolation('mark_ledger_horizon');
    IF (SELECT s.cache_size FROM pg_catalog.pg_sequences s
        WHERE s.schemaname = 'economy' AND s.sequencename = 'transaction_id_seq') <> 1 THEN
        RAISE EXCEPTION 'the ledger id sequence caches values: ids would not grow in commit order'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    BEGIN
        LOCK TABLE economy.transaction IN SHARE MODE;
    EXCEPTION
        WHEN lock_not_available THEN
            RAISE EXCEPTION 'mark_ledger_horizon: inserts in flight held the ledger for over %:'
                ' the checkpoint was not advanced; try again', current_setting('lock_timeout')
                USING ERRCODE = 'lock_not_available';
    END;
    horizon := coalesce(pg_sequence_last_value('economy.transaction_id_seq'), 0);
    UPDATE economy.ledger_horizon h SET safe_up_to = greatest(h.safe_up_to, horizon);
    RETURN horizon;
END;
$$;

-- Step 2, in its own transaction: fold the entries up to the safe horizon
-- into the checkpoint. Concurrent calls queue on the horizon row. (An
-- attachment's: advance_attached_checkpoint.)
CREATE FUNCTION economy.advance_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done bigint;
    target bigint;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN economy.advance_attached_checkpoint(economy.attachment(attachment));
    END IF;
    SELECT h.checkpointed_up_to, h.safe_up_to INTO done, target
    FROM economy.ledger_horizon h
    FOR UPDATE;
    IF target > done THEN
        INSERT INTO economy.ledger_checkpoint AS c (wallet_id, balance, lifetime_earnings)
        SELECT e.wallet_id, sum(e.balance), sum(e.lifetime_earnings)
        FROM economy.ledger_entry_effects e
        WHERE e.id > done AND e.id <= target
        GROUP BY e.wallet_id
        ON CONFLICT (wallet_id) DO UPDATE
        SET balance = c.balance + excluded.balance,
            lifetime_earnings = c.lifetime_earnings + excluded.lifetime_earnings;
        UPDATE economy.ledger_horizon h SET checkpointed_up_to = target;
    END IF;
    RETURN target;
END;
$$;

-- Both steps, each in a transaction of its own, in one call (for a scheduler:
-- pg_cron runs `CALL economy.checkpoint_ledger()`); returns the ledger id now
-- covered. Called outside a transaction block. (No SET clause: it would
-- forbid the COMMIT between the steps; every name is schema-qualified.)
CREATE PROCEDURE economy.checkpoint_ledger(
    INOUT covered_up_to bigint DEFAULT NULL, attachment text DEFAULT NULL
)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM economy.mark_ledger_horizon(attachment);
    COMMIT;
    covered_up_to := economy.advance_ledger_checkpoint(attachment);
END;
$$;

-- The occasional full audit of the checkpoint itself: one row per wallet and
-- figure where it differs from a full sum of the entries it covers. Reads the
-- whole ledger, in one snapshot.
CREATE FUNCTION economy.audit_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS TABLE (wallet_id bigint, field text, checkpoint_value numeric, ledger_value numeric)
LANGUAGE plpgsql
STABLE
-- as balance_drift: the join with the checkpoint in memory, nothing compiled
SET work_mem = '256MB'
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN QUERY SELECT * FROM economy.audit_attached_checkpoint(economy.attachment(attachment));
        RETURN;
    END IF;
    RETURN QUERY
        WITH covered AS (
            SELECT
                e.wallet_id,
                sum(e.balance) AS balance,
                sum(e.lifetime_earnings) AS lifetime_earnings
            FROM economy.ledger_entry_effects e
            WHERE e.id <= (SELECT h.checkpointed_up_to FROM economy.ledger_horizon h)
            GROUP BY e.wallet_id
        )

        SELECT coalesce(c.wallet_id, s.wallet_id), f.field, f.checkpoint_value, f.ledger_value
        FROM economy.ledger_checkpoint c
        FULL JOIN covered s ON s.wallet_id = c.wallet_id
        CROSS JOIN LATERAL (
            VALUES
            ('balance', coalesce(c.balance, 0.00), coalesce(s.balance, 0.00)),
            ('lifetime_earnings', coalesce(c.lifetime_earnings, 0.00), coalesce(s.lifetime_earnings, 0.00))
        ) AS f (field, checkpoint_value, ledger_value)
        WHERE f.checkpoint_value <> f.ledger_value
        ORDER BY 1, 2;
END;
$$;

-- Empties the checkpoint (after a failed audit): drift checks then sum the
-- whole ledger until the next advance_ledger_checkpoint() rebuilds it.
CREATE FUNCTION economy.reset_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        PERFORM economy.reset_attached_checkpoint(economy.attachment(attachment));
        RETURN;
    END IF;
    PERFORM FROM economy.ledger_horizon h FOR UPDATE;
    DELETE FROM economy.ledger_checkpoint;
    UPDATE economy.ledger_horizon h SET checkpointed_up_to = 0;
END;
$$;

-- The settings through which code run in a session decides what later code
-- there means: which function a name calls, whether function bodies are
-- checked, how PL/pgSQL reads a name.
CREATE FUNCTION economy.session_settings()
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT concat_ws(' | ', current_setting('search_path'), current_setting('check_function_bodies'),
        current_setting('plpgsql.variable_conflict', true),
        -- and the session's temporary relations: they come first in name
        -- lookups of relations (a temporary view named pg_trigger would run
        -- its owner's code for whoever reads pg_trigger unqualified)
        (SELECT count(*) FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.pg_my_temp_schema()));
$$;

-- Raises unless the session's settings are still `before`. Called right after
-- a generated function ran (and, in it, code the app's tables' owner
-- supplies, as the attachment's sync role): a session-wide set_config or a
-- temporary relation made there would outlive it and steer what the caller
-- runs next (an installer's, an app login's). The error rolls the change
-- back with the statement.
CREATE FUNCTION economy.refuse_changed_settings(before text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF economy.session_settings() IS DISTINCT FROM before THEN
        RAISE EXCEPTION 'economy-sync: code run for an attachment changed this session''s'
            ' settings (from % to %): refused', before, economy.session_settings()
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END;
$$;

-- Locks the given wallet rows, then the given profile rows, each set in
-- ascending key order, without ever waiting for a row while holding another
-- of them: a try locks each set with NOWAIT, in a subtransaction; when a row
-- is busy the try is undone (what it took is released), that row alone is
-- waited for (and released), and the next try starts. So a transaction that
-- held no row lock before cannot deadlock here, whatever order the app's own
-- transactions lock wallets in (a user's wallet, then a lower-id treasury).
-- Each wait obeys lock_timeout. Keys of missing rows are skipped. `strength`
-- is the wallets' (FOR UPDATE waits for the KEY SHARE of credits in flight);
-- profiles are locked FOR NO KEY UPDATE, as the sync's own UPDATE does.
CREATE FUNCTION economy.lock_rows(
    wallet regclass,
    wallet_key name,
    wallet_keys bigint[],
    profile regclass DEFAULT NULL,
    profile_key name DEFAULT NULL,
    profile_keys bigint[] DEFAULT NULL,
    strength text DEFAULT 'NO KEY UPDATE'
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lock_set CONSTANT text := 'SELECT FROM %s t WHERE t.%I = ANY ($1) ORDER BY t.%2$I FOR %s NOWAIT';
    -- the smallest key of the set that exists and is locked by another
    first_busy CONSTANT text := 'WITH free AS (SELECT t.%2$I FROM %1$s t WHERE t.%2$I = ANY ($1)'
        ' FOR %3$s SKIP LOCKED) SELECT min(t.%2$I) FROM %1$s t'
        ' WHERE t.%2$I = ANY ($1) AND t.%2$I NOT IN (SELECT f.%2$I FROM free f)';
    busy_table regclass;
    busy_column name;
    busy_key bigint;
BEGIN
    IF strength NOT IN ('UPDATE', 'NO KEY UPDATE') THEN
        RAISE EXCEPTION 'strength must be UPDATE or NO KEY UPDATE, got %', strength
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        BEGIN
            EXECUTE format(lock_set, wallet, wallet_key, strength) USING wallet_keys;
            IF profile IS NOT NULL THEN
                EXECUTE format(lock_set, profile, profile_key, 'NO KEY UPDATE') USING profile_keys;
            END IF;
            RETURN;  -- every row taken: the subtransaction's locks stay
        EXCEPTION
            WHEN lock_not_available THEN NULL;  -- undone: nothing held
        END;
        -- which row is busy, looked for with SKIP LOCKED; the look is undone too
        BEGIN
            busy_table := wallet;
            busy_column := wallet_key;
            EXECUTE format(first_busy, wallet, wallet_key, strength) INTO busy_key USING wallet_keys;
            IF busy_key IS NULL AND profile IS NOT NULL THEN
                busy_table := profile;
                busy_column := profile_key;
                EXECUTE format(first_busy, profile, profile_key, 'NO KEY UPDATE') INTO busy_key
                USING profile_keys;
            END IF;
            RAISE EXCEPTION 'undo' USING ERRCODE = 'ES001';
        EXCEPTION
            WHEN SQLSTATE 'ES001' THEN NULL;
        END;
        IF busy_key IS NOT NULL THEN
            -- holding nothing, wait for that row alone, then let it go
            BEGIN
                EXECUTE format('SELECT FROM %s t WHERE t.%I = $1 FOR %s', busy_table, busy_column,
                    CASE WHEN busy_table = wallet THEN strength ELSE 'NO KEY UPDATE' END)
                USING busy_key;
                RAISE EXCEPTION 'undo' USING ERRCODE = 'ES001';
            EXCEPTION
                WHEN SQLSTATE 'ES001' THEN NULL;
            END;
        END IF;
    END LOOP;
END;
$$;

-- Every user whose cached figures disagree with the ledger, one row each
-- (with their wallet's, if any): the exact cached figures (a hot wallet's
-- parked credits added), what the ledger and the holds say they must be, and
-- the parked credits, which a repair leaves parked. Reads one snapshot and
-- takes no locks: a cache and its ledger rows commit together, so a single
-- snapshot sees both or neither. balance_drift lists the fields that differ;
-- reconcile_economy repairs from these rows.
CREATE FUNCTION economy.drifted_figures(user_ids bigint[])
RETURNS TABLE (
    user_id bigint,
    wallet_id bigint,
    wallet_balance numeric,
    wallet_held numeric,
    profile_balance numeric,
    profile_earnings numeric,
    ledger_balance numeric,
    ledger_earnings numeric,
    holds_held numeric,
    parked_balance numeric,
    parked_earnings numeric
)
LANGUAGE plpgsql
STABLE
-- plan with the actual arguments: a whole-ledger aggregate when user_ids is
-- NULL, index lookups of a few wallets otherwise
SET plan_cache_mode = force_custom_plan
-- a check of everyone joins every wallet, profile and checkpoint row: in
-- memory (about 200 MB per million wallets), and not worth compiling
SET work_mem = '256MB'
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    wallet_ids bigint[];
BEGIN
    IF user_ids IS NOT NULL THEN
        wallet_ids := ARRAY(SELECT w.id FROM economy.wallet w WHERE w.user_id = ANY (user_ids));
    END IF;

    RETURN QUERY
    WITH holds AS (
        SELECT h.wallet_id, sum(h.amount) AS held
        FROM economy.wallet_hold h
        WHERE h.status = 'held' AND (wallet_ids IS NULL OR h.wallet_id = ANY (wallet_ids))
        GROUP BY h.wallet_id
    ),

    parked AS (
        SELECT hp.wallet_id, hp.balance, hp.lifetime_earnings
        FROM economy.hot_pending hp
        WHERE wallet_ids IS NULL OR hp.wallet_id = ANY (wallet_ids)
    ),

    figures AS (
        SELECT
            p.user_id,
            w.id AS wallet_id,
            w.balance + coalesce(pk.balance, 0.00) AS wallet_balance,
            w.held AS wallet_held,
            p.balance + coalesce(pk.balance, 0.00) AS profile_balance,
            p.lifetime_earnings + coalesce(pk.lifetime_earnings, 0.00) AS profile_earnings,
            coalesce(t.balance, 0.00) AS ledger_balance,
            coalesce(t.lifetime_earnings, 0.00) AS ledger_earnings,
            coalesce(hd.held, 0.00) AS holds_held,
            coalesce(pk.balance, 0.00) AS parked_balance,
            coalesce(pk.lifetime_earnings, 0.00) AS parked_earnings
        FROM economy.profile p
        LEFT JOIN economy.wallet w ON w.user_id = p.user_id
        LEFT JOIN economy.wallet_totals(wallet_ids) t ON t.wallet_id = w.id
        LEFT JOIN holds hd ON hd.wallet_id = w.id
        LEFT JOIN parked pk ON pk.wallet_id = w.id
        WHERE drifted_figures.user_ids IS NULL OR p.user_id = ANY (drifted_figures.user_ids)
    )

    SELECT f.*
    FROM figures f
    WHERE (
        f.wallet_id IS NOT NULL
        AND (
            f.wallet_balance IS DISTINCT FROM f.ledger_balance
            OR f.wallet_held IS DISTINCT FROM f.holds_held
        )
    )
    OR f.profile_balance IS DISTINCT FROM f.ledger_balance
    OR f.profile_earnings IS DISTINCT FROM f.ledger_earnings;
END;
$$;

-- One row per cached field that disagrees with the ledger (see
-- drifted_figures), in user order. With an attachment: that attachment's
-- generated drift function (35_attach.sql).
CREATE FUNCTION economy.balance_drift(user_ids bigint[] DEFAULT NULL, attachment text DEFAULT NULL)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    settings text;
BEGIN
    IF NOT economy.own_tables(balance_drift.attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        RETURN QUERY EXECUTE format('SELECT * FROM economy.%I($1)', economy.attached_object(
            (economy.attachment(balance_drift.attachment)).name, 'drift'))
        USING balance_drift.user_ids;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN;
    END IF;

    RETURN QUERY
    SELECT d.user_id, d.wallet_id, f.field, f.cached_value, f.ledger_value
    FROM economy.drifted_figures(balance_drift.user_ids) d
    CROSS JOIN LATERAL (
        VALUES
        (1, 'wallet.balance', d.wallet_balance, d.ledger_balance),
        (2, 'wallet.held', d.wallet_held, d.holds_held),
        (3, 'profile.balance', d.profile_balance, d.ledger_balance),
        (4, 'profile.lifetime_earnings', d.profile_earnings, d.ledger_earnings)
    ) AS f (position, field, cached_value, ledger_value)
    WHERE f.cached_value IS DISTINCT FROM f.ledger_value
        AND NOT (f.field LIKE 'wallet.%' AND d.wallet_id IS NULL)
    ORDER BY d.user_id, f.position;
END;
$$;

-- The drift rows of the first max_wallets drifted users, in user order (an
-- attachment's ownerless wallets, a NULL user, last; of all when NULL): what
-- one bounded reconcile covers, dry or real.
CREATE FUNCTION economy.bounded_drift(user_ids bigint[], max_wallets integer, attachment text)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE sql
STABLE
AS $$
    SELECT d.user_id, d.wallet_id, d.field, d.cached_value, d.ledger_value
    FROM (
        SELECT d.*, dense_rank() OVER (ORDER BY d.user_id NULLS LAST) AS nth
        FROM economy.balance_drift(bounded_drift.user_ids, bounded_drift.attachment) d
    ) d
    WHERE bounded_drift.max_wallets IS NULL OR d.nth <= bounded_drift.max_wallets;
$$;

-- Drift rows plus whether each was fixed. A dry run is the drift check
-- (bounded_drift), with the caller's rights: the app's role may run it. A
-- real run is economy.repair_economy, the operator's.
CREATE FUNCTION economy.reconcile_economy(
    dry_run boolean DEFAULT true,
    user_ids bigint[] DEFAULT NULL,
    max_wallets integer DEFAULT NULL,
    run_id uuid DEFAULT NULL,
    attachment text DEFAULT NULL
)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric,
    fixed boolean
)
LANGUAGE plpgsql
AS $$
BEGIN
    IF dry_run IS NULL THEN
        RAISE EXCEPTION 'dry_run must be true or false' USING ERRCODE = 'not_null_violation';
    END IF;
    IF max_wallets < 0 THEN
        RAISE EXCEPTION 'max_wallets must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dry_run THEN
        RETURN QUERY
        SELECT d.*, false
        FROM economy.bounded_drift(
            reconcile_economy.user_ids, reconcile_economy.max_wallets,
            reconcile_economy.attachment
        ) d;
    ELSE
        RETURN QUERY
        SELECT * FROM economy.repair_economy(
            reconcile_economy.user_ids, reconcile_economy.max_wallets, reconcile_economy.run_id,
            reconcile_economy.attachment
        );
    END IF;
END;
$$;

-- A real reconcile (economy.reconcile_economy(dry_run => false)), the
-- operator's: the drift rows it fixed. It locks the drifted wallets
-- and profiles (writers' lock order), measures again with a snapshot taken
-- after the locks, so every committed entry is both in the sum and in the
-- cache it overwrites, and no in-flight entry is in either; then sets each
-- cache to its ledger value and logs the fix, under run_id (one per call
-- unless given: a run of many batches passes its own). It also folds the
-- parked credits of the hot wallets it covers; a hot wallet's cache is set
-- to its ledger value less the credits parked after that fold.
CREATE FUNCTION economy.repair_economy(
    user_ids bigint[], max_wallets integer, run_id uuid, attachment text
)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric,
    fixed boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    settings text;
    drifted_users bigint[];
    this_run_id uuid := coalesce(repair_economy.run_id, gen_random_uuid());
BEGIN
    IF NOT economy.own_tables(repair_economy.attachment) THEN
        IF max_wallets IS NOT NULL THEN
            user_ids := ARRAY(
                SELECT DISTINCT d.user_id
                FROM economy.bounded_drift(user_ids, max_wallets, repair_economy.attachment) d
            );
        END IF;
        settings := economy.session_settings();  -- before code run for the attachment
        RETURN QUERY EXECUTE format(
            'WITH fixes AS (SELECT * FROM economy.%I($1, $2)),'
            ' logged AS (INSERT INTO economy.reconcile_log'
            ' (run_id, attachment, user_id, wallet_id, field, cached_value, ledger_value)'
            ' SELECT $3, $4, f.user_id, f.wallet_id, f.field, f.cached_value, f.ledger_value'
            ' FROM fixes f WHERE f.fixed)'
            ' SELECT * FROM fixes',
            economy.attached_object(
                (economy.attachment(repair_economy.attachment)).name, 'reconcile'))
        USING false, repair_economy.user_ids, this_run_id, repair_economy.attachment;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN;
    END IF;

    SELECT coalesce(array_agg(u.user_id ORDER BY u.user_id), '{}') INTO drifted_users
    FROM (
        SELECT d.user_id
        FROM economy.bounded_drift(
            repair_economy.user_ids, repair_economy.max_wallets, repair_economy.attachment
        ) d
        UNION
        SELECT w.user_id
        FROM economy.wallet w
        WHERE w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
            AND (repair_economy.user_ids IS NULL OR w.user_id = ANY (repair_economy.user_ids))
    ) u;

    PERFORM economy.lock_rows(
        'economy.wallet', 'id',
        ARRAY(SELECT w.id FROM economy.wallet w WHERE w.user_id = ANY (drifted_users)),
        'economy.profile', 'user_id', drifted_users
    );
    PERFORM economy.fold_hot_credits(w.id)
    FROM economy.wallet w
    WHERE w.user_id = ANY (drifted_users) AND w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
    ORDER BY w.id;

    -- A new statement, so a new snapshot: taken after the locks. A hot
    -- wallet's caches are set to the ledger less the credits parked since.
    RETURN QUERY
    WITH drifted AS (
        SELECT * FROM economy.drifted_figures(drifted_users)
    ),

    wallet_fix AS (
        UPDATE economy.wallet w
        SET balance = d.ledger_balance - d.parked_balance, held = d.holds_held
        FROM drifted d
        WHERE w.id = d.wallet_id
            AND (d.wallet_balance <> d.ledger_balance OR d.wallet_held <> d.holds_held)
    ),

    profile_fix AS (
        UPDATE economy.profile p
        SET balance = d.ledger_balance - d.parked_balance,
            lifetime_earnings = d.ledger_earnings - d.parked_earnings
        FROM drifted d
        WHERE p.user_id = d.user_id
            AND (d.profile_balance <> d.ledger_balance OR d.profile_earnings <> d.ledger_earnings)
    ),

    drift AS (
        SELECT * FROM economy.balance_drift(drifted_users)
    ),

    logged AS (
        INSERT INTO economy.reconcile_log (
            run_id, user_id, wallet_id, field, cached_value, ledger_value
        )
        SELECT this_run_id, d.user_id, d.wallet_id, d.field,
            d.cached_value, d.ledger_value
        FROM drift d
    )

    SELECT d.user_id, d.wallet_id, d.field, d.cached_value, d.ledger_value, true
    FROM drift d;
END;
$$;

-- Retention of the audit log: deletes the fixes logged more than older_than
-- ago; returns how many.
CREATE FUNCTION economy.prune_reconcile_log(older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of at least 0, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM economy.reconcile_log l WHERE l.at < now() - older_than;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END;
$$;

-- Deletes the keys of transfer_many calls made more than `older_than` ago
-- (retention, for a scheduler): a call retried with a pruned key transfers
-- again, so keep them longer than any client retries. Returns how many.
CREATE FUNCTION economy.prune_transfer_keys(older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of at least 0, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM economy.transfer_many_call k WHERE k.created_at < now() - older_than;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END;
$$;
