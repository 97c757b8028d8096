-- Undo 0003_attach: every attachment is detached first (the app's tables and
-- data stay), and its fixes leave reconcile_log with it.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0002_integrity)';

SELECT economy.detach(a.name) FROM economy.attachments a;

DROP FUNCTION economy.balance_drift(bigint[], text);
DROP FUNCTION economy.reconcile_economy(boolean, bigint[], integer, uuid, text);
DROP FUNCTION economy.wallet_ledger_totals(bigint, text);
DROP FUNCTION economy.owner_keys(text, bigint, integer);
DROP FUNCTION economy.wallet_owner(bigint, text);
DROP FUNCTION economy.detach(text);
DROP FUNCTION economy.attach(
    text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name
);
DROP FUNCTION economy.refuse_attached_truncate();
DROP FUNCTION economy.render_reconcile(economy.attachments);
DROP FUNCTION economy.render_drift(economy.attachments);
DROP FUNCTION economy.render_keep(name, name[]);
DROP FUNCTION economy.render_move(economy.attachments);
DROP FUNCTION economy.render_sync(economy.attachments);
DROP FUNCTION economy.render_row_variables(regclass, text, boolean);
DROP FUNCTION economy.render_profile_update(economy.attachments, text);
DROP FUNCTION economy.render_additions(text, name, name, text, text);
DROP FUNCTION economy.render_set(text, name);
DROP FUNCTION economy.render_column(text, name);
DROP FUNCTION economy.check_earning(regclass, text);
DROP FUNCTION economy.check_column(regclass, name, text, regtype[]);
DROP FUNCTION economy.attachment(text);
DROP FUNCTION economy.attached_object(text, text);
DROP TABLE economy.attachments;

DELETE FROM economy.reconcile_log l WHERE l.attachment IS NOT NULL;
ALTER TABLE economy.reconcile_log
DROP COLUMN attachment,
ALTER COLUMN user_id SET NOT NULL;

-- One row per cached field that disagrees with the ledger. Reads one snapshot
-- and takes no locks: a cache and its ledger rows commit together, so a
-- single snapshot sees both or neither.
CREATE FUNCTION economy.balance_drift(user_ids bigint[] DEFAULT NULL)
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

    compared AS (
        SELECT
            p.user_id,
            w.id AS wallet_id,
            w.balance AS wallet_balance,
            p.balance AS profile_balance,
            p.lifetime_earnings,
            coalesce(c.balance, 0.00) + coalesce(r.balance, 0.00) AS ledger_balance,
            coalesce(c.lifetime_earnings, 0.00) + coalesce(r.lifetime_earnings, 0.00)
            AS ledger_earnings
        FROM economy.profile p
        LEFT JOIN economy.wallet w ON w.user_id = p.user_id
        LEFT JOIN economy.ledger_checkpoint c ON c.wallet_id = w.id
        LEFT JOIN recent r ON r.wallet_id = w.id
        WHERE balance_drift.user_ids IS NULL OR p.user_id = ANY (balance_drift.user_ids)
    )

    SELECT d.user_id, d.wallet_id, f.field, f.cached_value, f.ledger_value
    FROM compared d
    CROSS JOIN LATERAL (
        VALUES
        (1, 'wallet.balance', d.wallet_balance, d.ledger_balance),
        (2, 'profile.balance', d.profile_balance, d.ledger_balance),
        (3, 'profile.lifetime_earnings', d.lifetime_earnings, d.ledger_earnings)
    ) AS f (position, field, cached_value, ledger_value)
    WHERE (
        (d.wallet_id IS NOT NULL AND d.wallet_balance IS DISTINCT FROM d.ledger_balance)
        OR d.profile_balance IS DISTINCT FROM d.ledger_balance
        OR d.lifetime_earnings IS DISTINCT FROM d.ledger_earnings
    )
        AND f.cached_value IS DISTINCT FROM f.ledger_value
        AND NOT (f.field = 'wallet.balance' AND d.wallet_id IS NULL)
    ORDER BY d.user_id, f.position;
END;
$$;

-- Drift rows plus whether each was fixed. A real run locks the drifted wallets
-- and profiles (writers' lock order), measures again with a snapshot taken
-- after the locks, so every committed entry is both in the sum and in the
-- cache it overwrites, and no in-flight entry is in either; then sets each
-- cache to its ledger value and logs the fix, under run_id (one per call
-- unless given: a run of many batches passes its own).
CREATE FUNCTION economy.reconcile_economy(
    dry_run boolean DEFAULT true,
    user_ids bigint[] DEFAULT NULL,
    max_wallets integer DEFAULT NULL,
    run_id uuid DEFAULT NULL
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA economy FROM PUBLIC;
GRANT EXECUTE ON FUNCTION economy.balance_drift(bigint[]) TO economy_app;
GRANT EXECUTE ON FUNCTION economy.reconcile_economy(boolean, bigint[], integer, uuid)
TO economy_operator;
