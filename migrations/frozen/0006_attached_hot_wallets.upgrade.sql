-- 0006_attached_hot_wallets: hot wallets on attached tables (set_hot,
-- wallet_balance and fold_hot_wallets take attachment =>): credits parked in
-- economy.attached_hot_credit, folded by debits, fold_hot_wallets and a real
-- reconcile; drift compares exact figures. balance_drift and
-- reconcile_economy share one wide function (drifted_figures), and
-- max_wallets one bound (bounded_drift); the earning rule is one function
-- (earned), and "checkpoint + newer entries" another (wallet_totals).
-- Existing attachments get their functions generated again from the new
-- templates (by the role that owns them: their tables' owner).

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0006_attached_hot_wallets)';

-- Hot wallets of attachments (economy.set_hot(…, attachment => N)): the app's
-- wallet table has no column of ours, so they are listed here. A credit to a
-- hot wallet holds KEY SHARE on its row here while in flight; set_hot(false)
-- deletes the row, so it waits for them.
CREATE TABLE economy.attached_hot_wallet (
    attachment text REFERENCES economy.attachments ON DELETE CASCADE,
    wallet_id bigint,
    PRIMARY KEY (attachment, wallet_id)
);

-- Credits to attached hot wallets, not folded into the app's cached columns
-- yet (as economy.hot_credit for the package's wallets): the exact figures
-- are the cached ones plus these. Folded under the wallet's lock by a debit,
-- economy.fold_hot_wallets(attachment => N) or a real reconcile.
CREATE TABLE economy.attached_hot_credit (
    attachment text NOT NULL,
    wallet_id bigint NOT NULL,
    amount numeric NOT NULL,
    earnings numeric NOT NULL
);

CREATE INDEX attached_hot_credit_wallet ON economy.attached_hot_credit (attachment, wallet_id);

-- What an entry adds to its owner's lifetime earnings: its amount when its
-- kind is an earning kind, else nothing. The one definition of the earning
-- rule, wherever an entry is applied (apply_entry, apply_hot_credit,
-- apply_batch) or summed (ledger_entry_effects). Inlined by the planner.
CREATE FUNCTION economy.earned(amount numeric, is_earning boolean)
RETURNS numeric
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN is_earning THEN amount ELSE 0.00 END;
$$;

-- What each entry adds to its wallet's balance and lifetime earnings. (The
-- earning kinds are looked up once, as a hashed subplan, rather than joined
-- to every ledger row.)
CREATE OR REPLACE VIEW economy.ledger_entry_effects AS
SELECT
    t.id,
    t.wallet_id,
    t.amount AS balance,
    economy.earned(
        t.amount,
        t.kind IN (SELECT k.kind FROM economy.transaction_kind k WHERE k.is_earning)
    ) AS lifetime_earnings
FROM economy.transaction t;

-- What the ledger says the caches of wallet_ids (of every wallet when NULL)
-- must be: the checkpoint's totals plus the entries after it, aggregated once
-- (MATERIALIZED: as the inner side of a parallel join, every worker would
-- aggregate them again). The one definition of "checkpoint + newer entries",
-- inlined by the planner into the drift checks' queries; a list of wallets
-- reaches both the checkpoint's key and the ledger's index.
CREATE FUNCTION economy.wallet_totals(wallet_ids bigint[])
RETURNS TABLE (wallet_id bigint, balance numeric, lifetime_earnings numeric)
LANGUAGE sql
STABLE
AS $$
    WITH recent AS MATERIALIZED (
        SELECT
            e.wallet_id,
            sum(e.balance) AS balance,
            sum(e.lifetime_earnings) AS lifetime_earnings
        FROM economy.ledger_entry_effects e
        WHERE e.id > (SELECT h.checkpointed_up_to FROM economy.ledger_horizon h)
            AND (wallet_ids IS NULL OR e.wallet_id = ANY (wallet_ids))
        GROUP BY e.wallet_id
    )

    SELECT
        coalesce(c.wallet_id, r.wallet_id),
        coalesce(c.balance, 0.00) + coalesce(r.balance, 0.00),
        coalesce(c.lifetime_earnings, 0.00) + coalesce(r.lifetime_earnings, 0.00)
    FROM (
        SELECT * FROM economy.ledger_checkpoint c
        WHERE wallet_ids IS NULL OR c.wallet_id = ANY (wallet_ids)
    ) c
    FULL JOIN recent r ON r.wallet_id = c.wallet_id;
$$;

-- Every wallet's totals (for a few wallets, economy.wallet_totals(ARRAY[…])
-- reads only theirs).
CREATE OR REPLACE VIEW economy.ledger_totals AS
SELECT t.wallet_id, t.balance, t.lifetime_earnings
FROM economy.wallet_totals(NULL) t;

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
    beyond_horizon boolean;
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
        -- read once: the horizon cannot move while this insert is in flight
        -- (mark_ledger_horizon waits for it)
        beyond_horizon := NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h);
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
        -- turned back to normal meanwhile
        UPDATE economy.wallet w
        SET balance = w.balance + NEW.amount
        WHERE w.id = NEW.wallet_id AND beyond_horizon
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
        + economy.earned(NEW.amount, k.is_earning)
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
CREATE OR REPLACE FUNCTION economy.apply_hot_credit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO economy.hot_credit (wallet_id, amount, lifetime_earnings)
    SELECT w.id, NEW.amount, economy.earned(NEW.amount, k.is_earning)
    FROM economy.wallet w, economy.transaction_kind k
    WHERE w.id = NEW.wallet_id AND w.hot AND k.kind = NEW.kind;
    RETURN NULL;
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

