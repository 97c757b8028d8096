-- 0005_hot_wallets_and_batches: opt-in hot wallets whose credits are
-- parked in economy.hot_credit instead of queueing on the wallet's row
-- (set_hot, wallet_balance, fold_hot_wallets; drift and reconcile compare the
-- exact figures of hot wallets); multi-row writes applied set-based through
-- economy.transaction_batch; balance_drift joins in memory; prune_reconcile_log;
-- checkpoint_ledger (both checkpoint steps, for a scheduler).

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0005_hot_wallets_and_batches)';

-- credits skip the wallet and profile rows (economy.set_hot): they are
-- parked in economy.hot_credit until folded into both
ALTER TABLE economy.wallet ADD COLUMN hot boolean NOT NULL DEFAULT false;

-- Credits to hot wallets, not folded into the cached figures yet: one row
-- per credit, written without touching the wallet or profile row, so that
-- credits never wait for each other's commits. A wallet's exact balance is
-- wallet.balance plus its rows here (economy.wallet_balance). Folded (moved
-- into the caches and deleted) under the wallet's lock, by a debit, a hold,
-- economy.fold_hot_wallets() or a real reconcile. No foreign key: the ledger
-- entry's own key already checked the wallet, and a second KEY SHARE lock
-- would be one more locker of the shared row.
CREATE TABLE economy.hot_credit (
    wallet_id bigint NOT NULL,
    amount numeric NOT NULL,
    lifetime_earnings numeric NOT NULL
);

CREATE INDEX hot_credit_wallet_id ON economy.hot_credit (wallet_id);

-- Per wallet, what its hot credits add to the cached figures.
CREATE VIEW economy.hot_pending AS
SELECT
    c.wallet_id,
    sum(c.amount) AS balance,
    sum(c.lifetime_earnings) AS lifetime_earnings
FROM economy.hot_credit c
GROUP BY c.wallet_id;

-- Multi-row writes applied set-based: rows inserted here (INSERT … SELECT,
-- multi-row VALUES, COPY) are moved into economy.transaction at the end of
-- the statement, each wallet's and profile's caches updated once
-- (economy.apply_batch). Empty between statements; UNLOGGED, as its rows
-- never outlive the statement that wrote them.
CREATE UNLOGGED TABLE economy.transaction_batch (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wallet_id bigint,
    amount numeric,
    kind text,
    idempotency_key text,
    memo text
);

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
-- A credit to a hot wallet takes no row lock but KEY SHARE (set_hot(false)
-- waits for it) and is parked, with balance_after NULL. Any other entry on a
-- hot wallet folds the parked credits first, under the lock, and is checked
-- against the exact balance.
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
    is_hot boolean;
    folded numeric := 0;
    parkable boolean;
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

    UPDATE economy.wallet w
    SET balance = w.balance + NEW.amount
    WHERE w.id = NEW.wallet_id
        -- the safe horizon: no entry at or below it may commit any more
        AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
        AND NOT (w.hot AND parkable)
    RETURNING w.user_id, w.balance, w.held, w.overdraft_limit, w.hot
    INTO owner_id, new_balance, held, overdraft, is_hot;
    IF NOT FOUND AND parkable THEN
        IF NEW.idempotency_key IS NULL THEN
            INSERT INTO economy.hot_credit (wallet_id, amount, lifetime_earnings)
            SELECT w.id, NEW.amount, CASE WHEN k.is_earning THEN NEW.amount ELSE 0.00 END
            FROM economy.wallet w, economy.transaction_kind k
            WHERE w.id = NEW.wallet_id AND w.hot AND k.kind = NEW.kind
                AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
            FOR KEY SHARE OF w;
        ELSE
            -- parked by apply_hot_credit once written: ON CONFLICT may skip it
            PERFORM FROM economy.wallet w
            WHERE w.id = NEW.wallet_id AND w.hot
                AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
            FOR KEY SHARE;
        END IF;
        IF FOUND THEN
            NEW.balance_after := NULL;
            RETURN NEW;
        END IF;
        -- turned back to normal meanwhile
        UPDATE economy.wallet w
        SET balance = w.balance + NEW.amount
        WHERE w.id = NEW.wallet_id
            AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
        RETURNING w.user_id, w.balance, w.held, w.overdraft_limit, w.hot
        INTO owner_id, new_balance, held, overdraft, is_hot;
    END IF;
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
    IF is_hot THEN
        folded := economy.fold_hot_credits(NEW.wallet_id);
        new_balance := new_balance + folded;
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
    SELECT w.id, NEW.amount, CASE WHEN k.is_earning THEN NEW.amount ELSE 0.00 END
    FROM economy.wallet w, economy.transaction_kind k
    WHERE w.id = NEW.wallet_id AND w.hot AND k.kind = NEW.kind;
    RETURN NULL;
