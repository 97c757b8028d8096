-- 0012_hosted_roles: attach takes over a sync role an administrator made beforehand
-- for an installer that may not create roles, and detach keeps it when the
-- installer may not drop it; a refused write of a cached column names the repair.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0012_hosted_roles)';

-- Template part: one entry's amount (sync_amount, sync_earned) added to its
-- wallet's owner's profile (sync_owner), checked to fit with what the owner's
-- hot wallets have parked.
CREATE FUNCTION economy.render_owner_update(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN a.profile IS NOT NULL THEN format(
        $profile$IF sync_owner IS NOT NULL THEN
            UPDATE %1$s p SET %2$s WHERE p.%3$I = sync_owner
            RETURNING %4$s INTO sync_fits;
        END IF;$profile$,
        a.profile,
        economy.render_additions(
            'p', a.profile_balance_column, a.profile_earnings_column,
            'sync_amount', 'sync_earned'
        ),
        a.profile_key_column,
        coalesce(economy.render_profile_fit(a), 'true')
    ) ELSE '' END;
$$;

-- The settings that hold, while a statement inserts into an attached ledger
-- that records balance_after, its wallets' running balances: a list
-- ',wallet:balance,…' per group of wallets (64), and the groups used, so that
-- the end of the statement empties just those. Transaction-local; any role can
-- change them, so the end of the statement checks every row against its
-- wallet, read under its lock (economy.render_sync_running).
CREATE FUNCTION economy.running_settings(a economy.attachments)
RETURNS TABLE (groups text, group_prefix text)
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT 'economy.running_' || a.name, 'economy.running_' || a.name || '_';
$$;

-- Template part: an INSERT's row, where the attachment records balance_after
-- (economy.insert_sync 'running'): it gets its wallet's running balance, and
-- is checked against the overdraft limit with it; nothing is written but the
-- row: the statement's rows are applied together at its end. A wallet's
-- first row of the statement locks it (folding a hot wallet's parked credits
-- first: a debit) and reads its balance. A credit to a hot wallet is left to
-- be parked at the end, with no balance_after (no place in the order).
CREATE FUNCTION economy.render_running_balance(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$IF sync_amount > 0 THEN
            PERFORM FROM economy.attached_hot_wallet h
            WHERE h.attachment = %1$L AND h.wallet_id = NEW.%2$I
            FOR KEY SHARE;
            IF FOUND THEN
                NEW.%3$I := NULL;
                RETURN NEW;
            END IF;
        END IF;
        sync_wallet := NEW.%2$I;
        sync_setting := %9$L || abs(sync_wallet %% 64);
        sync_list := coalesce(pg_catalog.current_setting(sync_setting, true), '');
        sync_seen := nullif(split_part(split_part(sync_list, ',' || sync_wallet || ':', 2), ',', 1), '');
        IF sync_seen IS NULL THEN
            IF sync_amount <= 0 AND EXISTS (  -- (a credit here was found not hot above)
                SELECT FROM economy.attached_hot_wallet h
                WHERE h.attachment = %1$L AND h.wallet_id = sync_wallet
            ) THEN
                PERFORM economy.%4$I(ARRAY[sync_wallet]);
            END IF;
            SELECT w.%6$I, %7$s INTO sync_balance, sync_limit
            FROM %5$s w
            WHERE w.%8$I = sync_wallet
            FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                NEW.%3$I := NULL;
                RETURN NEW;  -- no such wallet (yet): never applied, its foreign key decides
            END IF;
            IF position(',' || abs(sync_wallet %% 64) || ','
                IN coalesce(pg_catalog.current_setting(%10$L, true), '')) = 0 THEN
                PERFORM pg_catalog.set_config(%10$L, coalesce(nullif(
                    pg_catalog.current_setting(%10$L, true), ''), ',') || abs(sync_wallet %% 64) || ',',
                    true);
            END IF;
            sync_balance := sync_balance + sync_amount;
            sync_list := coalesce(nullif(sync_list, ''), ',') || sync_wallet || ':' || sync_balance || ',';
        ELSE
            sync_balance := sync_seen::numeric + sync_amount;
            %11$s
            sync_list := replace(sync_list, ',' || sync_wallet || ':' || sync_seen || ',',
                ',' || sync_wallet || ':' || sync_balance || ',');
        END IF;
        PERFORM pg_catalog.set_config(sync_setting, sync_list, true);
        %12$s
        NEW.%3$I := sync_balance;
        RETURN NEW;$template$,
    a.name,
    a.ledger_wallet_column,
    a.balance_after_column,
    economy.attached_object(a.name, 'fold'),
    a.wallet,
    a.wallet_balance_column,
    economy.render_limit(a),
    a.wallet_key_column,
    (economy.running_settings(a)).group_prefix,
    (economy.running_settings(a)).groups,
    CASE WHEN a.overdraft_limit IS NOT NULL THEN format(
        'sync_limit := (SELECT %s FROM %s w WHERE w.%I = sync_wallet);',
        economy.render_limit(a), a.wallet, a.wallet_key_column) ELSE '' END,
    economy.render_limit_check(a, 'sync_amount')
);
$render$;

-- Template: the ledger's statement trigger where the attachment records
-- balance_after (economy.insert_sync 'running'), for every INSERT: the row
-- trigger gave each row its wallet's running balance and locked its wallets;
-- here each row is checked against its wallet (its balance plus the
-- statement's amounts up to it, in the order the rows were written: a
-- setting changed meanwhile, or a row skipped by ON CONFLICT, is refused),
-- then each wallet is updated once with the sum of its rows, each owner's
-- profile once, and the credits left to park are parked, once per wallet. So
-- a wallet row is written at most twice, whatever the number of rows.
CREATE FUNCTION economy.render_sync_running(a economy.attachments)
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
    sync_refused record;
    sync_parked bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
    sync_wallet bigint;
    sync_owner bigint;
    sync_amount numeric;
    sync_after numeric;
    sync_earned numeric;
    sync_balance numeric;
    sync_limit numeric;
    sync_fits boolean;
BEGIN
    -- the statement's running balances are done with
    PERFORM pg_catalog.set_config(%3$L || g, '', true), pg_catalog.set_config(%2$L, '', true)
    FROM unnest(string_to_array(
        trim(BOTH ',' FROM pg_catalog.current_setting(%2$L, true)), ',')) g;
    -- one row that is not parked (most statements): its wallet updated and
    -- checked in one go, its owner's profile after it
    IF NOT EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
        SELECT s.%5$I, s.%7$I, s.%6$I, CASE WHEN coalesce((%17$s), false) THEN s.%7$I ELSE 0 END
        INTO sync_wallet, sync_amount, sync_after, sync_earned
        FROM sync_inserted s;
        IF NOT FOUND THEN
            RETURN NULL;
        ELSIF sync_after IS NOT NULL OR sync_amount <= 0 THEN
            UPDATE %8$s w SET %16$s
            WHERE w.%9$I = sync_wallet
            RETURNING (%13$s)::bigint, w.%11$I, %19$s INTO sync_owner, sync_balance, sync_limit;
            IF FOUND THEN
                IF sync_balance IS DISTINCT FROM sync_after THEN
                    RAISE EXCEPTION '%%: balance_after %% of wallet %% is not its running balance %%',
                        TG_TABLE_NAME, sync_after, sync_wallet, sync_balance
                        USING ERRCODE = 'check_violation',
                        HINT = 'a setting of economy-sync was changed during the statement';
                END IF;
                -- (checked by the row too; again here, on the row as it was written)
                IF sync_amount < 0 AND sync_balance < -sync_limit THEN
                    RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < -%%',
                        sync_wallet, sync_balance, sync_limit
                        USING ERRCODE = 'check_violation';
                END IF;
                %18$s
            END IF;
            RETURN NULL;
        END IF;
    END IF;
    -- the hot wallets of the credits left to park (KEY SHARE held since their rows)
    SELECT coalesce(array_agg(h.wallet_id), '{}') INTO sync_parked
    FROM economy.attached_hot_wallet h
    WHERE h.attachment = %4$L AND h.wallet_id IN (
        SELECT s.%5$I FROM sync_inserted s WHERE s.%6$I IS NULL AND s.%7$I > 0);
    -- held since their rows, unless a setting was changed meanwhile
    PERFORM FROM %8$s w
    WHERE w.%9$I IN (
        WITH %10$s
        SELECT n.sync_wallet_key FROM rows n WHERE NOT n.sync_parks)
    ORDER BY w.%9$I
    FOR NO KEY UPDATE;
    -- and every debit against the overdraft limit, on the rows as they were
    -- written (checked by each row too)
    WITH %10$s
    SELECT r.sync_wallet_key, r.sync_balance_after, r.running, r.overdraft INTO sync_refused
    FROM (
        SELECT n.sync_position, n.sync_wallet_key, n.sync_balance_after, n.sync_amount_value,
            w.%11$I + sum(n.sync_amount_value)
                OVER (PARTITION BY n.sync_wallet_key ORDER BY n.sync_position) AS running,
            %19$s AS overdraft
        FROM rows n
        JOIN %8$s w ON w.%9$I = n.sync_wallet_key
        WHERE NOT n.sync_parks
    ) r
    WHERE r.sync_balance_after IS DISTINCT FROM r.running
        OR (r.sync_amount_value < 0 AND r.running < -r.overdraft)
    ORDER BY r.sync_position
    LIMIT 1;
    IF FOUND AND sync_refused.sync_balance_after IS DISTINCT FROM sync_refused.running THEN
        RAISE EXCEPTION '%%: balance_after %% of wallet %% is not its running balance %%',
            TG_TABLE_NAME, sync_refused.sync_balance_after, sync_refused.sync_wallet_key,
            sync_refused.running
            USING ERRCODE = 'check_violation',
            HINT = 'the statement skipped a row (ON CONFLICT) of a wallet it wrote again, or'
                ' changed a setting of economy-sync: write such rows one statement each';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < -%%',
            sync_refused.sync_wallet_key, sync_refused.running, sync_refused.overdraft
            USING ERRCODE = 'check_violation';
    END IF;
    WITH %10$s,

    updated AS (
        UPDATE %8$s w SET %12$s
        FROM (
            SELECT n.sync_wallet_key, sum(n.sync_amount_value) AS amount,
                sum(n.sync_earned) AS earnings
            FROM rows n
            WHERE NOT n.sync_parks
            GROUP BY n.sync_wallet_key
        ) t
        WHERE w.%9$I = t.sync_wallet_key
        RETURNING (%13$s)::bigint AS owner_key, t.amount, t.earnings
    )

    SELECT array_agg(u.owner_key), array_agg(u.amount), array_agg(u.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM updated u;
    %14$s
    IF cardinality(sync_parked) > 0 THEN
        PERFORM economy.park_attached_credit(%4$L, t.sync_wallet_key, t.amount, t.earnings)
        FROM (
            WITH %10$s
            SELECT n.sync_wallet_key, sum(n.sync_amount_value) AS amount,
                sum(n.sync_earned) AS earnings
            FROM rows n
            WHERE n.sync_parks
            GROUP BY n.sync_wallet_key
        ) t;
        %15$s
    END IF;
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'sync_rows'),
    (economy.running_settings(a)).groups,
    (economy.running_settings(a)).group_prefix,
    a.name,
    a.ledger_wallet_column,
    a.balance_after_column,
    a.amount_column,
    a.wallet,
    a.wallet_key_column,
    -- the statement's rows, in the order they were written
    format($rows$rows AS (
        SELECT row_number() OVER () AS sync_position, s.%1$I AS sync_wallet_key,
            s.%2$I::numeric AS sync_amount_value, s.%3$I::numeric AS sync_balance_after,
            CASE WHEN coalesce((%4$s), false) THEN s.%2$I::numeric ELSE 0 END AS sync_earned,
            s.%3$I IS NULL AND s.%2$I > 0 AND s.%1$I IN (
                SELECT h.wallet_id FROM economy.attached_hot_wallet h WHERE h.attachment = %5$L
            ) AS sync_parks
        FROM sync_inserted s
    )$rows$, a.ledger_wallet_column, a.amount_column, a.balance_after_column, a.earning,
        a.name),
    a.wallet_balance_column,
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 't.amount', 't.earnings'
    ),
    economy.render_column('w', a.wallet_owner_column),
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)'),
    economy.render_parked_fit(a, 'sync_parked'),
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 'sync_amount', 'sync_earned'
    ),
    a.earning,
    economy.render_owner_update(a),
    economy.render_limit(a)
);
$render$;