-- Every user whose cached figures disagree with the ledger, one row each
-- (with their wallet's, if any): the exact cached figures (a hot wallet's
-- parked credits added), what the ledger and the holds say they must be, and
-- the parked credits, which a repair leaves parked. Reads one snapshot and
-- takes no locks: a cache and its ledger rows commit together, so a single
-- snapshot sees both or neither. balance_drift lists the fields that differ;
-- reconcile_economy repairs from these rows.
CREATE FUNCTION economy.drifted_figures(user_ids bigint[])
RETURNS TABLE (
    user_id bigint,
    wallet_id bigint,
    wallet_balance numeric,
    wallet_held numeric,
    profile_balance numeric,
    profile_earnings numeric,
    ledger_balance numeric,
    ledger_earnings numeric,
    holds_held numeric,
    parked_balance numeric,
    parked_earnings numeric
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
    IF user_ids IS NOT NULL THEN
        wallet_ids := ARRAY(SELECT w.id FROM economy.wallet w WHERE w.user_id = ANY (user_ids));
    END IF;

    RETURN QUERY
    WITH holds AS (
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
            p.lifetime_earnings + coalesce(pk.lifetime_earnings, 0.00) AS profile_earnings,
            coalesce(t.balance, 0.00) AS ledger_balance,
            coalesce(t.lifetime_earnings, 0.00) AS ledger_earnings,
            coalesce(hd.held, 0.00) AS holds_held,
            coalesce(pk.balance, 0.00) AS parked_balance,
            coalesce(pk.lifetime_earnings, 0.00) AS parked_earnings
        FROM economy.profile p
        LEFT JOIN economy.wallet w ON w.user_id = p.user_id
        LEFT JOIN economy.wallet_totals(wallet_ids) t ON t.wallet_id = w.id
        LEFT JOIN holds hd ON hd.wallet_id = w.id
        LEFT JOIN parked pk ON pk.wallet_id = w.id
        WHERE drifted_figures.user_ids IS NULL OR p.user_id = ANY (drifted_figures.user_ids)
    )

    SELECT f.*
    FROM figures f
    WHERE (
        f.wallet_id IS NOT NULL
        AND (
            f.wallet_balance IS DISTINCT FROM f.ledger_balance
            OR f.wallet_held IS DISTINCT FROM f.holds_held
        )
    )
    OR f.profile_balance IS DISTINCT FROM f.ledger_balance
    OR f.profile_earnings IS DISTINCT FROM f.ledger_earnings;
END;
$$;

-- One row per cached field that disagrees with the ledger (see
-- drifted_figures), in user order. With an attachment: that attachment's
-- generated drift function (35_attach.sql).
CREATE OR REPLACE FUNCTION economy.balance_drift(user_ids bigint[] DEFAULT NULL, attachment text DEFAULT NULL)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
BEGIN
    IF balance_drift.attachment IS NOT NULL THEN
        RETURN QUERY EXECUTE format('SELECT * FROM economy.%I($1)', economy.attached_object(
            (economy.attachment(balance_drift.attachment)).name, 'drift'))
        USING balance_drift.user_ids;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT d.user_id, d.wallet_id, f.field, f.cached_value, f.ledger_value
    FROM economy.drifted_figures(balance_drift.user_ids) d
    CROSS JOIN LATERAL (
        VALUES
        (1, 'wallet.balance', d.wallet_balance, d.ledger_balance),
        (2, 'wallet.held', d.wallet_held, d.holds_held),
        (3, 'profile.balance', d.profile_balance, d.ledger_balance),
        (4, 'profile.lifetime_earnings', d.profile_earnings, d.ledger_earnings)
    ) AS f (position, field, cached_value, ledger_value)
    WHERE f.cached_value IS DISTINCT FROM f.ledger_value
        AND NOT (f.field LIKE 'wallet.%' AND d.wallet_id IS NULL)
    ORDER BY d.user_id, f.position;
END;
$$;

-- The drift rows of the first max_wallets drifted users, in user order (of
-- all when NULL): what one bounded reconcile covers, dry or real.
CREATE FUNCTION economy.bounded_drift(user_ids bigint[], max_wallets integer)
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE sql
STABLE
AS $$
    SELECT d.user_id, d.wallet_id, d.field, d.cached_value, d.ledger_value
    FROM (
        SELECT d.*, dense_rank() OVER (ORDER BY d.user_id) AS nth
        FROM economy.balance_drift(bounded_drift.user_ids) d
    ) d
    WHERE bounded_drift.max_wallets IS NULL OR d.nth <= bounded_drift.max_wallets;
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
        FROM economy.bounded_drift(reconcile_economy.user_ids, reconcile_economy.max_wallets) d;
        RETURN;
    END IF;

    SELECT coalesce(array_agg(u.user_id ORDER BY u.user_id), '{}') INTO drifted_users
    FROM (
        SELECT d.user_id
        FROM economy.bounded_drift(reconcile_economy.user_ids, reconcile_economy.max_wallets) d
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

    -- A new statement, so a new snapshot: taken after the locks. A hot
    -- wallet's caches are set to the ledger less the credits parked since.
    RETURN QUERY
    WITH drifted AS (
        SELECT * FROM economy.drifted_figures(drifted_users)
    ),

    wallet_fix AS (
        UPDATE economy.wallet w
        SET balance = d.ledger_balance - d.parked_balance, held = d.holds_held
        FROM drifted d
        WHERE w.id = d.wallet_id
            AND (d.wallet_balance <> d.ledger_balance OR d.wallet_held <> d.holds_held)
    ),

    profile_fix AS (
        UPDATE economy.profile p
        SET balance = d.ledger_balance - d.parked_balance,
            lifetime_earnings = d.ledger_earnings - d.parked_earnings
        FROM drifted d
        WHERE p.user_id = d.user_id
            AND (d.profile_balance <> d.ledger_balance OR d.profile_earnings <> d.ledger_earnings)
    ),

    drift AS (
        SELECT * FROM economy.balance_drift(drifted_users)
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

-- Template: folds the parked credits of the given hot wallets (all when
-- NULL) into the cached columns; returns how many wallets it folded. Their
-- rows are locked first, in ascending key order; a credit still in flight is
-- not seen and stays parked.
CREATE FUNCTION economy.render_fold(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(wallet_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    repairing text := current_setting('economy.repairing', true);
    locked bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    -- its own updates of the cached columns pass their guards (a function's
    -- SET clause may not name a custom setting unless a superuser made it)
    PERFORM set_config('economy.repairing', 'on', true);
    SELECT coalesce(array_agg(l.wallet_id), '{}') INTO locked
    FROM (
        SELECT w.%2$I::bigint AS wallet_id FROM %3$s w
        WHERE w.%2$I IN (
            SELECT c.wallet_id FROM economy.attached_hot_credit c
            WHERE c.attachment = %4$L AND (wallet_ids IS NULL OR c.wallet_id = ANY (wallet_ids))
        )
        ORDER BY w.%2$I
        FOR NO KEY UPDATE
    ) l;
    WITH taken AS (
        DELETE FROM economy.attached_hot_credit c
        WHERE c.attachment = %4$L AND c.wallet_id = ANY (locked)
        RETURNING c.wallet_id, c.amount, c.earnings
    ),

    per_wallet AS (
        SELECT t.wallet_id, sum(t.amount) AS amount, sum(t.earnings) AS earnings
        FROM taken t
        GROUP BY t.wallet_id
    ),

    folded AS (
        UPDATE %3$s w SET %5$s
        FROM per_wallet pw
        WHERE w.%2$I = pw.wallet_id
        RETURNING %6$s::bigint AS owner_key, pw.amount, pw.earnings
    )

    SELECT array_agg(f.owner_key), array_agg(f.amount), array_agg(f.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM folded f;
    %7$s
    PERFORM set_config('economy.repairing', coalesce(repairing, ''), true);
    RETURN cardinality(locked);
END;
$fn$
$template$,
    economy.attached_object(a.name, 'fold'),
    a.wallet_key_column,
    a.wallet,
    a.name,
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 'pw.amount', 'pw.earnings'
    ),
    economy.render_column('w', a.wallet_owner_column),
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)')
);
$render$;

-- Template: set_hot(…, attachment => N). Turning a wallet back to normal
-- deletes its row of attached_hot_wallet, so it first waits for the credits
-- in flight (each holds KEY SHARE on that row), then folds them.
CREATE FUNCTION economy.render_set_hot(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(wallet_id bigint, hot boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM FROM %2$s w WHERE w.%3$I = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet %% does not exist', $1 USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF $2 THEN
        INSERT INTO economy.attached_hot_wallet (attachment, wallet_id)
        VALUES (%4$L, $1)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM economy.attached_hot_wallet h
        WHERE h.attachment = %4$L AND h.wallet_id = $1;
        PERFORM economy.%5$I(ARRAY[$1]);
    END IF;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'set_hot'),
    a.wallet,
    a.wallet_key_column,
    a.name,
    economy.attached_object(a.name, 'fold')
);
$render$;

-- Template: wallet_balance(…, attachment => N): the cached balance plus the
-- parked credits, in one snapshot.
CREATE FUNCTION economy.render_balance(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(wallet_id bigint)
RETURNS numeric
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.%2$I::numeric + (
        SELECT coalesce(sum(c.amount), 0) FROM economy.attached_hot_credit c
        WHERE c.attachment = %3$L AND c.wallet_id = $1
    )
    FROM %4$s w
    WHERE w.%5$I = $1;
$fn$
$template$,
    economy.attached_object(a.name, 'balance'),
    a.wallet_balance_column,
    a.name,
    a.wallet,
    a.wallet_key_column
);
$render$;

-- The app tables whose columns an attachment caches, wallet then profile:
-- each with those columns and the name of the guard function that keeps them.
CREATE FUNCTION economy.cached_tables(a economy.attachments)
RETURNS TABLE (tbl regclass, cached name[], guard name)
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT a.wallet,
        array_remove(ARRAY[a.wallet_balance_column, a.wallet_earnings_column], NULL),
        economy.attached_object(a.name, 'keep_wallet')
    UNION ALL
    SELECT a.profile,
        array_remove(ARRAY[a.profile_balance_column, a.profile_earnings_column], NULL),
        economy.attached_object(a.name, 'keep_profile')
    WHERE a.profile IS NOT NULL;
$$;

-- Creates (or, for an upgrade of the templates, replaces) an attachment's
-- functions and their grants: as for the package's own functions, the app
-- reads drift and balances, the operator reconciles and manages hot wallets
-- (through balance_drift, wallet_balance, reconcile_economy, set_hot and
-- fold_hot_wallets).
CREATE FUNCTION economy.create_attached_functions(a economy.attachments)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kept record;
BEGIN
    EXECUTE economy.render_fold(a);
    EXECUTE economy.render_sync(a);
    EXECUTE economy.render_drift(a);
    EXECUTE economy.render_reconcile(a);
    EXECUTE economy.render_set_hot(a);
    EXECUTE economy.render_balance(a);
    IF a.profile IS NOT NULL THEN
        EXECUTE economy.render_move(a);
    END IF;
    FOR kept IN SELECT * FROM economy.cached_tables(a) LOOP
        EXECUTE economy.render_keep(kept.guard, kept.cached);
    END LOOP;

    EXECUTE format(
        'REVOKE ALL ON FUNCTION economy.%1$I(bigint[]), economy.%2$I(boolean, bigint[]),'
        ' economy.%3$I(bigint[]), economy.%4$I(bigint, boolean), economy.%5$I(bigint)'
        ' FROM PUBLIC',
        economy.attached_object(a.name, 'drift'), economy.attached_object(a.name, 'reconcile'),
        economy.attached_object(a.name, 'fold'), economy.attached_object(a.name, 'set_hot'),
        economy.attached_object(a.name, 'balance'));
    EXECUTE format(
        'GRANT EXECUTE ON FUNCTION economy.%1$I(bigint[]), economy.%2$I(bigint) TO economy_app',
        economy.attached_object(a.name, 'drift'), economy.attached_object(a.name, 'balance'));
    EXECUTE format(
        'GRANT EXECUTE ON FUNCTION economy.%1$I(boolean, bigint[]), economy.%2$I(bigint[]),'
        ' economy.%3$I(bigint, boolean) TO economy_operator',
        economy.attached_object(a.name, 'reconcile'), economy.attached_object(a.name, 'fold'),
        economy.attached_object(a.name, 'set_hot'));
END;
$$;

-- What the ledger says one wallet's figures are.
CREATE OR REPLACE FUNCTION economy.wallet_ledger_totals(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS TABLE (balance numeric, lifetime_earnings numeric)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    a economy.attachments;
BEGIN
    PERFORM economy.wallet_owner(wallet_ledger_totals.wallet_id, attachment);  -- known wallet
    IF attachment IS NULL THEN
        RETURN QUERY
        SELECT coalesce(sum(lt.balance), 0.00), coalesce(sum(lt.lifetime_earnings), 0.00)
        FROM economy.wallet_totals(ARRAY[wallet_ledger_totals.wallet_id]) lt;
        RETURN;
    END IF;
    a := economy.attachment(attachment);
    RETURN QUERY EXECUTE format(
        'SELECT coalesce(sum(r.%1$I), 0)::numeric,'
        ' coalesce(sum(r.%1$I) FILTER (WHERE %2$s), 0)::numeric'
        ' FROM %3$s AS r WHERE r.%4$I = $1',
        a.amount_column, a.earning, a.ledger, a.ledger_wallet_column)
    USING wallet_ledger_totals.wallet_id;
END;
$$;

-- Template: the ledger's trigger. An INSERT adds its amount to its wallet,
-- then to the owner's profile (BEFORE the row is written when the
-- attachment records balance_after_column: the row gets the wallet's new
-- balance). An UPDATE or DELETE takes the old row's amount back and adds the
-- new row's (UPDATE): one side per wallet, the wallets updated in ascending
-- key order, then the owners' profiles; balance_after is history and is left
-- as it was. A credit to a hot wallet is parked instead; any other entry on
-- a hot wallet folds its parked credits first.
CREATE OR REPLACE FUNCTION economy.render_sync(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    %2$s
    sync_amount numeric;
    sync_earned numeric;
    sync_owner bigint;
    sync_balance numeric;
    sync_wallets bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
    sync_owners bigint[];
BEGIN
    IF TG_OP <> 'DELETE' THEN
        %3$s
        sync_amount := NEW.%4$I;
        sync_earned := CASE WHEN coalesce((%5$s), false) THEN sync_amount ELSE 0 END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF sync_amount > 0 THEN
            -- a credit to a hot wallet is parked: no shared row written
            PERFORM FROM economy.attached_hot_wallet h
            WHERE h.attachment = %17$L AND h.wallet_id = NEW.%9$I
            FOR KEY SHARE;
            IF FOUND THEN
                INSERT INTO economy.attached_hot_credit (attachment, wallet_id, amount, earnings)
                VALUES (%17$L, NEW.%9$I, sync_amount, sync_earned);
                %19$s
            END IF;
        ELSIF EXISTS (
            SELECT FROM economy.attached_hot_wallet h
            WHERE h.attachment = %17$L AND h.wallet_id = NEW.%9$I
        ) THEN
            PERFORM economy.%18$I(ARRAY[NEW.%9$I::bigint]);  -- the balance is exact after it
        END IF;
        UPDATE %6$s w SET %7$s
        WHERE w.%8$I = NEW.%9$I
        RETURNING %10$s, w.%15$I INTO sync_owner, sync_balance;
        %11$s
        %16$s
    END IF;

    %12$s
    sync_wallets := ARRAY[OLD.%9$I];
    sync_amounts := ARRAY[-OLD.%4$I];
    sync_earnings := ARRAY[CASE WHEN coalesce((%5$s), false) THEN -OLD.%4$I ELSE 0 END];
    IF TG_OP = 'UPDATE' THEN
        IF NEW.%9$I = OLD.%9$I THEN
            sync_amounts[1] := sync_amounts[1] + sync_amount;
            sync_earnings[1] := sync_earnings[1] + sync_earned;
        ELSIF NEW.%9$I > OLD.%9$I THEN
            sync_wallets := sync_wallets || NEW.%9$I;
            sync_amounts := sync_amounts || sync_amount;
            sync_earnings := sync_earnings || sync_earned;
        ELSE
            sync_wallets := NEW.%9$I || sync_wallets;
            sync_amounts := sync_amount || sync_amounts;
            sync_earnings := sync_earned || sync_earnings;
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(sync_wallets) LOOP
        sync_owner := NULL;
        IF sync_amounts[i] <> 0 OR sync_earnings[i] <> 0 THEN
            UPDATE %6$s w SET %13$s
            WHERE w.%8$I = sync_wallets[i]
            RETURNING %10$s INTO sync_owner;
        END IF;
        sync_owners := sync_owners || sync_owner;
    END LOOP;
    %14$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'sync'),
    economy.render_row_variables(a.ledger, NULL, true),
    economy.render_row_variables(a.ledger, 'NEW', false),
    a.amount_column,
    a.earning,
    a.wallet,
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 'sync_amount', 'sync_earned'
    ),
    a.wallet_key_column,
    a.ledger_wallet_column,
    economy.render_column('w', a.wallet_owner_column),
    CASE WHEN a.profile IS NOT NULL THEN format(
        $profile$IF sync_owner IS NOT NULL THEN
            UPDATE %1$s p SET %2$s WHERE p.%3$I = sync_owner;
        END IF;$profile$,
        a.profile,
        economy.render_additions(
            'p', a.profile_balance_column, a.profile_earnings_column,
            'sync_amount', 'sync_earned'
        ),
        a.profile_key_column
    ) ELSE '' END,
    economy.render_row_variables(a.ledger, 'OLD', false),
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column,
        'sync_amounts[i]', 'sync_earnings[i]'
    ),
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)'),
    a.wallet_balance_column,
    CASE WHEN a.balance_after_column IS NULL THEN 'RETURN NULL;' ELSE format(
        'NEW.%I := sync_balance;  -- a BEFORE trigger: the row is written with it'
        || E'\n        RETURN NEW;',
        a.balance_after_column
    ) END,
    a.name,
    economy.attached_object(a.name, 'fold'),
    CASE WHEN a.balance_after_column IS NULL THEN 'RETURN NULL;' ELSE format(
        'NEW.%I := NULL;  -- a parked credit has no place in the order'
        || E'\n                RETURN NEW;',
        a.balance_after_column
    ) END
);
$render$;