END;
$$;

-- The occasional full audit of the checkpoint itself: one row per wallet and
-- figure where it differs from a full sum of the entries it covers. Reads the
-- whole ledger, in one snapshot.
CREATE OR REPLACE FUNCTION economy.audit_ledger_checkpoint()
RETURNS TABLE (wallet_id bigint, field text, checkpoint_value numeric, ledger_value numeric)
LANGUAGE sql
STABLE
-- as balance_drift: the join with the checkpoint in memory, nothing compiled
SET work_mem = '256MB'
SET jit = off
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
-- a check of everyone joins every wallet, profile and checkpoint row: in
-- memory (about 200 MB per million wallets), and not worth compiling
SET work_mem = '256MB'
SET jit = off
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
    -- the unpivot into one row per field and the sort (MATERIALIZED: else the
    -- plan sorts every user to merge in user order). A hot wallet's cached
    -- figures are compared with its parked credits added: the exact figures.
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
            p.lifetime_earnings + coalesce(pk.lifetime_earnings, 0.00) AS lifetime_earnings,
            coalesce(c.balance, 0.00) + coalesce(r.balance, 0.00) AS ledger_balance,
            coalesce(c.lifetime_earnings, 0.00) + coalesce(r.lifetime_earnings, 0.00)
            AS ledger_earnings,
            coalesce(hd.held, 0.00) AS holds_held
        FROM economy.profile p
        LEFT JOIN economy.wallet w ON w.user_id = p.user_id
        LEFT JOIN economy.ledger_checkpoint c ON c.wallet_id = w.id
        LEFT JOIN recent r ON r.wallet_id = w.id
        LEFT JOIN holds hd ON hd.wallet_id = w.id
        LEFT JOIN parked pk ON pk.wallet_id = w.id
        WHERE balance_drift.user_ids IS NULL OR p.user_id = ANY (balance_drift.user_ids)
    ),

    drifted AS MATERIALIZED (
        SELECT * FROM figures d
        WHERE (
            d.wallet_id IS NOT NULL
            AND (
                d.wallet_balance IS DISTINCT FROM d.ledger_balance
                OR d.wallet_held IS DISTINCT FROM d.holds_held
            )
        )
        OR d.profile_balance IS DISTINCT FROM d.ledger_balance
        OR d.lifetime_earnings IS DISTINCT FROM d.ledger_earnings
    )

    SELECT d.user_id, d.wallet_id, f.field, f.cached_value, f.ledger_value
    FROM drifted d
    CROSS JOIN LATERAL (
        VALUES
        (1, 'wallet.balance', d.wallet_balance, d.ledger_balance),
        (2, 'wallet.held', d.wallet_held, d.holds_held),
        (3, 'profile.balance', d.profile_balance, d.ledger_balance),
        (4, 'profile.lifetime_earnings', d.lifetime_earnings, d.ledger_earnings)
    ) AS f (position, field, cached_value, ledger_value)
    WHERE f.cached_value IS DISTINCT FROM f.ledger_value
        AND NOT (f.field LIKE 'wallet.%' AND d.wallet_id IS NULL)
    ORDER BY d.user_id, f.position;
END;
$$;

