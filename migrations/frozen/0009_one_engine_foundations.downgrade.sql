-- 0009_one_engine_foundations: back to 0008: the package's own tables are no row of
-- economy.attachments; attachments regenerated from 0008's templates.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0008_attached_statement_sync)';

DELETE FROM economy.attachments WHERE name = 'economy';

-- the generated functions back to the role that downgrades, the sync roles
-- dropped, the functions 0008 does not have dropped
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x ORDER BY x.name LOOP
        EXECUTE format('REASSIGN OWNED BY %I TO CURRENT_USER', a.sync_role);
        EXECUTE format('DROP OWNED BY %I', a.sync_role);
        EXECUTE format('DROP ROLE %I', a.sync_role);
    END LOOP;
END;
$$;

DROP POLICY own_attachment ON economy.attached_hot_wallet;
DROP POLICY own_attachment ON economy.attached_hot_credit;
DROP POLICY package_roles_read ON economy.attached_hot_wallet;
DROP POLICY package_roles_read ON economy.attached_hot_credit;
ALTER TABLE economy.attached_hot_wallet DISABLE ROW LEVEL SECURITY;
ALTER TABLE economy.attached_hot_credit DISABLE ROW LEVEL SECURITY;
ALTER TABLE economy.attached_hot_wallet DROP COLUMN sync_role;
ALTER TABLE economy.attached_hot_credit DROP COLUMN sync_role;