-- Template: a wallet given to another owner takes its ledger figures from the
-- old owner's profile to the new one's.
CREATE OR REPLACE FUNCTION economy.render_move(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    sync_owners bigint[] := ARRAY[OLD.%2$I, NEW.%2$I];
    moved numeric;
    moved_earnings numeric;
BEGIN
    -- what the wallet brought to the old owner's cached profile: its ledger
    -- less its parked credits (those count through whoever owns it), both
    -- read in one snapshot
    SELECT coalesce(sum(r.%3$I), 0) - (
            SELECT coalesce(sum(c.amount), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = %9$L AND c.wallet_id = NEW.%7$I
        ),
        coalesce(sum(r.%3$I) FILTER (WHERE %4$s), 0) - (
            SELECT coalesce(sum(c.earnings), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = %9$L AND c.wallet_id = NEW.%7$I
        )
    INTO moved, moved_earnings
    FROM %5$s AS r
    WHERE r.%6$I = NEW.%7$I;
    %8$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'move'),
    a.wallet_owner_column,
    a.amount_column,
    a.earning,
    a.ledger,
    a.ledger_wallet_column,
    a.wallet_key_column,
    economy.render_profile_update(
        a,
        format(
            '(VALUES (%1$s, -moved, -moved_earnings), (%2$s, moved, moved_earnings))',
            format('OLD.%I::bigint', a.wallet_owner_column),
            format('NEW.%I::bigint', a.wallet_owner_column)
        )
    ),
    a.name
);
$render$;

-- Template: a guard that keeps a table's cached columns as they are on an
-- ordinary UPDATE (the rest of the row is saved).
CREATE OR REPLACE FUNCTION economy.render_keep(function_name name, cached name[])
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    %2$s
    RETURN NEW;
END;
$fn$
$template$,
    function_name,
    (SELECT string_agg(format('NEW.%1$I := OLD.%1$I;', c), E'\n    ') FROM unnest(cached) c)
);
$render$;