-- The settings through which code run in a session decides what later code
-- there means: which function a name calls, whether function bodies are
-- checked, how PL/pgSQL reads a name.
CREATE OR REPLACE FUNCTION economy.session_settings()
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT concat_ws(' | ', current_setting('search_path'), current_setting('check_function_bodies'),
        current_setting('plpgsql.variable_conflict', true),
        -- and the session's temporary relations: they come first in name
        -- lookups of relations (a temporary view named pg_trigger would run
        -- its owner's code for whoever reads pg_trigger unqualified)
        (SELECT count(*) FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.pg_my_temp_schema()));
$$;

-- Raises unless the session's settings are still `before`. Called right after
-- a generated function ran (and, in it, code the app's tables' owner
-- supplies, as the attachment's sync role): a session-wide set_config or a
-- temporary relation made there would outlive it and steer what the caller
-- runs next (an installer's, an app login's). The error rolls the change
-- back with the statement.
CREATE OR REPLACE FUNCTION economy.refuse_changed_settings(before text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF economy.session_settings() IS DISTINCT FROM before THEN
        RAISE EXCEPTION 'economy-sync: code run for an attachment changed this session''s'
            ' settings (from % to %): refused', before, economy.session_settings()
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END;
$$;

-- Creates an attachment's sync role, the owner of its generated functions:
-- NOLOGIN, a member of no role, and granted exactly what those functions
-- need: to read the app's three tables and write their cached columns, to
-- keep its own rows of the parked credits (row level security), and
-- lock_rows. Whatever runs in those functions (the `earning` expression and
-- what it calls, the app owner's own triggers on its tables) runs with these
-- rights, never the installer's. The installer becomes its member, to give it
-- the functions and to replace or drop them later. A role of that name made
-- beforehand (the roles recipe, for an installer that may not create roles)
-- or left behind by this database is taken over when it is bare: NOLOGIN, a
-- member of nothing, owning and granted nothing in any database, and with no
-- member but the installer and superusers; any other is refused (a member,
-- even by ADMIN OPTION alone, could act as it, and on PostgreSQL 16+ a
-- non-superuser keeps ADMIN OPTION on every role it makes: who made it, for
-- whom, the catalog cannot tell). A role that owns functions in schema
-- economy is the attachment's own already (a reattach).
CREATE OR REPLACE FUNCTION economy.create_sync_role(a economy.attachments)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing pg_catalog.pg_roles;
    cached record;
BEGIN
    SELECT * INTO existing FROM pg_catalog.pg_roles r WHERE r.rolname = a.sync_role;
    IF NOT FOUND THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', a.sync_role);
    ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole
        OR existing.rolcreatedb OR existing.rolbypassrls OR existing.rolreplication
        OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m WHERE m.member = existing.oid)
        OR EXISTS (
            SELECT FROM pg_catalog.pg_auth_members m
            JOIN pg_catalog.pg_roles r ON r.oid = m.member
            WHERE m.roleid = existing.oid AND m.member <> current_user::regrole
                AND NOT r.rolsuper
        )
        OR (EXISTS (
                SELECT FROM pg_catalog.pg_shdepend d
                WHERE d.refclassid = 'pg_catalog.pg_authid'::regclass
                    AND d.refobjid = existing.oid)
            AND NOT EXISTS (
                SELECT FROM pg_catalog.pg_proc p
                WHERE p.proowner = existing.oid AND p.pronamespace = 'economy'::regnamespace))
    THEN
        RAISE EXCEPTION 'role % exists already and is not a bare sync role: drop it first',
            a.sync_role
            USING ERRCODE = 'duplicate_object';
    END IF;
    -- a membership granted already (by the recipe) is not granted again: that
    -- would need ADMIN OPTION on the role
    IF NOT pg_catalog.pg_has_role(current_user, a.sync_role, 'USAGE')
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE format('GRANT %I TO CURRENT_USER', a.sync_role);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA economy TO %I', a.sync_role);
    EXECUTE format('GRANT SELECT ON economy.attachments TO %I', a.sync_role);
    -- UPDATE: a credit holds its hot wallet's row FOR KEY SHARE
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON economy.attached_hot_wallet TO %I',
        a.sync_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON economy.attached_hot_credit TO %I',
        a.sync_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION economy.park_attached_credit(text, bigint, numeric,'
        ' numeric) TO %I', a.sync_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION economy.lock_rows(regclass, name, bigint[],'
        ' regclass, name, bigint[], text) TO %I', a.sync_role);
    EXECUTE format('GRANT SELECT ON %s TO %I', a.ledger, a.sync_role);
    FOR cached IN SELECT * FROM economy.cached_tables(a) LOOP
        EXECUTE format('GRANT SELECT, UPDATE (%s) ON %s TO %I',
            (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cached.cached) c),
            cached.tbl, a.sync_role);
    END LOOP;
END;
$$;

-- How an attachment's ledger INSERTs are synced: 'row or statement' (a
-- one-row INSERT by the row trigger, as cheap as ever, the rows of any other
-- together, once per wallet); 'running', where the attachment records
-- balance_after_column: a BEFORE row trigger gives each row its wallet's
-- running balance (each row needs its own, before it is written) and the
-- statement's rows are applied together at its end; or 'row', every row by
-- the row trigger, on a partitioned ledger (a row trigger there cannot see
-- the statement's rows, and a statement trigger of the parent misses rows
-- written into a partition or moved to another one by an UPDATE).
CREATE OR REPLACE FUNCTION economy.insert_sync(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE
        WHEN (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = a.ledger) = 'p' THEN 'row'
        WHEN a.balance_after_column IS NOT NULL THEN 'running'
        ELSE 'row or statement'
    END;
$$;

-- Template: the ledger's trigger. An INSERT adds its amount to its wallet,
-- then to the owner's profile (BEFORE the row is written when the
-- attachment records balance_after_column: the row gets the wallet's new
-- balance). An UPDATE or DELETE takes the old row's amount back and adds the
-- new row's (UPDATE): one side per wallet, the wallets updated in ascending
-- key order, then the owners' profiles; balance_after is history and is left
-- as it was. A credit to a hot wallet is parked instead; any other entry on
-- a hot wallet folds its parked credits first. Where the rows of an INSERT
-- may be synced together (economy.insert_sync), this trigger syncs a
-- one-row INSERT and leaves the rows of any other to sync_rows (below):
-- both see the statement's rows (its transition table), so each row is
-- applied once, by one of them, whatever any setting says.
CREATE OR REPLACE FUNCTION economy.render_sync(a economy.attachments)
RETURNS text
LANGUAGE sql
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
    sync_amount numeric;
    sync_earned numeric;
    sync_owner bigint;
    sync_wallet bigint;
    sync_balance numeric;
    sync_limit numeric;
    sync_fits boolean;
    sync_wallets bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
    sync_owners bigint[];%26$s
BEGIN
    %19$s
    IF TG_OP <> 'DELETE' THEN
        sync_amount := NEW.%4$I;
        IF %2$s THEN
            RAISE EXCEPTION '%%: amount %% cannot be cached exactly', TG_TABLE_NAME, sync_amount
                USING ERRCODE = 'check_violation';
        END IF;
        sync_earned := CASE WHEN %3$s THEN sync_amount ELSE 0 END;
    END IF;
    IF TG_OP = 'INSERT' THEN%25$s
        IF sync_amount > 0 THEN
            -- a credit to a hot wallet is parked: no shared row written
            IF economy.park_attached_credit(%16$L, NEW.%8$I, sync_amount, sync_earned) THEN
                %20$s
                %18$s
            END IF;
        ELSIF EXISTS (
            SELECT FROM economy.attached_hot_wallet h
            WHERE h.attachment = %16$L AND h.wallet_id = NEW.%8$I
        ) THEN
            PERFORM economy.%17$I(ARRAY[NEW.%8$I::bigint]);  -- the balance is exact after it
        END IF;
        UPDATE %5$s w SET %6$s
        WHERE w.%7$I = NEW.%8$I
        RETURNING %9$s, w.%7$I, w.%14$I, %21$s
        INTO sync_owner, sync_wallet, sync_balance, sync_limit;
        %22$s
        %10$s
        %15$s
    END IF;

    sync_wallets := ARRAY[OLD.%8$I];
    sync_amounts := ARRAY[-OLD.%4$I];
    sync_earnings := ARRAY[CASE WHEN %11$s THEN -OLD.%4$I ELSE 0 END];
    IF TG_OP = 'UPDATE' THEN
        IF NEW.%8$I = OLD.%8$I THEN
            sync_amounts[1] := sync_amounts[1] + sync_amount;
            sync_earnings[1] := sync_earnings[1] + sync_earned;
        ELSIF NEW.%8$I > OLD.%8$I THEN
            sync_wallets := sync_wallets || NEW.%8$I;
            sync_amounts := sync_amounts || sync_amount;
            sync_earnings := sync_earnings || sync_earned;
        ELSE
            sync_wallets := NEW.%8$I || sync_wallets;
            sync_amounts := sync_amount || sync_amounts;
            sync_earnings := sync_earned || sync_earnings;
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(sync_wallets) LOOP
        sync_owner := NULL;
        IF sync_amounts[i] <> 0 OR sync_earnings[i] <> 0 THEN
            UPDATE %5$s w SET %12$s
            WHERE w.%7$I = sync_wallets[i]
            RETURNING %9$s, w.%7$I, w.%14$I, %21$s, %24$s
            INTO sync_owner, sync_wallet, sync_balance, sync_limit, sync_fits;
            %23$s
        END IF;
        sync_owners := sync_owners || sync_owner;
    END LOOP;
    %13$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'sync'),
    economy.render_inexact(a, 'sync_amount'),
    economy.render_earning(a, 'NEW'),
    a.amount_column,
    a.wallet,
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 'sync_amount', 'sync_earned'
    ),
    a.wallet_key_column,
    a.ledger_wallet_column,
    economy.render_column('w', a.wallet_owner_column),
    economy.render_owner_update(a),
    economy.render_earning(a, 'OLD'),
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
    CASE WHEN economy.insert_sync(a) = 'row or statement' THEN $statement$
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
            RETURN NULL;  -- one of several rows: applied together (sync_rows)
        END IF;
    END IF;$statement$ ELSE '' END,
    economy.render_parked_fit(a, format('ARRAY[NEW.%I::bigint]', a.ledger_wallet_column)),
    economy.render_limit(a),
    economy.render_limit_check(a, 'sync_amount'),
    economy.render_limit_check(a, 'sync_amounts[i]'),
    coalesce(economy.render_wallet_fit(a), 'true'),
    CASE WHEN economy.insert_sync(a) = 'running'
        THEN E'\n        ' || economy.render_running_balance(a) ELSE '' END,
    CASE WHEN economy.insert_sync(a) = 'running'
        THEN E'\n    sync_setting text;\n    sync_list text;\n    sync_seen text;' ELSE '' END
);
$render$;