-- Drift rows plus whether each was fixed. A real run locks the drifted wallets
-- and profiles (writers' lock order), measures again with a snapshot taken
-- after the locks, so every committed entry is both in the sum and in the
-- cache it overwrites, and no in-flight entry is in either; then sets each
-- cache to its ledger value and logs the fix, under run_id (one per call
-- unless given: a run of many batches passes its own). It also folds the
-- parked credits of the hot wallets it covers; a hot wallet's cache is set
-- to its ledger value less the credits parked after that fold.
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
        (
            SELECT DISTINCT d.user_id
            FROM economy.balance_drift(reconcile_economy.user_ids) d
            ORDER BY d.user_id
            LIMIT reconcile_economy.max_wallets
        )
        UNION
        SELECT w.user_id
        FROM economy.wallet w
        WHERE w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
            AND (reconcile_economy.user_ids IS NULL OR w.user_id = ANY (reconcile_economy.user_ids))
    ) u;

    PERFORM FROM economy.wallet w
    WHERE w.user_id = ANY (drifted_users)
    ORDER BY w.id
    FOR NO KEY UPDATE;
    PERFORM FROM economy.profile p
    WHERE p.user_id = ANY (drifted_users)
    ORDER BY p.user_id
    FOR NO KEY UPDATE;
    PERFORM economy.fold_hot_credits(w.id)
    FROM economy.wallet w
    WHERE w.user_id = ANY (drifted_users) AND w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
    ORDER BY w.id;

    -- A new statement, so a new snapshot: taken after the locks.
    RETURN QUERY
    WITH drift AS (
        SELECT d.* FROM economy.balance_drift(drifted_users) d
    ),

    wallet_fix AS (
        UPDATE economy.wallet w
        SET balance = coalesce(b.ledger_value - coalesce(pk.balance, 0.00), w.balance),
            held = coalesce(hd.ledger_value, w.held)
        FROM (SELECT DISTINCT d.wallet_id FROM drift d WHERE d.field LIKE 'wallet.%') u
        LEFT JOIN drift b ON b.wallet_id = u.wallet_id AND b.field = 'wallet.balance'
        LEFT JOIN drift hd ON hd.wallet_id = u.wallet_id AND hd.field = 'wallet.held'
        LEFT JOIN economy.hot_pending pk ON pk.wallet_id = u.wallet_id
        WHERE w.id = u.wallet_id
    ),

    profile_fix AS (
        UPDATE economy.profile p
        SET balance = coalesce(b.ledger_value - coalesce(pk.balance, 0.00), p.balance),
            lifetime_earnings = coalesce(
                e.ledger_value - coalesce(pk.lifetime_earnings, 0.00), p.lifetime_earnings
            )
        FROM (
            SELECT DISTINCT d.user_id, d.wallet_id FROM drift d WHERE d.field LIKE 'profile.%'
        ) u
        LEFT JOIN drift b ON b.user_id = u.user_id AND b.field = 'profile.balance'
        LEFT JOIN drift e ON e.user_id = u.user_id AND e.field = 'profile.lifetime_earnings'
        LEFT JOIN economy.hot_pending pk ON pk.wallet_id = u.wallet_id
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

-- Both steps, each in a transaction of its own, in one call (for a scheduler:
-- pg_cron runs `CALL economy.checkpoint_ledger()`); returns the ledger id now
-- covered. Called outside a transaction block. (No SET clause: it would
-- forbid the COMMIT between the steps; every name is schema-qualified.)
CREATE PROCEDURE economy.checkpoint_ledger(INOUT covered_up_to bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM economy.mark_ledger_horizon();
    COMMIT;
    covered_up_to := economy.advance_ledger_checkpoint();
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
    IF w.hot THEN
        w.balance := w.balance + economy.fold_hot_credits(wallet_id);
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

-- The wallet's exact balance after every commit, hot or not: the cached
-- balance plus its parked credits. NULL for an unknown wallet.
CREATE FUNCTION economy.wallet_balance(wallet_id bigint)
RETURNS numeric
LANGUAGE sql
STABLE
AS $$
    SELECT w.balance + coalesce(
        (SELECT sum(c.amount) FROM economy.hot_credit c WHERE c.wallet_id = w.id), 0.00
    )
    FROM economy.wallet w
    WHERE w.id = wallet_balance.wallet_id;
$$;

-- Marks a wallet hot, or back to normal: then it first waits for the credits
-- in flight (FOR UPDATE conflicts with the KEY SHARE lock each of them holds)
-- and folds them.
CREATE FUNCTION economy.set_hot(wallet_id bigint, hot boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    IF hot IS NULL THEN
        RAISE EXCEPTION 'hot must be true or false' USING ERRCODE = 'not_null_violation';
    END IF;
    IF hot THEN
        PERFORM FROM economy.wallet w WHERE w.id = set_hot.wallet_id FOR NO KEY UPDATE;
    ELSE
        PERFORM FROM economy.wallet w WHERE w.id = set_hot.wallet_id FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    UPDATE economy.wallet w SET hot = set_hot.hot WHERE w.id = set_hot.wallet_id;
    IF NOT hot THEN
        PERFORM economy.fold_hot_credits(wallet_id);
    END IF;
END;
$$;

-- Folds the parked credits of every wallet that has some into its cached
-- figures (for a scheduler; a real reconcile does it too). Returns how many
-- wallets were folded. Their rows are locked first, in id order.
CREATE FUNCTION economy.fold_hot_wallets()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parked bigint[];
BEGIN
    WITH locked AS (
        SELECT w.id FROM economy.wallet w
        WHERE w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
        ORDER BY w.id
        FOR NO KEY UPDATE
    )

    SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}') INTO parked FROM locked l;
    PERFORM economy.fold_hot_credits(p.wallet_id) FROM unnest(parked) AS p (wallet_id);
    RETURN cardinality(parked);
END;
$$;

-- Trigger function, AFTER INSERT on economy.transaction_batch, once per
-- statement: moves the statement's rows into the ledger in their order and
-- updates each wallet's and profile's caches once, in the writers' lock
-- order. Each entry gets its balance_after from a running sum under the
-- wallet locks, so apply_entry (which runs only for rows without one) has
-- nothing left to do; a row of an unknown wallet has none and is refused by
-- apply_entry. A debit that would take its wallet below -overdraft_limit at
-- its place in the order fails the whole statement.
CREATE FUNCTION economy.apply_batch()
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
            coalesce(sum(e.amount) FILTER (WHERE k.is_earning), 0.00) AS earnings
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

DROP TRIGGER apply_entry ON economy.transaction;

-- Rows that arrive with a balance_after were applied by economy.apply_batch
-- (package roles cannot name the column).
CREATE TRIGGER apply_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
WHEN (NEW.balance_after IS NULL)
EXECUTE FUNCTION economy.apply_entry();

CREATE TRIGGER apply_hot_credit
AFTER INSERT ON economy.transaction
FOR EACH ROW
WHEN (
    NEW.balance_after IS NULL AND NEW.idempotency_key IS NOT NULL
    AND NEW.amount > 0 AND NEW.reverses_id IS NULL
)
EXECUTE FUNCTION economy.apply_hot_credit();

CREATE TRIGGER apply_batch
AFTER INSERT ON economy.transaction_batch
REFERENCING NEW TABLE AS batch
FOR EACH STATEMENT
EXECUTE FUNCTION economy.apply_batch();

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA economy FROM PUBLIC;
GRANT SELECT ON economy.hot_credit, economy.hot_pending TO economy_app;
GRANT SELECT ON economy.transaction_batch TO economy_app;
GRANT INSERT (wallet_id, amount, kind, idempotency_key, memo)
ON economy.transaction_batch TO economy_app;
GRANT EXECUTE ON FUNCTION economy.wallet_balance(bigint) TO economy_app;
GRANT EXECUTE ON FUNCTION
economy.set_hot(bigint, boolean),
economy.fold_hot_wallets(),
economy.prune_reconcile_log(interval)
TO economy_operator;
REVOKE ALL ON PROCEDURE economy.checkpoint_ledger(bigint) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE economy.checkpoint_ledger(bigint) TO economy_operator;