-- Template: the drift of an attachment, with balance_drift's columns. A
-- profile row names its wallet when the owner has exactly one.
CREATE OR REPLACE FUNCTION economy.render_drift(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(user_ids bigint[])
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH parked AS (
        SELECT c.wallet_id, sum(c.amount) AS balance, sum(c.earnings) AS earnings
        FROM economy.attached_hot_credit c
        WHERE c.attachment = %15$L
        GROUP BY c.wallet_id
    ),

    -- a hot wallet's cached figures with its parked credits: the exact ones
    wallets AS (
        SELECT w.%2$I::bigint AS wallet_id, %3$s::bigint AS owner_id,
            w.%4$I::numeric + coalesce(pk.balance, 0) AS cached_balance,
            %5$s::numeric + coalesce(pk.earnings, 0) AS cached_earnings,
            coalesce(pk.balance, 0) AS parked_balance,
            coalesce(pk.earnings, 0) AS parked_earnings
        FROM %6$s w
        LEFT JOIN parked pk ON pk.wallet_id = w.%2$I
        WHERE user_ids IS NULL OR %3$s = ANY (user_ids)
            OR (%3$s IS NULL AND array_position(user_ids, NULL) IS NOT NULL)
    ),

    ledger AS (
        SELECT r.%7$I::bigint AS wallet_id, sum(r.%8$I)::numeric AS balance,
            coalesce(sum(r.%8$I) FILTER (WHERE %9$s), 0)::numeric AS earnings
        FROM %10$s AS r
        WHERE user_ids IS NULL OR r.%7$I IN (SELECT wl.wallet_id FROM wallets wl)
        GROUP BY r.%7$I
    ),

    per_wallet AS (
        SELECT w.*, coalesce(l.balance, 0) AS ledger_balance,
            coalesce(l.earnings, 0) AS ledger_earnings
        FROM wallets w
        LEFT JOIN ledger l ON l.wallet_id = w.wallet_id
    ),

    per_profile AS (%11$s),

    compared AS (
        SELECT pw.owner_id AS user_id, pw.wallet_id, 1 AS position, 'wallet.balance' AS field,
            pw.cached_balance AS cached_value, pw.ledger_balance AS ledger_value
        FROM per_wallet pw
        UNION ALL
        SELECT pw.owner_id, pw.wallet_id, 2, 'wallet.lifetime_earnings',
            pw.cached_earnings, pw.ledger_earnings
        FROM per_wallet pw
        WHERE %12$L
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 3, 'profile.balance',
            pp.cached_balance, pp.ledger_balance
        FROM per_profile pp
        WHERE %13$L
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 4, 'profile.lifetime_earnings',
            pp.cached_earnings, pp.ledger_earnings
        FROM per_profile pp
        WHERE %14$L
    )

    SELECT c.user_id, c.wallet_id, c.field, c.cached_value, c.ledger_value
    FROM compared c
    WHERE c.cached_value IS DISTINCT FROM c.ledger_value
    ORDER BY c.user_id NULLS LAST, c.position, c.wallet_id;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'drift'),
    a.wallet_key_column,
    economy.render_column('w', a.wallet_owner_column),
    a.wallet_balance_column,
    economy.render_column('w', a.wallet_earnings_column),
    a.wallet,
    a.ledger_wallet_column,
    a.amount_column,
    a.earning,
    a.ledger,
    CASE WHEN a.profile IS NULL THEN
        'SELECT NULL::bigint AS user_id, NULL::bigint AS wallet_id,'
        ' NULL::numeric AS cached_balance, NULL::numeric AS cached_earnings,'
        ' NULL::numeric AS ledger_balance, NULL::numeric AS ledger_earnings WHERE false'
    ELSE format(
        $profiles$
        SELECT g.user_id, g.wallet_id,
            g.cached_balance + g.parked_balance AS cached_balance,
            g.cached_earnings + g.parked_earnings AS cached_earnings,
            g.ledger_balance, g.ledger_earnings
        FROM (
            SELECT p.%1$I::bigint AS user_id,
                CASE WHEN count(pw.wallet_id) = 1 THEN min(pw.wallet_id) END AS wallet_id,
                %2$s::numeric AS cached_balance, %3$s::numeric AS cached_earnings,
                coalesce(sum(pw.ledger_balance), 0) AS ledger_balance,
                coalesce(sum(pw.ledger_earnings), 0) AS ledger_earnings,
                coalesce(sum(pw.parked_balance), 0) AS parked_balance,
                coalesce(sum(pw.parked_earnings), 0) AS parked_earnings
            FROM %4$s p
            LEFT JOIN per_wallet pw ON pw.owner_id = p.%1$I
            WHERE user_ids IS NULL OR p.%1$I = ANY (user_ids)
            GROUP BY p.%1$I, 3, 4
        ) g
    $profiles$,
        a.profile_key_column,
        economy.render_column('p', a.profile_balance_column),
        economy.render_column('p', a.profile_earnings_column),
        a.profile
    ) END,
    a.wallet_earnings_column IS NOT NULL,
    a.profile_balance_column IS NOT NULL,
    a.profile_earnings_column IS NOT NULL,
    a.name
);
$render$;

