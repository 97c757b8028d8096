-- Undo 0002_integrity: back to 0001_core's objects and grants. Caches that
-- outgrew numeric(20, 2) make this fail (nothing is changed then).

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0001_core)';

DROP TRIGGER apply_entry ON economy.transaction;
DROP TRIGGER reverse_transfer_leg ON economy.transaction;
DROP FUNCTION economy.reverse_transfer_leg();
DROP FUNCTION economy.check_reversal(economy.transaction);
DROP FUNCTION economy.refuse_unapplied_entry(economy.transaction);
DROP FUNCTION economy.audit_ledger_checkpoint();
DROP FUNCTION economy.reset_ledger_checkpoint();
DROP FUNCTION economy.reconcile_economy(boolean, bigint[], integer, uuid);

-- Trigger function, BEFORE INSERT on the ledger (only for rows that need it):
-- stores amounts with exactly 2 decimals when that changes no value, and
-- checks that a reversal is the exact negation of an entry not yet reversed.
CREATE FUNCTION economy.check_entry()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    original economy.transaction;
BEGIN
    IF min_scale(NEW.amount) <= 2 THEN
        NEW.amount := round(NEW.amount, 2);
    END IF;

    IF NEW.reverses_id IS NOT NULL THEN
        SELECT * INTO original FROM economy.transaction t WHERE t.id = NEW.reverses_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'transaction % does not exist', NEW.reverses_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF original.reverses_id IS NOT NULL THEN
            RAISE EXCEPTION 'transaction % is a reversal and cannot be reversed', original.id
                USING ERRCODE = 'check_violation';
        END IF;
        IF EXISTS (SELECT FROM economy.transaction t WHERE t.reverses_id = original.id) THEN
            RAISE EXCEPTION 'transaction % is already reversed', original.id
                USING ERRCODE = 'unique_violation';
        END IF;
        IF NEW.wallet_id <> original.wallet_id
            OR NEW.kind <> original.kind
            OR NEW.amount <> -original.amount THEN
            RAISE EXCEPTION 'a reversal of transaction % must have its wallet and kind and amount %',
                original.id, -original.amount
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

-- Trigger function, AFTER INSERT on the ledger, for each row: applies the entry
-- to the cached balances in the same transaction. An AFTER trigger, so that a
-- row skipped by INSERT ... ON CONFLICT DO NOTHING is never applied. Its UPDATE
-- takes the wallet row lock that reconcile_economy also takes.
CREATE OR REPLACE FUNCTION economy.apply_entry()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id bigint;
    new_balance numeric;
    overdraft numeric;
BEGIN
    UPDATE economy.wallet w
    SET balance = w.balance + NEW.amount
    WHERE w.id = NEW.wallet_id
    RETURNING w.user_id, w.balance, w.overdraft_limit
    INTO owner_id, new_balance, overdraft;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', NEW.wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- Only debits are refused: a credit to a wallet that is below its limit
    -- (after a repair of bad data) still brings it closer to allowed.
    IF NEW.amount < 0 AND new_balance < -overdraft THEN
        RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % < -%',
            NEW.wallet_id, new_balance, overdraft
            USING ERRCODE = 'check_violation';
    END IF;

    UPDATE economy.profile p
    SET balance = p.balance + NEW.amount,
        lifetime_earnings = p.lifetime_earnings
        + CASE WHEN k.is_earning THEN NEW.amount ELSE 0 END
    FROM economy.transaction_kind k
    WHERE p.user_id = owner_id AND k.kind = NEW.kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown transaction kind %', NEW.kind
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION economy.open_wallet(user_id bigint, overdraft_limit numeric DEFAULT 0)
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
    IF min_scale(open_wallet.overdraft_limit) > 2 THEN
        RAISE EXCEPTION 'overdraft_limit % has more than 2 decimal places', open_wallet.overdraft_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.profile (user_id) VALUES (open_wallet.user_id)
    ON CONFLICT DO NOTHING;
    INSERT INTO economy.wallet (user_id, overdraft_limit)
    VALUES (open_wallet.user_id, open_wallet.overdraft_limit)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING id INTO new_wallet_id;
    IF new_wallet_id IS NULL THEN
        SELECT w.id INTO new_wallet_id FROM economy.wallet w WHERE w.user_id = open_wallet.user_id;
    END IF;
    RETURN new_wallet_id;
END;
$$;

-- Returns the two entries, debit first.
CREATE OR REPLACE FUNCTION economy.transfer(
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
    -- Both wallets in id order: opposite transfers queue instead of deadlocking.
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
    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, idempotency_key, memo)
    VALUES (to_wallet_id, amount, 'transfer', idempotency_key, memo)
    RETURNING t.* INTO credit;
    RETURN NEXT debit;
    RETURN NEXT credit;
END;
$$;

CREATE OR REPLACE FUNCTION economy.reverse_transaction(transaction_id bigint, memo text DEFAULT NULL)
RETURNS economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    reversal economy.transaction;
BEGIN
    -- check_entry validates the reversal; the unique reverses_id settles races
    -- (no EXCEPTION block here: a subtransaction per reversal is not worth a
    -- nicer message for a lost race).
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

