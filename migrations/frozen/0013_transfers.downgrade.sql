-- 0013_transfers: back to 0012_hosted_roles.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0012_hosted_roles)';

DROP FUNCTION economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb);
DROP FUNCTION economy.replay_transfer_many(text, bigint[], bigint[], numeric[], text, jsonb);
DROP FUNCTION economy.transfer(bigint, bigint, numeric, text, text, jsonb);
DROP FUNCTION economy.lock_transfer_wallets(bigint[], bigint[]);
DROP FUNCTION economy.post_transaction(bigint, numeric, text, text, text, jsonb);
DROP FUNCTION economy.check_replay(economy.transaction, numeric, text, text, jsonb);

-- Raises unless a replayed entry carries the payload of the new request.
CREATE FUNCTION economy.check_replay(
    existing economy.transaction, amount numeric, kind text, memo text
)
RETURNS economy.transaction
LANGUAGE plpgsql
AS $$
BEGIN
    IF existing.amount <> check_replay.amount
        OR existing.kind <> check_replay.kind
        OR existing.memo IS DISTINCT FROM check_replay.memo THEN
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
    memo text DEFAULT NULL
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
    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, idempotency_key, memo)
    VALUES (wallet_id, amount, kind, idempotency_key, memo)
    ON CONFLICT ON CONSTRAINT transaction_wallet_idempotency_key DO NOTHING
    RETURNING t.* INTO entry;
    IF entry.id IS NOT NULL THEN
        RETURN entry;
    END IF;
    SELECT t.* INTO STRICT entry
    FROM economy.transaction t
    WHERE t.wallet_id = post_transaction.wallet_id
      AND t.idempotency_key = post_transaction.idempotency_key;
    RETURN economy.check_replay(entry, amount, kind, memo);
END;
$$;

-- Returns the two entries, debit first.
CREATE FUNCTION economy.transfer(
    from_wallet_id bigint,
    to_wallet_id bigint,
    amount numeric,
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL
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
    -- The ledger's lock first, as an INSERT takes it before its trigger locks
    -- a wallet: holding a wallet while queueing for the ledger behind
    -- mark_ledger_horizon() would make a cycle. Then both wallets in id
    -- order: opposite transfers queue instead of deadlocking.
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    PERFORM FROM economy.wallet w
    WHERE w.id IN (from_wallet_id, to_wallet_id)
    ORDER BY w.id
    FOR NO KEY UPDATE;

    IF idempotency_key IS NOT NULL THEN
        SELECT t.* INTO debit FROM economy.transaction t
        WHERE t.wallet_id = from_wallet_id AND t.idempotency_key = transfer.idempotency_key;
        IF FOUND THEN
            SELECT t.* INTO credit FROM economy.transaction t
            WHERE t.wallet_id = to_wallet_id AND t.idempotency_key = transfer.idempotency_key;
            IF NOT FOUND THEN
                credit := debit;  -- reported as a mismatch by check_replay
            END IF;
            RETURN NEXT economy.check_replay(debit, -amount, 'transfer', memo);
            RETURN NEXT economy.check_replay(credit, amount, 'transfer', memo);
            RETURN;
        END IF;
    END IF;

    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, idempotency_key, memo)
    VALUES (from_wallet_id, -amount, 'transfer', idempotency_key, memo)
    RETURNING t.* INTO debit;
    INSERT INTO economy.transaction AS t (
        wallet_id, amount, kind, idempotency_key, memo, transfer_debit_id
    )
    VALUES (to_wallet_id, amount, 'transfer', idempotency_key, memo, debit.id)
    RETURNING t.* INTO credit;
    RETURN NEXT debit;
    RETURN NEXT credit;
END;
$$;

REVOKE ALL ON FUNCTION economy.check_replay(economy.transaction, numeric, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.post_transaction(bigint, numeric, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer(bigint, bigint, numeric, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.post_transaction(bigint, numeric, text, text, text),
economy.transfer(bigint, bigint, numeric, text, text)
TO economy_app;

DROP TABLE economy.transfer_many_call;
ALTER TABLE economy.transaction DROP COLUMN metadata;
