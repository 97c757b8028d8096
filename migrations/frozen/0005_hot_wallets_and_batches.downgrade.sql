-- Undo 0005_hot_wallets_and_batches: parked credits are folded into the
-- cached figures first, so that every wallet's cache is exact without them.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0004_history_and_holds)';

SELECT economy.fold_hot_wallets();

DROP TRIGGER apply_batch ON economy.transaction_batch;
DROP FUNCTION economy.apply_batch();
DROP TABLE economy.transaction_batch;
DROP TRIGGER apply_entry ON economy.transaction;
CREATE TRIGGER apply_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
EXECUTE FUNCTION economy.apply_entry();
DROP TRIGGER apply_hot_credit ON economy.transaction;
DROP FUNCTION economy.prune_reconcile_log(interval);
DROP PROCEDURE economy.checkpoint_ledger(bigint);
DROP FUNCTION economy.fold_hot_wallets();
DROP FUNCTION economy.set_hot(bigint, boolean);
DROP FUNCTION economy.wallet_balance(bigint);
DROP FUNCTION economy.apply_hot_credit();

-- Trigger function, BEFORE INSERT on the ledger, for each row: checks the
-- entry, applies it to the cached balances in the same transaction and
-- records the wallet's balance after it (balance_after). Its UPDATE takes the
-- wallet row lock that every writer of the wallet, and reconcile_economy,
-- queue on, so entries are applied one at a time, in a definite order. Under
-- that lock an idempotency key already used is seen for sure: such a row is
-- about to be skipped by ON CONFLICT DO NOTHING (or refused as a duplicate),
-- so its amount is taken back. BEFORE, because the ledger is append-only:
-- balance_after must be known before the row is written; and the foreign
-- key's check, at the end of the statement, then finds the wallet row
-- already locked by this transaction.
CREATE OR REPLACE FUNCTION economy.apply_entry()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id bigint;
    new_balance numeric;
    held numeric;
    overdraft numeric;
BEGIN
    IF NEW.wallet_id IS NULL OR NEW.kind IS NULL
        OR NEW.amount IS NULL OR NEW.amount IN ('NaN', 'Infinity', '-Infinity') THEN
        RETURN NEW;  -- refused by the table's NOT NULL and CHECK constraints
    END IF;
    -- exactly 2 decimals when that changes no value; the CHECKs refuse the rest
    IF scale(NEW.amount) <> 2 AND min_scale(NEW.amount) <= 2 THEN
        NEW.amount := round(NEW.amount, 2);
    END IF;
    IF NEW.reverses_id IS NOT NULL THEN
        PERFORM economy.check_reversal(NEW);
    END IF;

    UPDATE economy.wallet w
    SET balance = w.balance + NEW.amount
    WHERE w.id = NEW.wallet_id
        -- the safe horizon: no entry at or below it may commit any more
        AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
    RETURNING w.user_id, w.balance, w.held, w.overdraft_limit
    INTO owner_id, new_balance, held, overdraft;
    IF NOT FOUND THEN
        PERFORM economy.refuse_unapplied_entry(NEW);
    END IF;

    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT FROM economy.transaction t
        WHERE t.wallet_id = NEW.wallet_id AND t.idempotency_key = NEW.idempotency_key
    ) THEN
        UPDATE economy.wallet w SET balance = w.balance - NEW.amount WHERE w.id = NEW.wallet_id;
        RETURN NEW;
    END IF;
    -- Only debits are refused: a credit to a wallet that is below its limit
    -- (after a repair of bad data) still brings it closer to allowed. Held
    -- amounts are not available.
    IF NEW.amount < 0 AND new_balance - held < -overdraft THEN
        RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % - held % < -%',
            NEW.wallet_id, new_balance, held, overdraft
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.balance_after := new_balance;

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
    RETURN NEW;
END;
$$;

-- The occasional full audit of the checkpoint itself: one row per wallet and
-- figure where it differs from a full sum of the entries it covers. Reads the
-- whole ledger, in one snapshot.
CREATE OR REPLACE FUNCTION economy.audit_ledger_checkpoint()
RETURNS TABLE (wallet_id bigint, field text, checkpoint_value numeric, ledger_value numeric)
LANGUAGE sql
STABLE
AS $$
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
$$;

