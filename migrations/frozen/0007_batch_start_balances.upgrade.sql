-- 0007_batch_start_balances: a batch reads each wallet's balance once, with
-- its lock, instead of once per row.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0007_batch_start_balances)';

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
    locked_ids bigint[];
    start_balances numeric[];
    any_hot boolean;
    refused record;
BEGIN
    IF NOT EXISTS (SELECT FROM batch) THEN
        RETURN NULL;
    END IF;
    -- The ledger's lock first, as an INSERT takes it before its trigger
    -- locks a wallet; then the wallets, in id order. (Their profiles need no
    -- order: every writer of a profile holds its wallet's lock first.)
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    -- Their balances too, read once per wallet rather than once per row.
    SELECT array_agg(l.id), array_agg(l.balance), coalesce(bool_or(l.hot), false)
    INTO locked_ids, start_balances, any_hot
    FROM (
        SELECT w.id, w.balance, w.hot FROM economy.wallet w
        WHERE w.id IN (SELECT b.wallet_id FROM batch b)
        ORDER BY w.id
        FOR NO KEY UPDATE
    ) l;
    IF any_hot THEN
        PERFORM economy.fold_hot_credits(w.id) FROM economy.wallet w
        WHERE w.id = ANY (locked_ids) AND w.hot;
        SELECT array_agg(w.id), array_agg(w.balance) INTO locked_ids, start_balances
        FROM economy.wallet w
        WHERE w.id = ANY (locked_ids);
    END IF;

    -- A new statement, so a snapshot taken after the locks.
    WITH entries AS (
        INSERT INTO economy.transaction AS t (
            wallet_id, amount, kind, idempotency_key, memo, balance_after
        )
        SELECT b.wallet_id, b.amount, b.kind, b.idempotency_key, b.memo,
            s.balance + sum(b.amount) OVER (PARTITION BY b.wallet_id ORDER BY b.position)
        FROM (
            SELECT x.position, x.wallet_id, x.kind, x.idempotency_key, x.memo,
                economy.exact_amount(x.amount) AS amount
            FROM batch x
        ) b
        -- LEFT: a row of an unknown wallet goes on, without a balance_after
        LEFT JOIN unnest(locked_ids, start_balances) s (wallet_id, balance)
            ON s.wallet_id = b.wallet_id
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