-- Template: reconcile an attachment as reconcile_economy does the package's
-- tables: lock the drifted owners' wallets and the drifted ownerless ones
-- (ascending keys), then their profiles, fold the parked credits of the hot
-- ones, measure again with a snapshot taken after the locks, and set each
-- drifted cache to its ledger value (less the credits parked since).
CREATE OR REPLACE FUNCTION economy.render_reconcile(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(dry_run boolean, user_ids bigint[])
RETURNS TABLE (
    user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric,
    fixed boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    drifted_owners bigint[];
    drifted_wallets bigint[];
    locked_wallets bigint[];
BEGIN
    IF dry_run THEN
        RETURN QUERY SELECT d.*, false FROM economy.%2$I(user_ids) d;
        RETURN;
    END IF;

    SELECT coalesce(array_agg(DISTINCT d.user_id) FILTER (WHERE d.user_id IS NOT NULL), '{}'),
        coalesce(array_agg(DISTINCT d.wallet_id) FILTER (WHERE d.user_id IS NULL), '{}')
    INTO drifted_owners, drifted_wallets
    FROM economy.%2$I(user_ids) d;
    -- and the hot wallets with parked credits, which a real run folds
    SELECT
        drifted_owners
        || coalesce(array_agg(h.owner_id) FILTER (WHERE h.owner_id IS NOT NULL), '{}'),
        drifted_wallets
        || coalesce(array_agg(h.wallet_id) FILTER (WHERE h.owner_id IS NULL), '{}')
    INTO drifted_owners, drifted_wallets
    FROM (
        SELECT w.%5$I::bigint AS wallet_id, %4$s::bigint AS owner_id
        FROM %3$s w
        WHERE w.%5$I IN (
            SELECT c.wallet_id FROM economy.attached_hot_credit c WHERE c.attachment = %9$L
        )
    ) h
    WHERE user_ids IS NULL OR h.owner_id = ANY (user_ids)
        OR (h.owner_id IS NULL AND array_position(user_ids, NULL) IS NOT NULL);

    SELECT coalesce(array_agg(l.wallet_id), '{}') INTO locked_wallets
    FROM (
        SELECT w.%5$I::bigint AS wallet_id FROM %3$s w
        WHERE %4$s = ANY (drifted_owners) OR w.%5$I = ANY (drifted_wallets)
        ORDER BY w.%5$I
        FOR NO KEY UPDATE
    ) l;
    %6$s
    PERFORM economy.%10$I(locked_wallets);

    -- lets the repairs past the guards of the cached columns
    PERFORM set_config('economy.repairing', 'on', true);
    -- A new statement, so a new snapshot: taken after the locks.
    RETURN QUERY
    WITH drift AS (
        SELECT d.*
        FROM economy.%2$I(
            drifted_owners
            || CASE WHEN drifted_wallets = '{}' THEN '{}' ELSE ARRAY[NULL::bigint] END
        ) d
        WHERE d.user_id = ANY (drifted_owners) OR d.wallet_id = ANY (drifted_wallets)
    ),

    -- credits parked since the fold: the caches are set to the ledger less them
    parked AS (
        SELECT c.wallet_id, sum(c.amount) AS balance, sum(c.earnings) AS earnings
        FROM economy.attached_hot_credit c
        WHERE c.attachment = %9$L
        GROUP BY c.wallet_id
    ),

    wallet_fix AS (
        UPDATE %3$s w SET %7$s
        FROM (SELECT DISTINCT d.wallet_id FROM drift d WHERE d.field LIKE 'wallet.%%') u
        LEFT JOIN drift b ON b.wallet_id = u.wallet_id AND b.field = 'wallet.balance'
        LEFT JOIN drift e ON e.wallet_id = u.wallet_id AND e.field = 'wallet.lifetime_earnings'
        LEFT JOIN parked pk ON pk.wallet_id = u.wallet_id
        WHERE w.%5$I = u.wallet_id
    ),

    profile_fix AS (%8$s)

    SELECT d.user_id, d.wallet_id, d.field, d.cached_value, d.ledger_value, true
    FROM drift d;
    PERFORM set_config('economy.repairing', '', true);
END;
$fn$
$template$,
    economy.attached_object(a.name, 'reconcile'),
    economy.attached_object(a.name, 'drift'),
    a.wallet,
    economy.render_column('w', a.wallet_owner_column),
    a.wallet_key_column,
    CASE WHEN a.profile IS NOT NULL THEN format(
        'PERFORM FROM %1$s p WHERE p.%2$I = ANY (drifted_owners) ORDER BY p.%2$I'
        ' FOR NO KEY UPDATE;',
        a.profile, a.profile_key_column
    ) ELSE '' END,
    concat_ws(', ',
        economy.render_set(
            '%1$I = coalesce(b.ledger_value - coalesce(pk.balance, 0), w.%1$I)',
            a.wallet_balance_column),
        economy.render_set(
            '%1$I = coalesce(e.ledger_value - coalesce(pk.earnings, 0), w.%1$I)',
            a.wallet_earnings_column)),
    CASE WHEN a.profile IS NULL THEN 'SELECT' ELSE format(
        $profiles$
        UPDATE %1$s p SET %3$s
        FROM (SELECT DISTINCT d.user_id FROM drift d WHERE d.field LIKE 'profile.%%') u
        LEFT JOIN drift b ON b.user_id = u.user_id AND b.field = 'profile.balance'
        LEFT JOIN drift e ON e.user_id = u.user_id AND e.field = 'profile.lifetime_earnings'
        LEFT JOIN (
            SELECT %4$s::bigint AS owner_id, sum(pk.balance) AS balance,
                sum(pk.earnings) AS earnings
            FROM parked pk
            JOIN %5$s w ON w.%6$I = pk.wallet_id
            GROUP BY 1
        ) po ON po.owner_id = u.user_id
        WHERE p.%2$I = u.user_id
    $profiles$,
        a.profile,
        a.profile_key_column,
        concat_ws(', ',
            economy.render_set(
                '%1$I = coalesce(b.ledger_value - coalesce(po.balance, 0), p.%1$I)',
                a.profile_balance_column),
            economy.render_set(
                '%1$I = coalesce(e.ledger_value - coalesce(po.earnings, 0), p.%1$I)',
                a.profile_earnings_column)),
        economy.render_column('w', a.wallet_owner_column),
        a.wallet,
        a.wallet_key_column
    ) END,
    a.name,
    economy.attached_object(a.name, 'fold')
);
$render$;

-- Attaches the sync, drift and reconcile to an application's tables (see
-- the top of this file). Changes no cache: existing drift shows in drift
-- checks. All or nothing: a bad argument creates nothing.
CREATE OR REPLACE FUNCTION economy.attach(
    name text,
    ledger regclass,
    wallet regclass,
    ledger_wallet_column name DEFAULT 'wallet_id',
    amount_column name DEFAULT 'amount',
    wallet_balance_column name DEFAULT 'balance',
    wallet_earnings_column name DEFAULT NULL,
    wallet_owner_column name DEFAULT NULL,
    profile regclass DEFAULT NULL,
    profile_key_column name DEFAULT 'id',
    profile_balance_column name DEFAULT NULL,
    profile_earnings_column name DEFAULT NULL,
    earning text DEFAULT 'amount > 0',
    balance_after_column name DEFAULT NULL
)
RETURNS economy.attachments
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a economy.attachments;
    key_types regtype[] := ARRAY['smallint', 'integer', 'bigint']::regtype[];
    money_types regtype[] := ARRAY['smallint', 'integer', 'bigint', 'numeric']::regtype[];
    amount_type regtype;
    wallet_keys name[];
    tbl regclass;
    kept record;
