-- 0008_attached_statement_sync: an INSERT or COPY into an attached ledger
-- made with SET LOCAL economy.sync = 'statement' updates each wallet and
-- profile once (a statement trigger per attachment).

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0008_attached_statement_sync)';

-- Template: the ledger's statement trigger, for an INSERT made with
-- `SET LOCAL economy.sync = 'statement'` (a multi-row INSERT or a COPY):
-- its wallets locked in ascending key order, each updated once with the sum
-- of its rows, then each owner's profile once. As row by row, a hot wallet
-- that only gets credits has them parked (one parked row per wallet, no
-- shared row written); one that also gets a debit is folded under its lock
-- first. Not made for an attachment that records balance_after_column: each
-- row needs its own balance there, so its rows are synced one by one
-- whatever the setting.
CREATE FUNCTION economy.render_sync_rows(a economy.attachments)
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
    sync_parked bigint[];
    sync_folded bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    IF pg_catalog.current_setting('economy.sync', true) IS DISTINCT FROM 'statement' THEN
        RETURN NULL;  -- the row triggers applied the rows
    END IF;
    -- the hot wallets of the statement: parked if it only credits them
    -- (KEY SHARE, as a credit row by row), else folded below
    SELECT coalesce(array_agg(h.wallet_id) FILTER (WHERE h.credits_only), '{}'),
        coalesce(array_agg(h.wallet_id) FILTER (WHERE NOT h.credits_only), '{}')
    INTO sync_parked, sync_folded
    FROM (
        SELECT h.wallet_id, i.credits_only
        FROM economy.attached_hot_wallet h
        JOIN (
            SELECT n.%4$I AS wallet_key, bool_and(n.%5$I > 0) AS credits_only
            FROM sync_inserted n
            GROUP BY n.%4$I
        ) i ON i.wallet_key = h.wallet_id
        WHERE h.attachment = %10$L
        ORDER BY h.wallet_id
        FOR KEY SHARE OF h
    ) h;
    PERFORM FROM %2$s w
    WHERE w.%3$I IN (SELECT n.%4$I FROM sync_inserted n WHERE n.%4$I <> ALL (sync_parked))
    ORDER BY w.%3$I
    FOR NO KEY UPDATE;
    IF cardinality(sync_folded) > 0 THEN
        PERFORM economy.%11$I(sync_folded);
    END IF;
    -- each wallet's sums, once: parked or added to its cached columns
    WITH totals AS (
        SELECT n.%4$I AS wallet_key, sum(n.%5$I) AS amount,
            sum(CASE WHEN coalesce((%6$s), false) THEN n.%5$I ELSE 0 END) AS earnings
        FROM sync_inserted n
        GROUP BY n.%4$I
    ),

    parked AS (
        INSERT INTO economy.attached_hot_credit (attachment, wallet_id, amount, earnings)
        SELECT %10$L, t.wallet_key, t.amount, t.earnings
        FROM totals t
        WHERE t.wallet_key = ANY (sync_parked)
    ),

    updated AS (
        UPDATE %2$s w SET %7$s
        FROM totals t
        WHERE w.%3$I = t.wallet_key AND t.wallet_key <> ALL (sync_parked)
        RETURNING (%8$s)::bigint AS owner_key, t.amount, t.earnings
    )

    SELECT array_agg(u.owner_key), array_agg(u.amount), array_agg(u.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM updated u;
    %9$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'sync_rows'),
    a.wallet,
    a.wallet_key_column,
    a.ledger_wallet_column,
    a.amount_column,
    a.earning,
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 't.amount', 't.earnings'
    ),
    economy.render_column('w', a.wallet_owner_column),
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)'),
    a.name,
    economy.attached_object(a.name, 'fold')
);
$render$;

REVOKE ALL ON FUNCTION economy.render_sync_rows(economy.attachments) FROM PUBLIC;

-- Template: the ledger's trigger. An INSERT adds its amount to its wallet,
-- then to the owner's profile (BEFORE the row is written when the
-- attachment records balance_after_column: the row gets the wallet's new
-- balance). An UPDATE or DELETE takes the old row's amount back and adds the
-- new row's (UPDATE): one side per wallet, the wallets updated in ascending
-- key order, then the owners' profiles; balance_after is history and is left
-- as it was. A credit to a hot wallet is parked instead; any other entry on
-- a hot wallet folds its parked credits first. The rows of an INSERT made
-- with economy.sync = 'statement' are left to sync_rows (below). Both read
-- the setting when they fire, at the end of the statement, one right after
-- the other: so each row is applied once, by one of them. (Not in a WHEN
-- clause: an AFTER trigger's WHEN is read when the row or statement is
-- queued, and the statement could change the setting in between.)
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
    %20$s
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
    ) END,
    CASE WHEN a.balance_after_column IS NULL THEN $statement$
    IF TG_OP = 'INSERT' AND pg_catalog.current_setting('economy.sync', true) = 'statement' THEN
        RETURN NULL;  -- the statement's rows are applied together (sync_rows)
    END IF;$statement$ ELSE '' END
);
$render$;

-- Creates (or, for an upgrade of the templates, replaces) an attachment's
-- functions and their grants: as for the package's own functions, the app
-- reads drift and balances, the operator reconciles and manages hot wallets
-- (through balance_drift, wallet_balance, reconcile_economy, set_hot and
-- fold_hot_wallets). Also the ledger's statement trigger, which the row
-- triggers (made by attach) rely on being there.
CREATE OR REPLACE FUNCTION economy.create_attached_functions(a economy.attachments)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kept record;
BEGIN
    EXECUTE economy.render_fold(a);
    EXECUTE economy.render_sync(a);
    IF a.balance_after_column IS NULL THEN
        EXECUTE economy.render_sync_rows(a);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s'
            ' REFERENCING NEW TABLE AS sync_inserted FOR EACH STATEMENT'
            ' EXECUTE FUNCTION economy.%I()',
            'economy_' || a.name || '_sync_rows', a.ledger,
            economy.attached_object(a.name, 'sync_rows'));
    END IF;
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
    EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()',
        economy.attached_object(a.name, 'sync_rows'));
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

-- the attachments made before: their functions and statement trigger
SELECT economy.create_attached_functions(a) FROM economy.attachments a ORDER BY a.name;