-- Template: the guard of a table's cached columns (the wallet's or the
-- profile's), run for every write that is not the sync role's. An UPDATE
-- that would change a cached column keeps it as it is, the rest of the row
-- saved (guard 'keep': a stale full-row save of an ORM), or is refused
-- (guard 'refuse'). An INSERT gets the figures its ledger gives the new row
-- (zero for a wallet without entries) or, under 'refuse', is refused when it
-- names others.
CREATE OR REPLACE FUNCTION economy.render_guard(a economy.attachments, tbl regclass)
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
    sync_balance numeric;
    sync_earnings numeric;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        %2$s
        RETURN NEW;
    END IF;
    -- the ledger's figures for the new row
    SELECT coalesce(sum(r.%3$I), 0), coalesce(sum(r.%3$I) FILTER (WHERE %4$s), 0)
    INTO sync_balance, sync_earnings
    FROM %5$s AS r
    WHERE %6$s;
    %7$s
    RETURN NEW;
END;
$fn$
$template$,
    k.guard,
    CASE WHEN a.guard = 'keep'
        THEN (SELECT string_agg(format('NEW.%1$I := OLD.%1$I;', c), E'\n        ')
            FROM unnest(k.cached) c)
        ELSE format('RAISE EXCEPTION ''%%: %% belong to economy-sync: write them through the'
            ' ledger; drift is repaired by a reconcile (economy.reconcile_economy(dry_run =>'
            ' false, attachment => ''''%%''''), manage.py reconcile_economy --apply)'','
            ' TG_TABLE_NAME, %L, %L USING ERRCODE = ''check_violation'';',
            array_to_string(k.cached, ', '), a.name)
    END,
    a.amount_column,
    a.earning,
    a.ledger,
    CASE WHEN tbl = a.wallet
        THEN format('r.%I = NEW.%I', a.ledger_wallet_column, a.wallet_key_column)
        ELSE format('r.%I IN (SELECT w.%I FROM %s w WHERE w.%I = NEW.%I)',
            a.ledger_wallet_column, a.wallet_key_column, a.wallet, a.wallet_owner_column,
            a.profile_key_column)
    END,
    CASE WHEN a.guard = 'keep'
        THEN concat_ws(E'\n    ',
            economy.render_set('NEW.%1$I := sync_balance;', k.balance_column),
            economy.render_set('NEW.%1$I := sync_earnings;', k.earnings_column))
        ELSE format(
            'IF %s THEN' || E'\n        '
            || 'RAISE EXCEPTION ''%%: a new row''''s %% must be its ledger''''s figures'','
            ' TG_TABLE_NAME, %L USING ERRCODE = ''check_violation'';' || E'\n    END IF;',
            concat_ws(' OR ',
                economy.render_set('NEW.%1$I IS DISTINCT FROM sync_balance', k.balance_column),
                economy.render_set('NEW.%1$I IS DISTINCT FROM sync_earnings', k.earnings_column)),
            array_to_string(k.cached, ', '))
    END
)
FROM economy.cached_tables(a) k
WHERE k.tbl = render_guard.tbl;
$render$;

