-- 0013_transfers: back to 0012_hosted_roles.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0012_hosted_roles)';

DROP FUNCTION economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb);
DROP FUNCTION economy.replay_transfer_many(text, bigint[], bigint[], numeric[], text, jsonb);
DROP FUNCTION economy.transfer(bigint, bigint, numeric, text, text, jsonb);
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
-- write), then is left to apply_entries (its second).
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
    IF seen IS NULL OR (parkable AND is_hot) THEN
        beyond_horizon := NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h);
    END IF;
    IF parkable AND (seen IS NULL OR is_hot) THEN
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

REVOKE ALL ON FUNCTION economy.check_replay(economy.transaction, numeric, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.post_transaction(bigint, numeric, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.transfer(bigint, bigint, numeric, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.post_transaction(bigint, numeric, text, text, text),
economy.transfer(bigint, bigint, numeric, text, text)
TO economy_app;

DROP TABLE economy.transfer_many_call;
ALTER TABLE economy.transaction DROP COLUMN metadata;