BEGIN
    IF attach.name IS NULL OR attach.name !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'attachment name must match [a-z][a-z0-9_]* (at most 40 characters): %',
            attach.name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT FROM economy.attachments x WHERE x.name = attach.name) THEN
        RAISE EXCEPTION 'an attachment named % exists already', attach.name
            USING ERRCODE = 'duplicate_object';
    END IF;
    FOREACH tbl IN ARRAY array_remove(ARRAY[attach.ledger, attach.wallet, attach.profile], NULL)
    LOOP
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
        END IF;
    END LOOP;
    IF attach.ledger IN (attach.wallet, attach.profile) OR attach.wallet = attach.profile THEN
        RAISE EXCEPTION 'ledger, wallet and profile must be three different tables'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT FROM economy.attachments x WHERE x.ledger = attach.ledger) THEN
        RAISE EXCEPTION 'ledger % is attached already', attach.ledger
            USING ERRCODE = 'duplicate_object';
    END IF;

    -- the wallet's primary key: one integer column
    SELECT array_agg(att.attname) INTO wallet_keys
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute att
        ON att.attrelid = i.indrelid AND att.attnum = ANY (i.indkey)
    WHERE i.indrelid = attach.wallet AND i.indisprimary;
    IF cardinality(wallet_keys) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'wallet table % needs a primary key of one column', attach.wallet
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    PERFORM economy.check_column(attach.wallet, wallet_keys[1], 'wallet key', key_types);
    PERFORM economy.check_column(
        attach.ledger, attach.ledger_wallet_column, 'ledger_wallet_column', key_types
    );
    amount_type := economy.check_column(
        attach.ledger, attach.amount_column, 'amount_column', money_types
    );
    -- caches of an integer type need integer amounts: nothing is ever rounded
    IF amount_type = 'numeric'::regtype THEN
        money_types := ARRAY['numeric']::regtype[];
    END IF;
    PERFORM economy.check_column(
        attach.wallet, attach.wallet_balance_column, 'wallet_balance_column', money_types
    );
    IF attach.wallet_earnings_column IS NOT NULL THEN
        PERFORM economy.check_column(
            attach.wallet, attach.wallet_earnings_column, 'wallet_earnings_column', money_types
        );
    END IF;
    IF attach.wallet_owner_column IS NOT NULL THEN
        PERFORM economy.check_column(
            attach.wallet, attach.wallet_owner_column, 'wallet_owner_column', key_types
        );
    END IF;
    IF attach.profile IS NOT NULL THEN
        IF attach.wallet_owner_column IS NULL THEN
            RAISE EXCEPTION 'a profile table needs wallet_owner_column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF attach.profile_balance_column IS NULL AND attach.profile_earnings_column IS NULL THEN
            RAISE EXCEPTION 'a profile table needs profile_balance_column or profile_earnings_column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM economy.check_column(
            attach.profile, attach.profile_key_column, 'profile_key_column', key_types
        );
        IF attach.profile_balance_column IS NOT NULL THEN
            PERFORM economy.check_column(
                attach.profile, attach.profile_balance_column, 'profile_balance_column', money_types
            );
        END IF;
        IF attach.profile_earnings_column IS NOT NULL THEN
            PERFORM economy.check_column(
                attach.profile, attach.profile_earnings_column, 'profile_earnings_column', money_types
            );
        END IF;
    ELSIF attach.profile_balance_column IS NOT NULL OR attach.profile_earnings_column IS NOT NULL
    THEN
        RAISE EXCEPTION 'profile_balance_column and profile_earnings_column need a profile table'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF attach.balance_after_column IS NOT NULL THEN
        PERFORM economy.check_column(
            attach.ledger, attach.balance_after_column, 'balance_after_column', money_types
        );
    END IF;
    PERFORM economy.check_earning(attach.ledger, attach.earning);

    INSERT INTO economy.attachments AS x (
        name, ledger, wallet, profile, ledger_wallet_column, amount_column, wallet_key_column,
        wallet_balance_column, wallet_earnings_column, wallet_owner_column, profile_key_column,
        profile_balance_column, profile_earnings_column, earning, balance_after_column
    )
    VALUES (
        attach.name, attach.ledger, attach.wallet, attach.profile, attach.ledger_wallet_column,
        attach.amount_column, wallet_keys[1], attach.wallet_balance_column,
        attach.wallet_earnings_column, attach.wallet_owner_column,
        CASE WHEN attach.profile IS NOT NULL THEN attach.profile_key_column END,
        attach.profile_balance_column, attach.profile_earnings_column, attach.earning,
        attach.balance_after_column
    )
    RETURNING x.* INTO a;

    PERFORM economy.create_attached_functions(a);
    EXECUTE format(
        -- BEFORE when it records balance_after: the row is written with it
        'CREATE TRIGGER %I %s INSERT ON %s FOR EACH ROW EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync',
        CASE WHEN a.balance_after_column IS NULL THEN 'AFTER' ELSE 'BEFORE' END,
        a.ledger, economy.attached_object(a.name, 'sync'));
    EXECUTE format(
        'CREATE TRIGGER %I AFTER DELETE ON %s FOR EACH ROW EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync_delete', a.ledger,
        economy.attached_object(a.name, 'sync'));
    EXECUTE format(
        'CREATE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW'
        ' WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync_update', a.ledger,
        economy.attached_object(a.name, 'sync'));
    EXECUTE format(
        'CREATE TRIGGER %I BEFORE TRUNCATE ON %s'
        ' FOR EACH STATEMENT EXECUTE FUNCTION economy.refuse_attached_truncate()',
        'economy_' || a.name || '_refuse_truncate', a.ledger);

    -- guards of the cached columns
    FOR kept IN SELECT * FROM economy.cached_tables(a) LOOP
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW'
            ' WHEN (pg_catalog.pg_trigger_depth() < 1'
            ' AND pg_catalog.current_setting(''economy.repairing'', true)'
            ' IS DISTINCT FROM ''on'' AND (%s))'
            ' EXECUTE FUNCTION economy.%I()',
            'economy_' || a.name || '_keep_cached', kept.tbl,
            (SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
                FROM unnest(kept.cached) c),
            kept.guard);
    END LOOP;

    IF a.profile IS NOT NULL THEN
        EXECUTE format(
            'CREATE TRIGGER %1$I AFTER UPDATE OF %2$I ON %3$s FOR EACH ROW'
            ' WHEN (OLD.%2$I IS DISTINCT FROM NEW.%2$I) EXECUTE FUNCTION economy.%4$I()',
            'economy_' || a.name || '_move', a.wallet_owner_column, a.wallet,
            economy.attached_object(a.name, 'move'));
    END IF;

    RETURN a;