-- Step 1 of advancing the checkpoint, in a short transaction of its own:
-- wait out the inserts in flight (SHARE conflicts with their ROW EXCLUSIVE
-- lock), then every entry up to max(id) is committed for good, and any later
-- one will get a larger id from the identity. Records that id as safe.
CREATE OR REPLACE FUNCTION economy.mark_ledger_horizon()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'mark_ledger_horizon needs READ COMMITTED: a snapshot taken after its lock'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF (SELECT s.cache_size FROM pg_catalog.pg_sequences s
        WHERE s.schemaname = 'economy' AND s.sequencename = 'transaction_id_seq') <> 1 THEN
        RAISE EXCEPTION 'the ledger id sequence caches values: ids would not grow in commit order'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    LOCK TABLE economy.transaction IN SHARE MODE;
    -- a new statement, so a snapshot taken after the lock
    SELECT coalesce(max(t.id), 0) INTO horizon FROM economy.transaction t;
    UPDATE economy.ledger_horizon h SET safe_up_to = greatest(h.safe_up_to, horizon);
    RETURN horizon;
END;
$$;

-- Drift rows plus whether each was fixed. A real run locks the drifted wallets
-- and profiles (writers' lock order), measures again with a snapshot taken
-- after the locks, so every committed entry is both in the sum and in the
-- cache it overwrites, and no in-flight entry is in either; then sets each
-- cache to its ledger value and logs the fix.
CREATE FUNCTION economy.reconcile_economy(
    dry_run boolean DEFAULT true,
    user_ids bigint[] DEFAULT NULL,
    max_wallets integer DEFAULT NULL
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
    drifted_users bigint[];
    this_run_id uuid := gen_random_uuid();
BEGIN
    IF dry_run IS NULL THEN
        RAISE EXCEPTION 'dry_run must be true or false' USING ERRCODE = 'not_null_violation';
    END IF;
    IF max_wallets < 0 THEN
        RAISE EXCEPTION 'max_wallets must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF dry_run THEN
        RETURN QUERY
        SELECT d.user_id, d.wallet_id, d.field, d.cached_value, d.ledger_value, false
        FROM (
            SELECT d.*, dense_rank() OVER (ORDER BY d.user_id) AS nth
            FROM economy.balance_drift(reconcile_economy.user_ids) d
        ) d
        WHERE reconcile_economy.max_wallets IS NULL OR d.nth <= reconcile_economy.max_wallets;
        RETURN;
    END IF;

    SELECT coalesce(array_agg(u.user_id ORDER BY u.user_id), '{}') INTO drifted_users
    FROM (
        SELECT DISTINCT d.user_id
        FROM economy.balance_drift(reconcile_economy.user_ids) d
        ORDER BY d.user_id
        LIMIT reconcile_economy.max_wallets
    ) u;

    PERFORM FROM economy.wallet w
    WHERE w.user_id = ANY (drifted_users)
    ORDER BY w.id
    FOR NO KEY UPDATE;
    PERFORM FROM economy.profile p
    WHERE p.user_id = ANY (drifted_users)
    ORDER BY p.user_id
    FOR NO KEY UPDATE;

    -- A new statement, so a new snapshot: taken after the locks.
    RETURN QUERY
    WITH drift AS (
        SELECT d.* FROM economy.balance_drift(drifted_users) d
    ),

    wallet_fix AS (
        UPDATE economy.wallet w
        SET balance = d.ledger_value
        FROM drift d
        WHERE d.field = 'wallet.balance' AND w.id = d.wallet_id
    ),

    profile_fix AS (
        UPDATE economy.profile p
        SET balance = coalesce(b.ledger_value, p.balance),
            lifetime_earnings = coalesce(e.ledger_value, p.lifetime_earnings)
        FROM (SELECT DISTINCT d.user_id FROM drift d WHERE d.field LIKE 'profile.%') u
        LEFT JOIN drift b ON b.user_id = u.user_id AND b.field = 'profile.balance'
        LEFT JOIN drift e ON e.user_id = u.user_id AND e.field = 'profile.lifetime_earnings'
        WHERE p.user_id = u.user_id
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

CREATE TRIGGER check_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
WHEN (scale(NEW.amount) <> 2 OR NEW.reverses_id IS NOT NULL)
EXECUTE FUNCTION economy.check_entry();

CREATE TRIGGER apply_entry
AFTER INSERT ON economy.transaction
FOR EACH ROW
EXECUTE FUNCTION economy.apply_entry();

DROP INDEX economy.transaction_transfer_debit_id;
ALTER TABLE economy.transaction
DROP COLUMN transfer_debit_id,
ALTER CONSTRAINT transaction_wallet_id_fkey DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE economy.wallet
DROP CONSTRAINT wallet_overdraft_limit_within_limits,
DROP CONSTRAINT wallet_overdraft_limit_at_most_2_decimals,
ALTER COLUMN balance TYPE numeric(20, 2),
ALTER COLUMN overdraft_limit TYPE numeric(20, 2),
ALTER COLUMN overdraft_limit SET DEFAULT 0;

ALTER TABLE economy.profile
ALTER COLUMN balance TYPE numeric(20, 2),
ALTER COLUMN lifetime_earnings TYPE numeric(20, 2);

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA economy FROM PUBLIC;
REVOKE INSERT ON economy.transaction FROM economy_app;
GRANT INSERT ON economy.transaction TO economy_app;
GRANT EXECUTE ON FUNCTION economy.reconcile_economy(boolean, bigint[], integer) TO economy_operator;