-- One row per cached field that disagrees with the ledger. Reads one snapshot
-- and takes no locks: a cache and its ledger rows commit together, so a
-- single snapshot sees both or neither. With an attachment: that
-- attachment's generated drift function (35_attach.sql).
CREATE OR REPLACE FUNCTION economy.balance_drift(user_ids bigint[] DEFAULT NULL, attachment text DEFAULT NULL)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE plpgsql
STABLE
-- plan with the actual arguments: a whole-ledger aggregate when user_ids is
-- NULL, index lookups of a few wallets otherwise
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    wallet_ids bigint[];
BEGIN
    IF balance_drift.attachment IS NOT NULL THEN
        RETURN QUERY EXECUTE format('SELECT * FROM economy.%I($1)', economy.attached_object(
            (economy.attachment(balance_drift.attachment)).name, 'drift'))
        USING balance_drift.user_ids;
        RETURN;
    END IF;
    IF user_ids IS NOT NULL THEN
        wallet_ids := ARRAY(SELECT w.id FROM economy.wallet w WHERE w.user_id = ANY (user_ids));
    END IF;

    -- The ledger's totals as economy.ledger_totals defines them, in a shape
    -- that plans well both for all users and for a batch of them: the
    -- checkpoint joined by key, the entries after it aggregated once
    -- (MATERIALIZED: as the inner side of a parallel join, every worker would
    -- aggregate them again). Users whose caches all agree are dropped before
    -- the unpivot into one row per field.
    RETURN QUERY
    WITH recent AS MATERIALIZED (
        SELECT
            e.wallet_id,
            sum(e.balance) AS balance,
            sum(e.lifetime_earnings) AS lifetime_earnings
        FROM economy.ledger_entry_effects e
        WHERE e.id > (SELECT h.checkpointed_up_to FROM economy.ledger_horizon h)
            AND (wallet_ids IS NULL OR e.wallet_id = ANY (wallet_ids))
        GROUP BY e.wallet_id
    ),

    holds AS (
        SELECT h.wallet_id, sum(h.amount) AS held
        FROM economy.wallet_hold h
        WHERE h.status = 'held' AND (wallet_ids IS NULL OR h.wallet_id = ANY (wallet_ids))
        GROUP BY h.wallet_id
    ),

    compared AS (
        SELECT
            p.user_id,
            w.id AS wallet_id,
            w.balance AS wallet_balance,
            w.held AS wallet_held,
            p.balance AS profile_balance,
            p.lifetime_earnings,
            coalesce(c.balance, 0.00) + coalesce(r.balance, 0.00) AS ledger_balance,
            coalesce(c.lifetime_earnings, 0.00) + coalesce(r.lifetime_earnings, 0.00)
            AS ledger_earnings,
            coalesce(hd.held, 0.00) AS holds_held
        FROM economy.profile p
        LEFT JOIN economy.wallet w ON w.user_id = p.user_id
        LEFT JOIN economy.ledger_checkpoint c ON c.wallet_id = w.id
        LEFT JOIN recent r ON r.wallet_id = w.id
        LEFT JOIN holds hd ON hd.wallet_id = w.id
        WHERE balance_drift.user_ids IS NULL OR p.user_id = ANY (balance_drift.user_ids)
    )

    SELECT d.user_id, d.wallet_id, f.field, f.cached_value, f.ledger_value
    FROM compared d
    CROSS JOIN LATERAL (
        VALUES
        (1, 'wallet.balance', d.wallet_balance, d.ledger_balance),
        (2, 'wallet.held', d.wallet_held, d.holds_held),
        (3, 'profile.balance', d.profile_balance, d.ledger_balance),
        (4, 'profile.lifetime_earnings', d.lifetime_earnings, d.ledger_earnings)
    ) AS f (position, field, cached_value, ledger_value)
    WHERE (
        (
            d.wallet_id IS NOT NULL
            AND (
                d.wallet_balance IS DISTINCT FROM d.ledger_balance
                OR d.wallet_held IS DISTINCT FROM d.holds_held
            )
        )
        OR d.profile_balance IS DISTINCT FROM d.ledger_balance
        OR d.lifetime_earnings IS DISTINCT FROM d.ledger_earnings
    )
        AND f.cached_value IS DISTINCT FROM f.ledger_value
        AND NOT (f.field LIKE 'wallet.%' AND d.wallet_id IS NULL)
    ORDER BY d.user_id, f.position;
END;
$$;

