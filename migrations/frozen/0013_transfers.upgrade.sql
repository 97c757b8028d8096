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

-- Locks the wallets of transfers before they look for an earlier transfer of
-- their idempotency key, in id order, as every writer does; the caller holds
-- the ledger's lock already (an INSERT takes it before its trigger locks a
-- wallet: holding a wallet while queueing for the ledger behind
-- mark_ledger_horizon() would make a cycle).
-- A hot payee that pays nothing is not locked for writing: its credit is
-- parked (apply_entry) and waits for no other. Its KEY SHARE lock, taken
-- first, blocks only set_hot(false), which holds nothing while it waits: the
-- wallet stays hot until this transaction ends. Then every other wallet, in
-- id order.
CREATE FUNCTION economy.lock_transfer_wallets(payers bigint[], payees bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hot_payees bigint[];
BEGIN
    hot_payees := ARRAY(
        SELECT w.id FROM economy.wallet w
        WHERE w.id = ANY (payees) AND w.hot AND w.id <> ALL (payers)
        ORDER BY w.id
        FOR KEY SHARE
    );
    -- read again, in a new snapshot: a KEY SHARE lock is granted on a row
    -- that set_hot(false) changed meanwhile without checking it again
    hot_payees := ARRAY(
        SELECT w.id FROM economy.wallet w WHERE w.id = ANY (hot_payees) AND w.hot
    );
    PERFORM FROM economy.wallet w
    WHERE w.id = ANY (payers || payees) AND w.id <> ALL (hot_payees)
    ORDER BY w.id
    FOR NO KEY UPDATE;
END;
$$;

-- Returns the two entries, debit first: one INSERT of both legs, in wallet id
-- order, as every writer locks wallets (apply_entry locks each as it applies
-- its leg): opposite transfers queue instead of deadlocking. The ids are drawn
-- by that statement, after its lock of the ledger, as the credit names its
-- debit's. A hot payee is not locked: its credit is parked.
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

    IF idempotency_key IS NOT NULL THEN
        -- the wallets first: a concurrent transfer of the key then has committed
        LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
        PERFORM economy.lock_transfer_wallets(ARRAY[from_wallet_id], ARRAY[to_wallet_id]);
        SELECT t.* INTO debit FROM economy.transaction t
        WHERE t.wallet_id = from_wallet_id AND t.idempotency_key = transfer.idempotency_key;
        IF FOUND THEN
            SELECT t.* INTO credit FROM economy.transaction t
            WHERE t.wallet_id = to_wallet_id AND t.idempotency_key = transfer.idempotency_key;
            IF NOT FOUND THEN
                credit := debit;  -- reported as a mismatch by check_replay
            END IF;
            RETURN NEXT economy.check_replay(debit, -amount, 'transfer', memo, metadata);
            RETURN NEXT economy.check_replay(credit, amount, 'transfer', memo, metadata);
            RETURN;
        END IF;
    END IF;

    RETURN QUERY
    WITH ids AS (
        SELECT
            nextval('economy.transaction_id_seq') AS debit_id,
            nextval('economy.transaction_id_seq') AS credit_id
    ),

    legs AS (
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
        RETURNING t.*
    )

    SELECT * FROM legs ORDER BY legs.id;
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

REVOKE ALL ON FUNCTION economy.check_replay(economy.transaction, numeric, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.post_transaction(bigint, numeric, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.lock_transfer_wallets(bigint[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer(bigint, bigint, numeric, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.replay_transfer_many(text, bigint[], bigint[], numeric[], text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.post_transaction(bigint, numeric, text, text, text, jsonb),
economy.transfer(bigint, bigint, numeric, text, text, jsonb),
economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb)
TO economy_app;