-- Refuses an `earning` text that is not one boolean expression over the
-- ledger's columns. Outside its string literals and quoted names it may hold
-- no statement separator, comment, dollar quote or backslash, and its
-- parentheses must balance: wrapped in parentheses it is then one expression
-- and nothing more. Preparing a SELECT filtered by it checks its names and
-- type; nothing is run.
CREATE FUNCTION economy.check_earning(ledger regclass, earning text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    bare text := regexp_replace(earning, '''[^'']*''|"[^"]*"', '', 'g');
    depth integer := 0;
    ch text;
BEGIN
    IF earning IS NULL OR btrim(earning) = ''
        OR bare ~ '[;$\\]' OR bare LIKE '%--%' OR bare LIKE '%/*%' THEN
        RAISE EXCEPTION 'earning must be one boolean expression over the ledger''s columns: %',
            earning
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH ch IN ARRAY regexp_split_to_array(bare, '') LOOP
        depth := depth + CASE ch WHEN '(' THEN 1 WHEN ')' THEN -1 ELSE 0 END;
        EXIT WHEN depth < 0;
    END LOOP;
    IF depth <> 0 THEN
        RAISE EXCEPTION 'earning has unbalanced parentheses: %', earning
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        -- WHERE takes a boolean only (not merely one castable to it)
        EXECUTE format('PREPARE economy_check_earning AS SELECT FROM %s WHERE (%s)',
            ledger, earning);
        DEALLOCATE economy_check_earning;
    EXCEPTION
        WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
            OR ambiguous_column OR undefined_table THEN
            RAISE EXCEPTION 'earning is not a boolean expression over %: % (%)',
                ledger, earning, SQLERRM
                USING ERRCODE = 'invalid_parameter_value';
    END;
END;
$$;

REVOKE ALL ON FUNCTION economy.check_earning(regclass, text) FROM PUBLIC;

-- Trigger function: an attached ledger is never emptied behind the caches.
CREATE FUNCTION economy.refuse_attached_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of %.% refused: economy-sync keeps caches of it; DELETE instead',
        TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

REVOKE ALL ON FUNCTION economy.refuse_attached_truncate() FROM PUBLIC;

-- Template: a guard that keeps a table's cached columns as they are on an
-- ordinary UPDATE (the rest of the row is saved).
CREATE FUNCTION economy.render_keep(function_name name, cached name[])
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

REVOKE ALL ON FUNCTION economy.render_keep(name, name[]) FROM PUBLIC;

-- Template part: the ledger row's columns as variables of the trigger, so
-- that the `earning` expression reads them by name, as plain PL/pgSQL (no
-- query per row). `declare` gives the declarations, else the assignments
-- from `source` (OLD or NEW).
CREATE FUNCTION economy.render_row_variables(ledger regclass, source text, declare boolean)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT string_agg(
        CASE WHEN declare
            THEN format('%I %s;', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
            ELSE format('%1$I := %2$s.%1$I;', a.attname, source)
        END,
        E'\n    ' ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = ledger AND a.attnum > 0 AND NOT a.attisdropped;
$$;

REVOKE ALL ON FUNCTION economy.render_row_variables(regclass, text, boolean) FROM PUBLIC;

DROP FUNCTION economy.cached_tables(economy.attachments);
DROP FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name, text, text, name);
DROP FUNCTION economy.balance_at(bigint, timestamptz, text);
DROP FUNCTION economy.bounded_drift(bigint[], integer, text);

-- Attaches the sync, drift and reconcile to an application's tables (see
-- the top of this file). Changes no cache: existing drift shows in drift
-- checks. All or nothing: a bad argument creates nothing.
CREATE FUNCTION economy.attach(
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

REVOKE ALL ON FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name) FROM PUBLIC;

-- The sum of the wallet's entries created at or before `at`, read from the
-- index on (wallet_id, created_at) alone. NULL for an unknown wallet.
CREATE FUNCTION economy.balance_at(wallet_id bigint, at timestamptz)
RETURNS numeric
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM economy.wallet w WHERE w.id = balance_at.wallet_id)
        THEN (
            SELECT coalesce(sum(t.amount), 0.00)
            FROM economy.transaction t
            WHERE t.wallet_id = balance_at.wallet_id AND t.created_at <= balance_at.at
        )
    END;
$$;

REVOKE ALL ON FUNCTION economy.balance_at(bigint, timestamptz) FROM PUBLIC;

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

REVOKE ALL ON FUNCTION economy.bounded_drift(bigint[], integer) FROM PUBLIC;

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

REVOKE ALL ON FUNCTION economy.cached_tables(economy.attachments) FROM PUBLIC;

-- Refuses a column that is missing or whose type is not one of `types`.
CREATE OR REPLACE FUNCTION economy.check_column(tbl regclass, col name, purpose text, types regtype[])
RETURNS regtype
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    found_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO found_type
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: table % has no column %', purpose, tbl, col
            USING ERRCODE = 'undefined_column';
    END IF;
    IF NOT found_type = ANY (types) THEN
        RAISE EXCEPTION '%: %.% is %, not one of %', purpose, tbl, col, found_type, types
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    RETURN found_type;
END;
$$;

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

-- Folds the parked credits of every wallet that has some into its cached
-- figures (for a scheduler; a real reconcile does it too). Returns how many
-- wallets were folded. Their rows are locked first, in id order. With an
-- attachment: that attachment's hot wallets.
CREATE OR REPLACE FUNCTION economy.fold_hot_wallets(attachment text DEFAULT NULL)
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

-- The hold, locked after its wallet (the writers' lock order), when it is
-- still 'held' (and, for a capture, not past its expiry).
CREATE OR REPLACE FUNCTION economy.lock_held(hold_id bigint, for_capture boolean)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
AS $$
DECLARE
    locked economy.wallet_hold;
BEGIN
    PERFORM FROM economy.wallet w
    WHERE w.id = (SELECT h.wallet_id FROM economy.wallet_hold h WHERE h.id = hold_id)
    FOR NO KEY UPDATE;
    SELECT * INTO locked FROM economy.wallet_hold h WHERE h.id = hold_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % does not exist', hold_id USING ERRCODE = 'no_data_found';
    END IF;
    IF locked.status <> 'held' THEN
        RAISE EXCEPTION 'hold % is %', hold_id, locked.status USING ERRCODE = 'check_violation';
    END IF;
    IF for_capture AND locked.expires_at <= now() THEN
        RAISE EXCEPTION 'hold % expired at %', hold_id, locked.expires_at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN locked;
END;
$$;

-- The owners whose caches a reconcile walks, in key order after `after`, at
-- most `batch_size` of them (all when NULL): the package's users, or an
-- attachment's profiles (its wallets' distinct owners when it has none).
-- Ownerless wallets are named by a NULL in user_ids, not listed here.
CREATE OR REPLACE FUNCTION economy.owner_keys(
    attachment text DEFAULT NULL, after bigint DEFAULT NULL, batch_size integer DEFAULT NULL
)
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    a economy.attachments;
BEGIN
    IF attachment IS NULL THEN
        RETURN QUERY
        SELECT p.user_id FROM economy.profile p
        WHERE after IS NULL OR p.user_id > after
        ORDER BY p.user_id
        LIMIT batch_size;
        RETURN;
    END IF;
    a := economy.attachment(attachment);
    IF a.wallet_owner_column IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT t.%1$I::bigint FROM %2$s t'
        ' WHERE t.%1$I IS NOT NULL AND ($1 IS NULL OR t.%1$I > $1) ORDER BY 1 LIMIT $2',
        coalesce(a.profile_key_column, a.wallet_owner_column), coalesce(a.profile, a.wallet))
    USING after, batch_size;
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

-- Template: wallet_balance(…, attachment => N): the cached balance plus the
-- parked credits, in one snapshot.
CREATE OR REPLACE FUNCTION economy.render_balance(a economy.attachments)
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

-- Template: folds the parked credits of the given hot wallets (all when
-- NULL) into the cached columns; returns how many wallets it folded. Their
-- rows are locked first, in ascending key order; a credit still in flight is
-- not seen and stays parked.
CREATE OR REPLACE FUNCTION economy.render_fold(a economy.attachments)
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

-- Template: the ledger's statement trigger, for an INSERT made with
-- `SET LOCAL economy.sync = 'statement'` (a multi-row INSERT or a COPY):
-- its wallets locked in ascending key order, each updated once with the sum
-- of its rows, then each owner's profile once. As row by row, a hot wallet
-- that only gets credits has them parked (one parked row per wallet, no
-- shared row written); one that also gets a debit is folded under its lock
-- first. Not made for an attachment that records balance_after_column: each
-- row needs its own balance there, so its rows are synced one by one
-- whatever the setting.
CREATE OR REPLACE FUNCTION economy.render_sync_rows(a economy.attachments)
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

-- Marks a wallet hot, or back to normal: then it first waits for the credits
-- in flight (FOR UPDATE conflicts with the KEY SHARE lock each of them holds)
-- and folds them. With an attachment: that attachment's generated set_hot.
CREATE OR REPLACE FUNCTION economy.set_hot(
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

-- The wallet's exact balance after every commit, hot or not: the cached
-- balance plus its parked credits. NULL for an unknown wallet. With an
-- attachment: that attachment's generated balance function (35_attach.sql).
CREATE OR REPLACE FUNCTION economy.wallet_balance(wallet_id bigint, attachment text DEFAULT NULL)
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

-- The owner key of a wallet (NULL for an ownerless one); an unknown wallet
-- is an error.
CREATE OR REPLACE FUNCTION economy.wallet_owner(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    a economy.attachments;
    owner_key bigint;
    found_rows bigint;
BEGIN
    IF attachment IS NULL THEN
        SELECT w.user_id INTO owner_key FROM economy.wallet w WHERE w.id = wallet_owner.wallet_id;
    ELSE
        a := economy.attachment(attachment);
        EXECUTE format('SELECT %s FROM %s w WHERE w.%I = $1',
            economy.render_column('w', a.wallet_owner_column), a.wallet, a.wallet_key_column)
        INTO owner_key
        USING wallet_owner.wallet_id;
    END IF;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_owner.wallet_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN owner_key;
END;
$$;

GRANT EXECUTE ON FUNCTION economy.balance_at(bigint, timestamptz) TO economy_app;

REVOKE ALL ON FUNCTION economy.reconcile_economy(boolean, bigint[], integer, uuid, text)
FROM economy_app;
GRANT EXECUTE ON FUNCTION economy.reconcile_economy(boolean, bigint[], integer, uuid, text)
TO economy_operator;

DROP FUNCTION economy.drift_summary();
DROP FUNCTION economy.attachment_sql(text);
DROP FUNCTION economy.reattach(text, text);
DROP FUNCTION economy.check_attachment(economy.attachments);
DROP FUNCTION economy.create_sync_role(economy.attachments);
DROP FUNCTION economy.mapped_columns(economy.attachments);
DROP FUNCTION economy.attached_triggers(economy.attachments);
DROP FUNCTION economy.attached_functions(text);
DROP FUNCTION economy.run_only_as(text, name, regclass);
DROP FUNCTION economy.render_balance_at(economy.attachments);
DROP FUNCTION economy.render_owners(economy.attachments);
DROP FUNCTION economy.render_wallet(economy.attachments);
DROP FUNCTION economy.render_truncate(economy.attachments);
DROP FUNCTION economy.render_parked_fit(economy.attachments, text);
DROP FUNCTION economy.render_inexact(economy.attachments, text);
DROP FUNCTION economy.render_earning(economy.attachments, text);
DROP FUNCTION economy.render_guard(economy.attachments, regclass);
DROP FUNCTION economy.render_earning_function(economy.attachments);
DROP FUNCTION economy.earning_columns(economy.attachments);
DROP FUNCTION economy.render_limit_check(economy.attachments, text);
DROP FUNCTION economy.render_limit(economy.attachments);
DROP FUNCTION economy.repair_economy(bigint[], integer, uuid, text);
DROP FUNCTION economy.sync_role_name(text);
DROP FUNCTION economy.lock_rows(regclass, name, bigint[], regclass, name, bigint[], text);
DROP FUNCTION economy.refuse_changed_settings(text);
DROP FUNCTION economy.session_settings();
DROP FUNCTION economy.check_expression(regclass, text, text, text);
DROP FUNCTION economy.column_type(regclass, name);
DROP FUNCTION economy.own_tables(text);

ALTER TABLE economy.attachments DROP COLUMN column_numbers;
ALTER TABLE economy.attachments DROP COLUMN sync_role;
ALTER TABLE economy.attachments DROP COLUMN guard;
ALTER TABLE economy.attachments DROP COLUMN overdraft_limit;
ALTER TABLE economy.attachments DROP COLUMN created_at_column;
REVOKE ALL ON FUNCTION economy.cached_tables(economy.attachments) FROM economy_app;

-- every attachment regenerated from 0008's templates; its truncate trigger
-- fires BEFORE again
DO $$
DECLARE
    a economy.attachments;
    kept record;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x ORDER BY x.name LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', 'economy_' || a.name || '_refuse_truncate', a.ledger);
        FOR kept IN SELECT * FROM economy.cached_tables(a) LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', 'economy_' || a.name || '_new_cached', kept.tbl);
        END LOOP;
        PERFORM economy.create_attached_functions(a);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION economy.refuse_attached_truncate()',
            'economy_' || a.name || '_refuse_truncate', a.ledger);
        -- the guards as 0008 made them
        FOR kept IN SELECT * FROM economy.cached_tables(a) LOOP
            EXECUTE format(
                'CREATE OR REPLACE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW'
                ' WHEN (pg_catalog.pg_trigger_depth() < 1'
                ' AND pg_catalog.current_setting(''economy.repairing'', true)'
                ' IS DISTINCT FROM ''on'' AND (%s))'
                ' EXECUTE FUNCTION economy.%I()',
                'economy_' || a.name || '_keep_cached', kept.tbl,
                (SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
                    FROM unnest(kept.cached) c),
                kept.guard);
        END LOOP;
        -- the functions 0008 does not make
        FOR kept IN
            SELECT p.oid::regprocedure AS signature FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'economy'::regnamespace AND p.proname IN (
                economy.attached_object(a.name, 'truncate'), economy.attached_object(a.name, 'wallet'),
                economy.attached_object(a.name, 'owners'), economy.attached_object(a.name, 'earns'),
                economy.attached_object(a.name, 'balance_at'),
                economy.attached_object(a.name, 'guard_wallet'),
                economy.attached_object(a.name, 'guard_profile'))
        LOOP
            EXECUTE format('DROP FUNCTION %s', kept.signature);
        END LOOP;
    END LOOP;
END;
$$;