-- Drift rows plus whether each was fixed. A real run locks the drifted wallets
-- and profiles (writers' lock order), measures again with a snapshot taken
-- after the locks, so every committed entry is both in the sum and in the
-- cache it overwrites, and no in-flight entry is in either; then sets each
-- cache to its ledger value and logs the fix, under run_id (one per call
-- unless given: a run of many batches passes its own).
CREATE OR REPLACE FUNCTION economy.reconcile_economy(
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
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    drifted_users bigint[];
    this_run_id uuid := coalesce(reconcile_economy.run_id, gen_random_uuid());
BEGIN
    IF dry_run IS NULL THEN
        RAISE EXCEPTION 'dry_run must be true or false' USING ERRCODE = 'not_null_violation';
    END IF;
    IF max_wallets < 0 THEN
        RAISE EXCEPTION 'max_wallets must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF reconcile_economy.attachment IS NOT NULL THEN
        IF max_wallets IS NOT NULL THEN
            RAISE EXCEPTION 'max_wallets is for the package''s own tables'
                USING ERRCODE = 'feature_not_supported';
        END IF;
        RETURN QUERY EXECUTE format(
            'WITH fixes AS (SELECT * FROM economy.%I($1, $2)),'
            ' logged AS (INSERT INTO economy.reconcile_log'
            ' (run_id, attachment, user_id, wallet_id, field, cached_value, ledger_value)'
            ' SELECT $3, $4, f.user_id, f.wallet_id, f.field, f.cached_value, f.ledger_value'
            ' FROM fixes f WHERE f.fixed)'
            ' SELECT * FROM fixes',
            economy.attached_object(
                (economy.attachment(reconcile_economy.attachment)).name, 'reconcile'))
        USING dry_run, reconcile_economy.user_ids, this_run_id, reconcile_economy.attachment;
        RETURN;
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
        SET balance = coalesce(b.ledger_value, w.balance),
            held = coalesce(hd.ledger_value, w.held)
        FROM (SELECT DISTINCT d.wallet_id FROM drift d WHERE d.field LIKE 'wallet.%') u
        LEFT JOIN drift b ON b.wallet_id = u.wallet_id AND b.field = 'wallet.balance'
        LEFT JOIN drift hd ON hd.wallet_id = u.wallet_id AND hd.field = 'wallet.held'
        WHERE w.id = u.wallet_id
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

-- Sets `amount` of the wallet's available amount (balance - held) aside.
-- Refused when that would take the available amount below -overdraft_limit.
-- Same idempotency key and payload: the same hold; another payload: error.
CREATE OR REPLACE FUNCTION economy.hold(
    wallet_id bigint,
    amount numeric,
    expires_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL
)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    w economy.wallet;
    placed economy.wallet_hold;
BEGIN
    PERFORM economy.check_amount(amount, 'hold amount');
    -- the wallet's lock first: the available amount and a replayed key are
    -- then seen for sure
    SELECT * INTO w FROM economy.wallet x WHERE x.id = hold.wallet_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO placed FROM economy.wallet_hold h
        WHERE h.wallet_id = hold.wallet_id AND h.idempotency_key = hold.idempotency_key;
        IF FOUND THEN
            IF placed.amount <> amount OR placed.expires_at IS DISTINCT FROM expires_at
                OR placed.memo IS DISTINCT FROM memo THEN
                RAISE EXCEPTION 'idempotency key % of wallet % was used for a different hold (#%)',
                    idempotency_key, wallet_id, placed.id
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN placed;
        END IF;
    END IF;
    IF w.balance - w.held - amount < -w.overdraft_limit THEN
        RAISE EXCEPTION 'wallet % cannot hold %: available % (balance % - held %), limit -%',
            wallet_id, amount, w.balance - w.held, w.balance, w.held, w.overdraft_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.wallet_hold AS h (wallet_id, amount, expires_at, idempotency_key, memo)
    VALUES (wallet_id, round(amount, 2), expires_at, idempotency_key, memo)
    RETURNING h.* INTO placed;
    RETURN placed;
END;
$$;

DROP FUNCTION economy.fold_hot_credits(bigint);
DROP FUNCTION economy.exact_amount(numeric);
DROP VIEW economy.hot_pending;
DROP TABLE economy.hot_credit;
ALTER TABLE economy.wallet DROP COLUMN hot;