END;
$$;

-- Removes everything attach() created; the app's tables and data stay.
CREATE OR REPLACE FUNCTION economy.detach(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a economy.attachments := economy.attachment(detach.name);
    trig record;
BEGIN
    -- the caches are left exact: credits in flight are waited for (their
    -- KEY SHARE on the hot wallets' rows), then every parked credit folded
    DELETE FROM economy.attached_hot_wallet h WHERE h.attachment = a.name;
    EXECUTE format('SELECT economy.%I(NULL)', economy.attached_object(a.name, 'fold'));
    FOR trig IN
        SELECT t.tgname, t.tgrelid::regclass AS tbl
        FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid IN (a.ledger, a.wallet, a.profile)
            AND t.tgname LIKE 'economy\_' || a.name || '\_%'
            AND NOT t.tgisinternal
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trig.tgname, trig.tbl);
    END LOOP;
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()', economy.attached_object(a.name, 'sync'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()', economy.attached_object(a.name, 'move'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()',
        economy.attached_object(a.name, 'keep_wallet'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()',
        economy.attached_object(a.name, 'keep_profile'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I(boolean, bigint[])',
        economy.attached_object(a.name, 'reconcile'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I(bigint[])',
        economy.attached_object(a.name, 'drift'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I(bigint[])',
        economy.attached_object(a.name, 'fold'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I(bigint, boolean)',
        economy.attached_object(a.name, 'set_hot'));
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I(bigint)',
        economy.attached_object(a.name, 'balance'));
    DELETE FROM economy.attachments x WHERE x.name = a.name;
END;
$$;

DROP FUNCTION economy.wallet_balance(bigint);
DROP FUNCTION economy.set_hot(bigint, boolean);
DROP FUNCTION economy.fold_hot_wallets();

-- The wallet's exact balance after every commit, hot or not: the cached
-- balance plus its parked credits. NULL for an unknown wallet. With an
-- attachment: that attachment's generated balance function (35_attach.sql).
CREATE FUNCTION economy.wallet_balance(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS numeric
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    exact numeric;
BEGIN
    IF attachment IS NOT NULL THEN
        EXECUTE format('SELECT economy.%I($1)', economy.attached_object(
            (economy.attachment(wallet_balance.attachment)).name, 'balance'))
        INTO exact
        USING wallet_balance.wallet_id;
        RETURN exact;
    END IF;
    SELECT w.balance + coalesce(
        (SELECT sum(c.amount) FROM economy.hot_credit c WHERE c.wallet_id = w.id), 0.00
    )
    INTO exact
    FROM economy.wallet w
    WHERE w.id = wallet_balance.wallet_id;
    RETURN exact;
END;
$$;

-- Marks a wallet hot, or back to normal: then it first waits for the credits
-- in flight (FOR UPDATE conflicts with the KEY SHARE lock each of them holds)
-- and folds them. With an attachment: that attachment's generated set_hot.
CREATE FUNCTION economy.set_hot(
    wallet_id bigint, hot boolean DEFAULT true, attachment text DEFAULT NULL
)
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
    IF attachment IS NOT NULL THEN
        EXECUTE format('SELECT economy.%I($1, $2)', economy.attached_object(
            (economy.attachment(set_hot.attachment)).name, 'set_hot'))
        USING wallet_id, hot;
        RETURN;
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
-- wallets were folded. Their rows are locked first, in id order. With an
-- attachment: that attachment's hot wallets.
CREATE FUNCTION economy.fold_hot_wallets(attachment text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parked bigint[];
    folded integer;
BEGIN
    IF attachment IS NOT NULL THEN
        EXECUTE format('SELECT economy.%I(NULL)', economy.attached_object(
            (economy.attachment(fold_hot_wallets.attachment)).name, 'fold'))
        INTO folded;
        RETURN folded;
    END IF;
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA economy FROM PUBLIC;
GRANT SELECT ON economy.attached_hot_wallet, economy.attached_hot_credit TO economy_app;
GRANT EXECUTE ON FUNCTION
economy.wallet_balance(bigint, text),
economy.drifted_figures(bigint[]),
economy.earned(numeric, boolean),
economy.wallet_totals(bigint[])
TO economy_app;
GRANT EXECUTE ON FUNCTION
economy.set_hot(bigint, boolean, text),
economy.fold_hot_wallets(text)
TO economy_operator;

-- the attachments made before: their functions from the new templates
SELECT economy.create_attached_functions(a) FROM economy.attachments a ORDER BY a.name;
