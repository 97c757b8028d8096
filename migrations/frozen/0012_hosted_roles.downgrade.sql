-- 0012_hosted_roles: back to 0011_parked_running_sums.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0011_parked_running_sums)';

-- Creates an attachment's sync role, the owner of its generated functions:
-- NOLOGIN, a member of no role, and granted exactly what those functions
-- need: to read the app's three tables and write their cached columns, to
-- keep its own rows of the parked credits (row level security), and
-- lock_rows. Whatever runs in those functions (the `earning` expression and
-- what it calls, the app owner's own triggers on its tables) runs with these
-- rights, never the installer's. The installer becomes its only member, to
-- give it the functions and to replace or drop them later. A role of that
-- name left behind by this database (NOLOGIN, no other member, no
-- membership) is taken over; any other is refused.
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
            WHERE m.roleid = existing.oid AND m.member <> current_user::regrole
        ) THEN
        RAISE EXCEPTION 'role % exists already and is not a bare sync role: drop it first',
            a.sync_role
            USING ERRCODE = 'duplicate_object';
    END IF;
    EXECUTE format('GRANT %I TO CURRENT_USER', a.sync_role);
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
            ' ledger'', TG_TABLE_NAME, %L USING ERRCODE = ''check_violation'';',
            array_to_string(k.cached, ', '))
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
    -- its grants here, then the role
    EXECUTE format('DROP OWNED BY %I', a.sync_role);
    EXECUTE format('DROP ROLE %I', a.sync_role);
    DELETE FROM economy.attachments x WHERE x.name = a.name;
END;
$$;

-- Attachments are not regenerated: their guards go on naming the repair, and
-- 0011's create_sync_role would grant each sync role again, which an installer
-- without CREATEROLE may not.