-- A generated function's text with its first checks: it runs only as the
-- attachment's sync role, its owner (its owner is the only role that could
-- make it SECURITY INVOKER; then it refuses to run, rather than run as a
-- caller such as the installer), and, for a trigger function, only as a
-- trigger of `trigger_table` (not of a table of someone else's choosing).
CREATE OR REPLACE FUNCTION economy.run_only_as(
    function_text text, sync_role name, trigger_table regclass DEFAULT NULL
)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    -- its operators named in full: code running as the sync role may alter
    -- the function (SECURITY INVOKER, a search_path with operators of its own)
    SELECT regexp_replace(function_text, E'\nBEGIN\n', format(
        E'\nBEGIN\n    IF CURRENT_USER OPERATOR(pg_catalog.<>) %1$L%3$s THEN\n'
        '        RAISE EXCEPTION %2$L\n'
        '            USING ERRCODE = ''insufficient_privilege'';\n    END IF;\n',
        sync_role,
        'economy-sync: this function runs only as its owner, ' || sync_role
        || coalesce(', for a trigger on ' || trigger_table::text, ''),
        -- (a row trigger on a partitioned table fires with its partition's oid)
        CASE WHEN trigger_table IS NOT NULL THEN format(
            ' OR (TG_RELID OPERATOR(pg_catalog.<>) %1$s::regclass AND NOT EXISTS (SELECT FROM'
            ' pg_catalog.pg_partition_tree(%1$s::regclass) t'
            ' WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID))',
            trigger_table::oid) ELSE '' END));
$$;

-- The triggers an attachment puts on the app's tables, the one list of them
-- (read by create_attached_functions, detach, attachment_sql and doctor):
-- name, table and definition.
CREATE OR REPLACE FUNCTION economy.attached_triggers(a economy.attachments)
RETURNS TABLE (trigger_name name, tbl regclass, definition text)
LANGUAGE sql
STABLE
AS $$
    SELECT t.trigger_name, t.tbl, format(
        'CREATE OR REPLACE TRIGGER %I %s ON %s %s EXECUTE FUNCTION economy.%s',
        t.trigger_name, t.event, t.tbl, t.rest, t.call)
    FROM (
        VALUES
        -- BEFORE when it records balance_after: the row is written with it;
        -- else AFTER, seeing whether the statement has other rows
        ('economy_' || a.name || '_sync', a.ledger,
            CASE WHEN a.balance_after_column IS NULL THEN 'AFTER' ELSE 'BEFORE' END || ' INSERT',
            CASE economy.insert_sync(a)
                WHEN 'row or statement' THEN 'REFERENCING NEW TABLE AS sync_inserted FOR EACH ROW'
                ELSE 'FOR EACH ROW'
            END, quote_ident(economy.attached_object(a.name, 'sync')) || '()'),
        ('economy_' || a.name || '_sync_delete', a.ledger, 'AFTER DELETE', 'FOR EACH ROW',
            quote_ident(economy.attached_object(a.name, 'sync')) || '()'),
        ('economy_' || a.name || '_sync_update', a.ledger, 'AFTER UPDATE',
            'FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)',
            quote_ident(economy.attached_object(a.name, 'sync')) || '()'),
        -- AFTER: it sees whether the same statement emptied the wallet table
        ('economy_' || a.name || '_refuse_truncate', a.ledger, 'AFTER TRUNCATE',
            'FOR EACH STATEMENT', quote_ident(economy.attached_object(a.name, 'truncate')) || '()')
    ) AS t (trigger_name, tbl, event, rest, call)
    UNION ALL
    -- inserts of several rows (recording balance_after: of every insert)
    SELECT 'economy_' || a.name || '_sync_rows', a.ledger, format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS sync_inserted'
        ' FOR EACH STATEMENT EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync_rows', a.ledger,
        economy.attached_object(a.name, 'sync_rows'))
    WHERE economy.insert_sync(a) IN ('row or statement', 'running')
    UNION ALL
    -- guards of the cached columns: only the sync role writes them (no
    -- setting, no trigger depth: nothing another role can arrange opens them)
    SELECT 'economy_' || a.name || '_keep_cached', k.tbl, format(
        'CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW'
        ' WHEN (CURRENT_USER <> %L AND (%s))'
        ' EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_keep_cached', k.tbl, a.sync_role,
        (SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
            FROM unnest(k.cached) c),
        k.guard)
    FROM economy.cached_tables(a) k
    UNION ALL
    -- a new row's cached figures are the ledger's
    SELECT 'economy_' || a.name || '_new_cached', k.tbl, format(
        'CREATE OR REPLACE TRIGGER %I BEFORE INSERT ON %s FOR EACH ROW'
        ' WHEN (CURRENT_USER <> %L) EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_new_cached', k.tbl, a.sync_role, k.guard)
    FROM economy.cached_tables(a) k
    UNION ALL
    SELECT 'economy_' || a.name || '_move', a.wallet, format(
        'CREATE OR REPLACE TRIGGER %1$I AFTER UPDATE OF %2$I ON %3$s FOR EACH ROW'
        ' WHEN (OLD.%2$I IS DISTINCT FROM NEW.%2$I) EXECUTE FUNCTION economy.%4$I()',
        'economy_' || a.name || '_move', a.wallet_owner_column, a.wallet,
        economy.attached_object(a.name, 'move'))
    WHERE a.profile IS NOT NULL;
$$;

-- Creates (or, after an upgrade of the templates or a change of the app's
-- tables, replaces) an attachment's sync role, functions, their grants and
-- its triggers: as for the package's own functions, the app reads drift and
-- balances, the operator reconciles and manages hot wallets (through
-- balance_drift, wallet_balance, reconcile_economy, set_hot and
-- fold_hot_wallets). Every function is given to the sync role, which may
-- create in schema economy only for that moment (a new owner must).
CREATE OR REPLACE FUNCTION economy.create_attached_functions(a economy.attachments)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- what it creates is checked as it is created, whatever the session says
SET check_function_bodies = on
AS $$
DECLARE
    generated record;
BEGIN
    PERFORM economy.create_sync_role(a);
    -- its arguments may change (a reattach)
    FOR generated IN
        SELECT f.signature FROM economy.attached_functions(a.name) f
        WHERE f.function_name = economy.attached_object(a.name, 'earns') AND f.signature IS NOT NULL
    LOOP
        EXECUTE format('DROP FUNCTION %s', generated.signature);
    END LOOP;
    EXECUTE economy.render_earning_function(a);
    -- each with the table it may be a trigger of (NULL: no trigger function)
    FOR generated IN
        SELECT d.definition, d.tbl
        FROM (
            VALUES
            (economy.render_fold(a), NULL::regclass),
            (economy.render_drift(a), NULL),
            (economy.render_reconcile(a), NULL),
            (economy.render_set_hot(a), NULL),
            (economy.render_balance(a), NULL),
            (economy.render_wallet(a), NULL),
            (economy.render_owners(a), NULL),
            (economy.render_balance_at(a), NULL),
            (economy.render_sync(a), a.ledger),
            (economy.render_truncate(a), a.ledger),
            (CASE economy.insert_sync(a)
                WHEN 'row or statement' THEN economy.render_sync_rows(a)
                WHEN 'running' THEN economy.render_sync_running(a) END, a.ledger),
            (CASE WHEN a.profile IS NOT NULL THEN economy.render_move(a) END, a.wallet),
            (economy.render_guard(a, a.wallet), a.wallet),
            (economy.render_guard(a, a.profile), a.profile)
        ) AS d (definition, tbl)
        WHERE d.definition IS NOT NULL
    LOOP
        EXECUTE economy.run_only_as(generated.definition, a.sync_role, generated.tbl);
    END LOOP;
    -- no one else may call them, or make them a trigger of another table
    -- (grants made since by their owner are taken back too)
    FOR generated IN
        SELECT f.signature, f.granted_to, x.grantee::regrole::text AS other
        FROM economy.attached_functions(a.name) f
        JOIN pg_catalog.pg_proc p ON p.oid = to_regprocedure(f.signature)
        CROSS JOIN LATERAL aclexplode(p.proacl) x
        WHERE x.grantee NOT IN (0, p.proowner)
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', generated.signature, generated.other);
    END LOOP;
    FOR generated IN
        SELECT f.signature, f.granted_to FROM economy.attached_functions(a.name) f
        WHERE to_regprocedure(f.signature) IS NOT NULL
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', generated.signature);
        IF generated.granted_to IS NOT NULL THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I',
                generated.signature, generated.granted_to);
        END IF;
    END LOOP;
    EXECUTE format('GRANT CREATE ON SCHEMA economy TO %I', a.sync_role);
    FOR generated IN
        SELECT f.signature FROM economy.attached_functions(a.name) f
        WHERE to_regprocedure(f.signature) IS NOT NULL
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', generated.signature, a.sync_role);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON SCHEMA economy FROM %I', a.sync_role);
    FOR generated IN SELECT * FROM economy.attached_triggers(a) LOOP
        EXECUTE generated.definition;
    END LOOP;
