-- economy-sync: multi-row writes applied set-based (economy.transaction_batch).

-- Trigger function, AFTER INSERT on economy.transaction_batch, once per
-- statement: locks the statement's wallets in id order, then moves its rows
-- into the ledger in their order, where they are applied as the rows of any
-- multi-row INSERT are (apply_entry, apply_entries: each wallet and profile
-- updated once). What it adds to a plain INSERT is the lock order: batches
-- over the same wallets, whatever the order of their rows, queue instead of
-- deadlocking.
CREATE FUNCTION economy.apply_batch()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM batch) THEN
        RETURN NULL;
    END IF;
    -- The ledger's lock first, as an INSERT takes it before its trigger
    -- locks a wallet; then the wallets, in id order. (Their profiles need no
    -- order: every writer of a profile holds its wallet's lock first.)
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    PERFORM FROM economy.wallet w
    WHERE w.id IN (SELECT b.wallet_id FROM batch b)
    ORDER BY w.id
    FOR NO KEY UPDATE;
    INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key, memo)
    SELECT b.wallet_id, b.amount, b.kind, b.idempotency_key, b.memo
    FROM batch b
    ORDER BY b.position;
    DELETE FROM economy.transaction_batch x USING batch b WHERE x.position = b.position;
    RETURN NULL;
END;
$$;
