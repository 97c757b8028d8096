-- 0013_transfers: metadata on every entry, transfers into hot wallets that wait for
-- no other credit, and economy.transfer_many.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0013_transfers)';

ALTER TABLE economy.transaction ADD COLUMN metadata jsonb;
GRANT INSERT (metadata) ON economy.transaction TO economy_app;

-- One row per economy.transfer_many call made with an idempotency key: the
-- key names the whole call, whose legs may pay from one wallet twice (keys of
-- entries are unique per wallet). A replay returns entry_ids' entries.
CREATE TABLE economy.transfer_many_call (
    idempotency_key text PRIMARY KEY,
    -- the legs in the order the call returned them: debit, credit, debit, ...
    entry_ids bigint [] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON economy.transfer_many_call TO economy_app;

DROP FUNCTION economy.transfer(bigint, bigint, numeric, text, text);
DROP FUNCTION economy.post_transaction(bigint, numeric, text, text, text);
DROP FUNCTION economy.check_replay(economy.transaction, numeric, text, text);

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
CREATE OR REPLACE FUNCTION economy.apply_entry()
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

REVOKE ALL ON FUNCTION economy.check_replay(economy.transaction, numeric, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.post_transaction(bigint, numeric, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer(bigint, bigint, numeric, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.replay_transfer_many(text, bigint[], bigint[], numeric[], text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.post_transaction(bigint, numeric, text, text, text, jsonb),
economy.transfer(bigint, bigint, numeric, text, text, jsonb),
economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb)
TO economy_app;