END;
$$;

-- Removes everything attach() created; the app's tables and data stay.
CREATE OR REPLACE FUNCTION economy.detach(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text := economy.session_settings();
    a economy.attachments := economy.attachment(detach.name);
    generated record;
BEGIN
    IF economy.own_tables(a.name) THEN
        RAISE EXCEPTION 'the package''s own tables cannot be detached: alembic downgrade base'
            ' removes the package'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the caches are left exact: credits in flight are waited for (their
    -- KEY SHARE on the hot wallets' rows), then every parked credit folded
    DELETE FROM economy.attached_hot_wallet h WHERE h.attachment = a.name;
    EXECUTE format('SELECT economy.%I(NULL)', economy.attached_object(a.name, 'fold'));
    PERFORM economy.refuse_changed_settings(settings);
    -- what is left was parked for wallets that no longer exist: not carried to
    -- an attachment made again under this name
    DELETE FROM economy.attached_hot_credit c WHERE c.attachment = a.name;
    FOR generated IN SELECT * FROM economy.attached_triggers(a) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', generated.trigger_name, generated.tbl);
    END LOOP;
    FOR generated IN
        SELECT * FROM economy.attached_functions(a.name) f WHERE f.signature IS NOT NULL
    LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s', generated.signature);
    END LOOP;
    -- its grants here, then the role: kept when the installer may not drop
    -- roles (an administrator made it; attach takes it over again, bare)
    EXECUTE format('DROP OWNED BY %I', a.sync_role);
    BEGIN
        EXECUTE format('DROP ROLE %I', a.sync_role);
    EXCEPTION
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'role % kept: % may not drop it (an administrator may)',
                a.sync_role, current_user;
        -- granted something in another database (DROP OWNED cleans this one):
        -- no attach takes such a role over
        WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % kept: another database grants it something (%)',
                a.sync_role, SQLERRM;
    END;
    DELETE FROM economy.attachments x WHERE x.name = a.name;
END;
$$;

REVOKE ALL ON FUNCTION economy.render_owner_update(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.running_settings(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_running_balance(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_sync_running(economy.attachments) FROM PUBLIC;

-- every attachment's code regenerated (a refused write of a cached column
-- names the repair)
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
