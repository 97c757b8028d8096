-- 0007_batch_start_balances, downgrade: 0006's apply_batch.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0006_attached_hot_wallets)';

-- Trigger function, AFTER INSERT on economy.transaction_batch, once per
-- statement: moves the statement's rows into the ledger in their order and
-- updates each wallet's and profile's caches once, in the writers' lock
-- order. Each entry gets its balance_after from a running sum under the
-- wallet locks, so apply_entry (which runs only for rows without one) has
-- nothing left to do; a row of an unknown wallet has none and is refused by
-- apply_entry. A debit that would take its wallet below -overdraft_limit at
-- its place in the order fails the whole statement.
CREATE OR REPLACE FUNCTION economy.apply_batch()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hot_ids bigint[];
    refused record;
BEGIN
    IF NOT EXISTS (SELECT FROM batch) THEN
        RETURN NULL;
    END IF;
    -- The ledger's lock first, as an INSERT takes it before its trigger
    -- locks a wallet; then the wallets, in id order. (Their profiles need no
    -- order: every writer of a profile holds its wallet's lock first.)
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    SELECT coalesce(array_agg(l.id) FILTER (WHERE l.hot), '{}') INTO hot_ids
    FROM (
        SELECT w.id, w.hot FROM economy.wallet w
        WHERE w.id IN (SELECT b.wallet_id FROM batch b)
        ORDER BY w.id
        FOR NO KEY UPDATE
    ) l;
    PERFORM economy.fold_hot_credits(h.wallet_id) FROM unnest(hot_ids) h (wallet_id);

    -- A new statement, so a snapshot taken after the locks.
    WITH entries AS (
        INSERT INTO economy.transaction AS t (
            wallet_id, amount, kind, idempotency_key, memo, balance_after
        )
        SELECT b.wallet_id, b.amount, b.kind, b.idempotency_key, b.memo,
            -- by key: the batch is usually far smaller than the wallets
            (SELECT w.balance FROM economy.wallet w WHERE w.id = b.wallet_id)
            + sum(b.amount) OVER (PARTITION BY b.wallet_id ORDER BY b.position)
        FROM (
            SELECT x.position, x.wallet_id, x.kind, x.idempotency_key, x.memo,
                economy.exact_amount(x.amount) AS amount
            FROM batch x
        ) b
        ORDER BY b.position
        RETURNING t.wallet_id, t.amount, t.kind, t.balance_after
    ),

    totals AS (
        SELECT e.wallet_id,
            sum(e.amount) AS amount,
            sum(economy.earned(e.amount, k.is_earning)) AS earnings
        FROM entries e
        JOIN economy.transaction_kind k ON k.kind = e.kind
        GROUP BY e.wallet_id
    ),

    wallets AS (
        UPDATE economy.wallet w SET balance = w.balance + t.amount
        FROM totals t
        WHERE w.id = t.wallet_id
        RETURNING w.user_id, t.amount, t.earnings
    ),

    profiles AS (
        UPDATE economy.profile p
        SET balance = p.balance + x.amount, lifetime_earnings = p.lifetime_earnings + x.earnings
        FROM wallets x
        WHERE p.user_id = x.user_id
    )

    SELECT e.wallet_id, e.balance_after, w.held, w.overdraft_limit INTO refused
    FROM entries e
    JOIN economy.wallet w ON w.id = e.wallet_id
    WHERE e.amount < 0 AND e.balance_after - w.held < -w.overdraft_limit
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % - held % < -%',
            refused.wallet_id, refused.balance_after, refused.held, refused.overdraft_limit
            USING ERRCODE = 'check_violation';
    END IF;

    DELETE FROM economy.transaction_batch x USING batch b WHERE x.position = b.position;
    RETURN NULL;
END;
$$;
