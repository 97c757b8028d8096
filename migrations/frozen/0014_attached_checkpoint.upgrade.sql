-- 0014_attached_checkpoint: a ledger checkpoint for every attachment, exact under UPDATE,
-- DELETE and chosen ids, voided by switching the sync off.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0014_attached_checkpoint)';

ALTER TABLE economy.attachments ADD COLUMN id_column name;

CREATE TABLE economy.attached_ledger_horizon (
    attachment text PRIMARY KEY REFERENCES economy.attachments ON DELETE CASCADE,
    -- entries with id <= this are summed in economy.attached_ledger_checkpoint
    checkpointed_up_to bigint,
    -- the ledger sequence's last value once no write was in flight: an entry
    -- written since with an id at or below it is a correction (above)
    safe_up_to bigint,
    -- economy.ledger_state of the ledger at the last advance
    ledger_state text,
    sync_role name NOT NULL,
    CONSTRAINT attached_ledger_horizon_checkpoint_is_safe CHECK (checkpointed_up_to <= safe_up_to)
);

CREATE TABLE economy.attached_ledger_checkpoint (
    attachment text REFERENCES economy.attachments ON DELETE CASCADE,
    wallet_id bigint,
    PRIMARY KEY (attachment, wallet_id),
    balance numeric NOT NULL,
    earnings numeric NOT NULL,
    sync_role name NOT NULL DEFAULT current_user
);

-- As the parked credits: each sync role locks its own horizon row (and may
-- change nothing in it: it is granted UPDATE of sync_role alone, which the
-- check keeps) and writes its own checkpoint rows, no other attachment's.
ALTER TABLE economy.attached_ledger_horizon ENABLE ROW LEVEL SECURITY;
ALTER TABLE economy.attached_ledger_checkpoint ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_attachment ON economy.attached_ledger_horizon
USING (sync_role = current_user)
WITH CHECK (sync_role = current_user);

CREATE POLICY own_attachment ON economy.attached_ledger_checkpoint
USING (sync_role = current_user)
WITH CHECK (
    sync_role = current_user
    AND attachment = (SELECT a.name FROM economy.attachments a WHERE a.sync_role = current_user)
);

GRANT SELECT ON economy.attached_ledger_horizon, economy.attached_ledger_checkpoint
TO economy_app;
CREATE POLICY package_roles_read ON economy.attached_ledger_horizon FOR SELECT TO economy_app
USING (true);
CREATE POLICY package_roles_read ON economy.attached_ledger_checkpoint FOR SELECT TO economy_app
USING (true);

DROP FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name, text, text, name);
DROP FUNCTION economy.reset_ledger_checkpoint();
DROP FUNCTION economy.audit_ledger_checkpoint();
DROP PROCEDURE economy.checkpoint_ledger(bigint);
DROP FUNCTION economy.advance_ledger_checkpoint();
DROP FUNCTION economy.mark_ledger_horizon();

-- Raises unless the transaction takes a new snapshot for each statement
-- (READ COMMITTED): `step` waits for writers, then must see what they wrote.
CREATE FUNCTION economy.refuse_snapshot_isolation(step text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% needs READ COMMITTED: a snapshot taken after its waits', step
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
END;
$$;

-- Step 1 of advancing the checkpoint, in a short transaction of its own:
-- wait out the inserts in flight (SHARE conflicts with their ROW EXCLUSIVE
-- lock), then every id the identity has handed out belongs to an entry that
-- has committed or never will, and any later entry gets a larger id (an
-- entry with a chosen id is refused by apply_entry at or below the horizon).
-- Records that id as safe. Waits at most lock_timeout for the lock: new
-- inserts queue behind the wait. (An attachment's: mark_attached_horizon.)
CREATE FUNCTION economy.mark_ledger_horizon(attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN economy.mark_attached_horizon(economy.attachment(attachment));
    END IF;
    PERFORM economy.refuse_snapshot_isolation('mark_ledger_horizon');
    IF (SELECT s.cache_size FROM pg_catalog.pg_sequences s
        WHERE s.schemaname = 'economy' AND s.sequencename = 'transaction_id_seq') <> 1 THEN
        RAISE EXCEPTION 'the ledger id sequence caches values: ids would not grow in commit order'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    BEGIN
        LOCK TABLE economy.transaction IN SHARE MODE;
    EXCEPTION
        WHEN lock_not_available THEN
            RAISE EXCEPTION 'mark_ledger_horizon: inserts in flight held the ledger for over %:'
                ' the checkpoint was not advanced; try again', current_setting('lock_timeout')
                USING ERRCODE = 'lock_not_available';
    END;
    horizon := coalesce(pg_sequence_last_value('economy.transaction_id_seq'), 0);
    UPDATE economy.ledger_horizon h SET safe_up_to = greatest(h.safe_up_to, horizon);
    RETURN horizon;
END;
$$;

-- Step 2, in its own transaction: fold the entries up to the safe horizon
-- into the checkpoint. Concurrent calls queue on the horizon row. (An
-- attachment's: advance_attached_checkpoint.)
CREATE FUNCTION economy.advance_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done bigint;
    target bigint;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN economy.advance_attached_checkpoint(economy.attachment(attachment));
    END IF;
    SELECT h.checkpointed_up_to, h.safe_up_to INTO done, target
    FROM economy.ledger_horizon h
    FOR UPDATE;
    IF target > done THEN
        INSERT INTO economy.ledger_checkpoint AS c (wallet_id, balance, lifetime_earnings)
        SELECT e.wallet_id, sum(e.balance), sum(e.lifetime_earnings)
        FROM economy.ledger_entry_effects e
        WHERE e.id > done AND e.id <= target
        GROUP BY e.wallet_id
        ON CONFLICT (wallet_id) DO UPDATE
        SET balance = c.balance + excluded.balance,
            lifetime_earnings = c.lifetime_earnings + excluded.lifetime_earnings;
        UPDATE economy.ledger_horizon h SET checkpointed_up_to = target;
    END IF;
    RETURN target;
END;
$$;

-- Both steps, each in a transaction of its own, in one call (for a scheduler:
-- pg_cron runs `CALL economy.checkpoint_ledger()`); returns the ledger id now
-- covered. Called outside a transaction block. (No SET clause: it would
-- forbid the COMMIT between the steps; every name is schema-qualified.)
CREATE PROCEDURE economy.checkpoint_ledger(
    INOUT covered_up_to bigint DEFAULT NULL, attachment text DEFAULT NULL
)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM economy.mark_ledger_horizon(attachment);
    COMMIT;
    covered_up_to := economy.advance_ledger_checkpoint(attachment);
END;
$$;

-- The occasional full audit of the checkpoint itself: one row per wallet and
-- figure where it differs from a full sum of the entries it covers. Reads the
-- whole ledger, in one snapshot.
CREATE FUNCTION economy.audit_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS TABLE (wallet_id bigint, field text, checkpoint_value numeric, ledger_value numeric)
LANGUAGE plpgsql
STABLE
-- as balance_drift: the join with the checkpoint in memory, nothing compiled
SET work_mem = '256MB'
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        RETURN QUERY SELECT * FROM economy.audit_attached_checkpoint(economy.attachment(attachment));
        RETURN;
    END IF;
    RETURN QUERY
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
END;
$$;

-- Empties the checkpoint (after a failed audit): drift checks then sum the
-- whole ledger until the next advance_ledger_checkpoint() rebuilds it.
CREATE FUNCTION economy.reset_ledger_checkpoint(attachment text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        PERFORM economy.reset_attached_checkpoint(economy.attachment(attachment));
        RETURN;
    END IF;
    PERFORM FROM economy.ledger_horizon h FOR UPDATE;
    DELETE FROM economy.ledger_checkpoint;
    UPDATE economy.ledger_horizon h SET checkpointed_up_to = 0;
END;
$$;

-- The state of a ledger as DDL leaves it: the table and every table that
-- inherits from it (partitions), each one's row versions in pg_class (a
-- rewrite, a TRUNCATE, an ALTER), pg_trigger (DISABLE/ENABLE TRIGGER, CREATE
-- OR REPLACE TRIGGER) and pg_attribute (a column renamed or retyped), and
-- the list of them. A write that fires no trigger needs one of these changed
-- (or a superuser's session_replication_role): the checkpoint records the
-- state at each advance and is trusted only while it is the same.
CREATE FUNCTION economy.ledger_state(tbl regclass)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    WITH RECURSIVE family AS (
        SELECT tbl::oid AS relid
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN family f ON i.inhparent = f.relid
    )

    SELECT string_agg(x.part, ',' ORDER BY x.part)
    FROM (
        SELECT 'r' || c.oid || ':' || c.xmin::text || ':' || c.relfilenode AS part
        FROM pg_catalog.pg_class c JOIN family f ON c.oid = f.relid
        UNION ALL
        SELECT 't' || t.oid || ':' || t.xmin::text || ':' || t.tgenabled::text
        FROM pg_catalog.pg_trigger t JOIN family f ON t.tgrelid = f.relid
        UNION ALL
        SELECT 'a' || a.attrelid || '.' || a.attnum || ':' || a.xmin::text
        FROM pg_catalog.pg_attribute a JOIN family f ON a.attrelid = f.relid
        WHERE a.attnum > 0
    ) x;
$$;

-- How far an attachment's checkpoint may be trusted: the entries it sums
-- (id <= this), or NULL when it sums none or DDL changed the ledger since
-- its last advance.
CREATE FUNCTION economy.trusted_checkpoint(attachment text)
RETURNS bigint
LANGUAGE sql
STABLE
AS $$
    SELECT h.checkpointed_up_to
    FROM economy.attached_ledger_horizon h
    JOIN economy.attachments a ON a.name = h.attachment
    WHERE h.attachment = trusted_checkpoint.attachment
        AND h.ledger_state = economy.ledger_state(a.ledger);
$$;

-- Keeps an attachment's checkpoint exact under a write of entries at or
-- below its safe horizon (run as the attachment's sync role, by its sync,
-- after the caches: under the wallets' locks): an UPDATE or DELETE of an old
-- entry, an insert with an id of the app's choosing. `ids`, `wallet_ids`,
-- `amounts`, `earnings` are what each written or removed row version adds
-- (negated for a removed one). The horizon row is held FOR SHARE until
-- commit, so an advance (FOR UPDATE) either has summed these entries before,
-- and they are corrected here, or waits and sums them as they are then; and
-- the row is read as it is now (a transaction whose snapshot predates a mark
-- or an advance gets a serialization error instead).
CREATE FUNCTION economy.correct_attached_checkpoint(
    attachment text, ids bigint[], wallet_ids bigint[], amounts numeric[], earnings numeric[]
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    covered bigint;
BEGIN
    SELECT h.checkpointed_up_to INTO covered
    FROM economy.attached_ledger_horizon h
    WHERE h.attachment = $1
    FOR SHARE;
    INSERT INTO economy.attached_ledger_checkpoint AS c (attachment, wallet_id, balance, earnings)
    SELECT $1, e.wallet_id, sum(e.amount), sum(e.earnings)
    FROM unnest(ids, wallet_ids, amounts, earnings) AS e (id, wallet_id, amount, earnings)
    WHERE e.id <= covered
    GROUP BY e.wallet_id
    ORDER BY e.wallet_id
    ON CONFLICT ON CONSTRAINT attached_ledger_checkpoint_pkey DO UPDATE
    SET balance = c.balance + excluded.balance, earnings = c.earnings + excluded.earnings;
END;
$$;

-- Template parts: the correction of the ledger checkpoint
-- (economy.correct_attached_checkpoint) for entries at or below its safe
-- horizon, by a row (`lowest`: the least id of the row versions, then their
-- arrays) or by the rows of an INSERT statement; nothing where the ledger has
-- no id column (no checkpoint). A transaction with one snapshot for all its
-- statements (REPEATABLE READ, SERIALIZABLE) may not see a horizon marked
-- since it began: it corrects every row (its lock on the horizon row then
-- fails with a serialization error if a mark or an advance committed since).
CREATE FUNCTION economy.render_corrects(a economy.attachments, id text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT format(
        '%2$s <= (SELECT h.safe_up_to FROM economy.attached_ledger_horizon h'
        ' WHERE h.attachment = %1$L)'
        ' OR pg_catalog.current_setting(''transaction_isolation'') <> ''read committed''',
        a.name, id);
$$;

CREATE FUNCTION economy.render_row_correction(
    a economy.attachments, lowest text, ids text, wallet_ids text, amounts text, earnings text
)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN a.id_column IS NOT NULL THEN format(
        $part$IF %2$s THEN
            PERFORM economy.correct_attached_checkpoint(%1$L, %3$s, %4$s, %5$s, %6$s);
        END IF;$part$,
        a.name, economy.render_corrects(a, lowest), ids, wallet_ids, amounts, earnings) ELSE '' END;
$$;

CREATE FUNCTION economy.render_statement_correction(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN a.id_column IS NOT NULL THEN format(
        $part$-- rows at or below the checkpoint's safe horizon keep it exact
    PERFORM economy.correct_attached_checkpoint(%1$L, array_agg(s.%2$I::bigint),
        array_agg(s.%3$I::bigint), array_agg(s.%4$I::numeric),
        array_agg(CASE WHEN coalesce((%5$s), false) THEN s.%4$I::numeric ELSE 0 END))
    FROM sync_inserted s
    WHERE %6$s
    HAVING count(*) > 0;$part$,
        a.name, a.id_column, a.ledger_wallet_column, a.amount_column, a.earning,
        economy.render_corrects(a, format('s.%I', a.id_column))) ELSE '' END;
$$;

-- Template: the per-wallet sums of the ledger's entries with an id in
-- (after, up_to] (after NULL: from the first), which the checkpoint keeps
-- (economy.advance_attached_checkpoint) and its audit compares. Run as the
-- sync role: the earning expression is the app's.
CREATE FUNCTION economy.render_ledger_sums(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT CASE WHEN a.id_column IS NOT NULL THEN format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(after bigint, up_to bigint)
RETURNS TABLE (wallet_id bigint, balance numeric, earnings numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
-- ($1 and $2: the app's ledger may have columns of those names)
BEGIN
    RETURN QUERY
    SELECT r.%2$I::bigint, sum(r.%3$I)::numeric,
        coalesce(sum(r.%3$I) FILTER (WHERE %4$s), 0)::numeric
    FROM %5$s r
    WHERE ($1 IS NULL OR r.%6$I > $1) AND r.%6$I <= $2
    GROUP BY r.%2$I;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'ledger_sums'),
    a.ledger_wallet_column,
    a.amount_column,
    a.earning,
    a.ledger,
    a.id_column
) END;
$render$;

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
    balance_after_column name DEFAULT NULL,
    guard text DEFAULT 'keep',
    overdraft_limit text DEFAULT NULL,
    created_at_column name DEFAULT NULL,
    id_column name DEFAULT NULL
)
RETURNS economy.attachments
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- what it creates is checked as it is created, whatever the session says
SET check_function_bodies = on
AS $$
DECLARE
    a economy.attachments;
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
    IF EXISTS (SELECT FROM economy.attachments x WHERE x.ledger = attach.ledger) THEN
        RAISE EXCEPTION 'ledger % is attached already', attach.ledger
            USING ERRCODE = 'duplicate_object';
    END IF;
    a.name := attach.name;
    a.ledger := attach.ledger;
    a.wallet := attach.wallet;
    a.profile := attach.profile;
    a.ledger_wallet_column := attach.ledger_wallet_column;
    a.amount_column := attach.amount_column;
    a.wallet_balance_column := attach.wallet_balance_column;
    a.wallet_earnings_column := attach.wallet_earnings_column;
    a.wallet_owner_column := attach.wallet_owner_column;
    a.profile_key_column := attach.profile_key_column;
    a.profile_balance_column := attach.profile_balance_column;
    a.profile_earnings_column := attach.profile_earnings_column;
    a.earning := attach.earning;
    a.balance_after_column := attach.balance_after_column;
    a.guard := attach.guard;
    a.overdraft_limit := attach.overdraft_limit;
    a.created_at_column := attach.created_at_column;
    a.id_column := attach.id_column;
    a.attached_at := now();
    a.sync_role := economy.sync_role_name(a.name);
    a := economy.check_attachment(a);
    INSERT INTO economy.attachments VALUES (a.*);
    INSERT INTO economy.attached_ledger_horizon (attachment, sync_role) VALUES (a.name, a.sync_role);
    PERFORM economy.create_attached_functions(a);
    RETURN a;
END;
$$;

-- Whether an attachment's ledger can be checkpointed (the package's always):
-- one whose id has a sequence and no NULL (which no sum would count).
CREATE FUNCTION economy.has_checkpoint(attachment text)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT economy.own_tables(attachment) OR coalesce((
        SELECT pg_catalog.pg_get_serial_sequence(a.ledger::text, a.id_column) IS NOT NULL
            AND att.attnotnull
        FROM economy.attachments a
        JOIN pg_catalog.pg_attribute att ON att.attrelid = a.ledger AND att.attname = a.id_column
        WHERE a.name = attachment), false);
$$;

-- The ledger checkpoint of an attachment, in the steps of the package's
-- (economy.mark_ledger_horizon, economy.advance_ledger_checkpoint and the
-- audit and reset, which call these for attachment => N). Marking: wait out
-- the writes in flight on the ledger (its SHARE lock; within the caller's
-- lock_timeout), then every id its sequence handed out belongs to an entry
-- that has committed or is written from now on, and so corrects the
-- checkpoint. Nothing of the app's runs: no table of it is read.
CREATE FUNCTION economy.mark_attached_horizon(a economy.attachments)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF NOT economy.has_checkpoint(a.name) THEN
        RAISE EXCEPTION 'attachment %: the ledger has no integer id column with a sequence'
            ' and NOT NULL to checkpoint', a.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'economy.reattach(name) after giving it one, or attach(…, id_column => …)';
    END IF;
    PERFORM economy.refuse_snapshot_isolation('mark_ledger_horizon');
    BEGIN
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', a.ledger);
    EXCEPTION
        WHEN lock_not_available THEN
            RAISE EXCEPTION 'mark_ledger_horizon: writes in flight held % for over %:'
                ' the checkpoint was not advanced; try again', a.ledger,
                current_setting('lock_timeout')
                USING ERRCODE = 'lock_not_available';
    END;
    horizon := pg_catalog.pg_sequence_last_value(
        pg_catalog.pg_get_serial_sequence(a.ledger::text, a.id_column)::regclass);
    UPDATE economy.attached_ledger_horizon h SET safe_up_to = greatest(h.safe_up_to, horizon)
    WHERE h.attachment = a.name
    RETURNING h.safe_up_to INTO horizon;
    RETURN horizon;
END;
$$;

-- Advancing: sums the entries up to the safe horizon into the checkpoint, or
-- all of them again (the checkpoint emptied first) when DDL changed the
-- ledger since the last advance (economy.ledger_state): a write made while
-- its sync was off is in no sum yet. Concurrent advances and corrections
-- queue on the horizon row.
CREATE FUNCTION economy.advance_attached_checkpoint(a economy.attachments)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text := economy.session_settings();
    horizon economy.attached_ledger_horizon;
    state text := economy.ledger_state(a.ledger);
BEGIN
    -- it waits for corrections in flight, then must see them
    PERFORM economy.refuse_snapshot_isolation('advance_ledger_checkpoint');
    SELECT * INTO horizon FROM economy.attached_ledger_horizon h
    WHERE h.attachment = a.name
    FOR UPDATE;
    IF horizon.ledger_state IS DISTINCT FROM state THEN
        DELETE FROM economy.attached_ledger_checkpoint c WHERE c.attachment = a.name;
        horizon.checkpointed_up_to := NULL;
    END IF;
    IF horizon.safe_up_to IS DISTINCT FROM horizon.checkpointed_up_to THEN
        EXECUTE format(
            'INSERT INTO economy.attached_ledger_checkpoint AS c'
            ' (attachment, wallet_id, balance, earnings, sync_role)'
            ' SELECT %L, s.wallet_id, s.balance, s.earnings, %L FROM economy.%I($1, $2) s'
            ' ON CONFLICT ON CONSTRAINT attached_ledger_checkpoint_pkey DO UPDATE'
            ' SET balance = c.balance + excluded.balance, earnings = c.earnings + excluded.earnings',
            a.name, a.sync_role, economy.attached_object(a.name, 'ledger_sums'))
        USING horizon.checkpointed_up_to, horizon.safe_up_to;
        PERFORM economy.refuse_changed_settings(settings);
    END IF;
    UPDATE economy.attached_ledger_horizon h
    SET checkpointed_up_to = horizon.safe_up_to, ledger_state = state
    WHERE h.attachment = a.name;
    RETURN horizon.safe_up_to;
END;
$$;

-- The audit: each wallet and figure where the checkpoint differs from a full
-- sum of the entries it covers (reads them all, in one snapshot).
CREATE FUNCTION economy.audit_attached_checkpoint(a economy.attachments)
RETURNS TABLE (wallet_id bigint, field text, checkpoint_value numeric, ledger_value numeric)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    settings text := economy.session_settings();
    covered bigint := (
        SELECT h.checkpointed_up_to FROM economy.attached_ledger_horizon h
        WHERE h.attachment = a.name);
BEGIN
    IF covered IS NULL THEN
        RETURN;  -- it sums nothing
    END IF;
    RETURN QUERY EXECUTE format($query$
        SELECT coalesce(c.wallet_id, s.wallet_id), f.field, f.checkpoint_value, f.ledger_value
        FROM (
            SELECT * FROM economy.attached_ledger_checkpoint c WHERE c.attachment = $1
        ) c
        FULL JOIN economy.%I(NULL, $2) s ON s.wallet_id = c.wallet_id
        CROSS JOIN LATERAL (
            VALUES
            ('balance', coalesce(c.balance, 0), coalesce(s.balance, 0)),
            ('lifetime_earnings', coalesce(c.earnings, 0), coalesce(s.earnings, 0))
        ) AS f (field, checkpoint_value, ledger_value)
        WHERE f.checkpoint_value <> f.ledger_value
        ORDER BY 1, 2$query$, economy.attached_object(a.name, 'ledger_sums'))
    USING a.name, covered;
    PERFORM economy.refuse_changed_settings(settings);
END;
$$;

-- Empties an attachment's checkpoint (after a failed audit): drift checks
-- then sum the whole ledger until the next advance rebuilds it.
CREATE FUNCTION economy.reset_attached_checkpoint(a economy.attachments)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM economy.attached_ledger_horizon h WHERE h.attachment = a.name FOR UPDATE;
    DELETE FROM economy.attached_ledger_checkpoint c WHERE c.attachment = a.name;
    UPDATE economy.attached_ledger_horizon h SET checkpointed_up_to = NULL, ledger_state = NULL
    WHERE h.attachment = a.name;
END;
$$;

-- Advances the checkpoint of every ledger that has one (economy.has_checkpoint),
-- the package's first, each in transactions of its own (for a scheduler:
-- pg_cron runs `CALL economy.checkpoint_ledgers()`). Called outside a
-- transaction block. A ledger whose writes in flight outlast the mark's wait
-- is skipped, the others advanced; then the call fails (lock_not_available)
-- naming the skipped ones, so that a scheduler shows it: the next run tries
-- them again.
CREATE PROCEDURE economy.checkpoint_ledgers()
LANGUAGE plpgsql
AS $$
DECLARE
    ledger record;
    skipped text[] := '{}';
BEGIN
    FOR ledger IN
        SELECT a.name FROM economy.attachments a
        WHERE economy.has_checkpoint(a.name)
        ORDER BY a.name <> 'economy', a.name
    LOOP
        BEGIN
            PERFORM economy.mark_ledger_horizon(ledger.name);
        EXCEPTION
            WHEN lock_not_available THEN
                skipped := skipped || ledger.name;
                CONTINUE;
        END;
        COMMIT;
        PERFORM economy.advance_ledger_checkpoint(ledger.name);
        COMMIT;
    END LOOP;
    IF cardinality(skipped) > 0 THEN
        RAISE EXCEPTION 'checkpoint_ledgers: writes in flight held the ledger of % too long:'
            ' not advanced (the others were); the next run tries again', skipped
            USING ERRCODE = 'lock_not_available';
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
    -- UPDATE of sync_role alone: a correction holds its horizon row FOR SHARE
    EXECUTE format('GRANT SELECT, UPDATE (sync_role) ON economy.attached_ledger_horizon TO %I',
        a.sync_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON economy.attached_ledger_checkpoint'
        ' TO %I', a.sync_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION economy.correct_attached_checkpoint(text, bigint[],'
        ' bigint[], numeric[], numeric[]), economy.trusted_checkpoint(text),'
        ' economy.ledger_state(regclass) TO %I',
        a.sync_role);
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
        -- (read here first: most wallets are not hot, and a call costs more)
        IF EXISTS (
            SELECT FROM economy.attached_hot_wallet h
            WHERE h.attachment = %16$L AND h.wallet_id = NEW.%8$I
        ) THEN
            IF sync_amount <= 0 THEN
                PERFORM economy.%17$I(ARRAY[NEW.%8$I::bigint]);  -- the balance is exact after it
            -- a credit to a hot wallet is parked: no shared row written
            ELSIF economy.park_attached_credit(%16$L, NEW.%8$I, sync_amount, sync_earned) THEN
                %20$s
                %27$s
                %18$s
            END IF;
        END IF;
        UPDATE %5$s w SET %6$s
        WHERE w.%7$I = NEW.%8$I
        RETURNING %9$s, w.%7$I, w.%14$I, %21$s
        INTO sync_owner, sync_wallet, sync_balance, sync_limit;
        %22$s
        %10$s
        %27$s
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
    %28$s
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
        THEN E'\n    sync_setting text;\n    sync_list text;\n    sync_seen text;' ELSE '' END,
    economy.render_row_correction(a, format('NEW.%I', a.id_column),
        format('ARRAY[NEW.%I::bigint]', a.id_column), format('ARRAY[NEW.%I::bigint]', a.ledger_wallet_column),
        'ARRAY[sync_amount]', 'ARRAY[sync_earned]'),
    -- the old row version taken out, the new one (NULL for a DELETE) put in
    economy.render_row_correction(a, format('least(OLD.%1$I, NEW.%1$I)', a.id_column),
        format('ARRAY[OLD.%1$I::bigint, NEW.%1$I::bigint]', a.id_column),
        format('ARRAY[OLD.%1$I::bigint, NEW.%1$I::bigint]', a.ledger_wallet_column),
        format('ARRAY[-OLD.%I::numeric, sync_amount]', a.amount_column),
        format('ARRAY[CASE WHEN %s THEN -OLD.%I::numeric ELSE 0 END, sync_earned]',
            economy.render_earning(a, 'OLD'), a.amount_column))
);
$render$;

-- Template: the ledger's statement trigger, for an INSERT of several rows (a
-- multi-row INSERT, INSERT … SELECT, COPY, Django's bulk_create): its
-- wallets locked in ascending key order, each updated once with the sum of
-- its rows, then each owner's profile once; so the cost is linear, and two
-- such statements never deadlock whatever the order of their rows. As row by
-- row, a hot wallet that only gets credits has them parked (once per
-- wallet, no shared row written); one that also gets a debit is folded
-- under its lock first. Not made where the row trigger syncs every row
-- (economy.insert_sync).
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
    sync_refused record;
    sync_parked bigint[];
    sync_folded bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    IF NOT EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
        RETURN NULL;  -- no row, or one: the row trigger applied it
    END IF;
    IF EXISTS (SELECT FROM sync_inserted n WHERE %12$s) THEN
        RAISE EXCEPTION '%%: an amount of the statement cannot be cached exactly', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
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
    IF cardinality(sync_parked) > 0 THEN
        PERFORM economy.park_attached_credit(%10$L, t.wallet_key, t.amount, t.earnings)
        FROM (%6$s) t
        WHERE t.wallet_key = ANY (sync_parked);
    END IF;
    WITH totals AS (%6$s),

    updated AS (
        UPDATE %2$s w SET %7$s
        FROM totals t
        WHERE w.%3$I = t.wallet_key AND t.wallet_key <> ALL (sync_parked)
        RETURNING (%8$s)::bigint AS owner_key, t.amount, t.earnings
    )

    SELECT array_agg(u.owner_key), array_agg(u.amount), array_agg(u.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM updated u;
    %13$s
    %14$s
    %9$s
    %15$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'sync_rows'),
    a.wallet,
    a.wallet_key_column,
    a.ledger_wallet_column,
    a.amount_column,
    format($totals$
        SELECT n.%1$I AS wallet_key, sum(n.%2$I) AS amount,
            sum(CASE WHEN coalesce((%3$s), false) THEN n.%2$I ELSE 0 END) AS earnings
        FROM sync_inserted n
        GROUP BY n.%1$I
    $totals$, a.ledger_wallet_column, a.amount_column, a.earning),
    economy.render_additions(
        'w', a.wallet_balance_column, a.wallet_earnings_column, 't.amount', 't.earnings'
    ),
    economy.render_column('w', a.wallet_owner_column),
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)'),
    a.name,
    economy.attached_object(a.name, 'fold'),
    economy.render_inexact(a, format('n.%I', a.amount_column)),
    economy.render_parked_fit(a, 'sync_parked'),
    CASE WHEN a.overdraft_limit IS NOT NULL THEN format(
        $check$-- every debit of the statement, in its order, against the overdraft limit
    SELECT r.wallet_key, r.running, r.overdraft INTO sync_refused
    FROM (
        SELECT n.wallet_key, n.amount, b.overdraft,
            b.balance - sum(n.amount) OVER (PARTITION BY n.wallet_key)
            + sum(n.amount) OVER (PARTITION BY n.wallet_key ORDER BY n.position) AS running
        FROM (
            SELECT row_number() OVER () AS position, s.%1$I AS wallet_key, s.%2$I AS amount
            FROM sync_inserted s
        ) n
        JOIN (
            SELECT w.%3$I AS wallet_key, w.%4$I::numeric AS balance, %5$s AS overdraft
            FROM %6$s w
            WHERE w.%3$I IN (SELECT s.%1$I FROM sync_inserted s)
        ) b ON b.wallet_key = n.wallet_key
    ) r
    WHERE r.amount < 0 AND r.running < -r.overdraft
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < -%%',
            sync_refused.wallet_key, sync_refused.running, sync_refused.overdraft
            USING ERRCODE = 'check_violation';
    END IF;$check$,
        a.ledger_wallet_column, a.amount_column, a.wallet_key_column, a.wallet_balance_column,
        economy.render_limit(a), a.wallet
    ) ELSE '' END,
    economy.render_statement_correction(a)
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
CREATE OR REPLACE FUNCTION economy.render_sync_running(a economy.attachments)
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
    %20$s
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
    economy.render_limit(a),
    economy.render_statement_correction(a)
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
-- as balance_drift: the joins and groups of every wallet and profile in memory,
-- nothing compiled
SET work_mem = '256MB'
SET jit = off
AS $fn$
#variable_conflict use_column
-- ($1 is user_ids, and the variable is named with its block: the app's
-- tables may have a column of either name)
<<economy_drift>>
DECLARE
    sync_covered bigint;  -- the entries the checkpoint sums, when it is to be trusted
BEGIN
    %16$s
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
        WHERE $1 IS NULL OR %3$s = ANY ($1)
            OR (%3$s IS NULL AND array_position($1, NULL) IS NOT NULL)
    ),

    -- the whole ledger, or the given owners' wallets' entries through the
    -- index on its wallet column: a branch each, as the plan is made for
    -- the call's arguments, it runs only the one that applies
    ledger AS (
        SELECT r.%7$I::bigint AS wallet_id, sum(r.%8$I)::numeric AS balance,
            coalesce(sum(r.%8$I) FILTER (WHERE %9$s), 0)::numeric AS earnings
        FROM (
            SELECT * FROM %10$s WHERE $1 IS NULL%17$s
            UNION ALL
            SELECT * FROM %10$s
            WHERE $1 IS NOT NULL AND %7$I IN (SELECT wl.wallet_id FROM wallets wl)
        ) AS r
        GROUP BY r.%7$I
    ),

    per_wallet AS (
        SELECT w.*, coalesce(l.balance, 0) + coalesce(c.balance, 0) AS ledger_balance,
            coalesce(l.earnings, 0) + coalesce(c.earnings, 0) AS ledger_earnings
        FROM wallets w
        LEFT JOIN ledger l ON l.wallet_id = w.wallet_id
        LEFT JOIN economy.attached_ledger_checkpoint c
            ON $1 IS NULL AND economy_drift.sync_covered IS NOT NULL
            AND c.attachment = %15$L AND c.wallet_id = w.wallet_id
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
            WHERE $1 IS NULL OR p.%1$I = ANY ($1)
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
    a.name,
    CASE WHEN a.id_column IS NOT NULL THEN format(
        'economy_drift.sync_covered := economy.trusted_checkpoint(%L);', a.name) ELSE '' END,
    CASE WHEN a.id_column IS NOT NULL
        THEN format(' AND (economy_drift.sync_covered IS NULL OR %I > economy_drift.sync_covered)',
            a.id_column) ELSE '' END
);
$render$;

-- Template: the ledger's AFTER TRUNCATE trigger: allowed only when the same
-- statement emptied the wallet table too (what Django's flush does); the
-- parked credits go with the wallets, and a profile table left as it was is
-- set to the empty ledger's figures.
CREATE OR REPLACE FUNCTION economy.render_truncate(a economy.attachments)
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
BEGIN
    IF EXISTS (SELECT FROM %2$s) THEN
        RAISE EXCEPTION 'TRUNCATE of %% refused: economy-sync keeps caches of it in %%;'
            ' DELETE instead, or truncate both in one statement', %3$L, %4$L
            USING ERRCODE = 'restrict_violation';
    END IF;
    DELETE FROM economy.attached_hot_credit c WHERE c.attachment = %5$L;
    DELETE FROM economy.attached_hot_wallet h WHERE h.attachment = %5$L;
    -- the checkpoint sums nothing now (an entry written again with an id it
    -- covers is a correction, as any)
    DELETE FROM economy.attached_ledger_checkpoint c WHERE c.attachment = %5$L;
    %6$s
    RETURN NULL;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'truncate'),
    a.wallet,
    a.ledger::text,
    a.wallet::text,
    a.name,
    CASE WHEN a.profile IS NOT NULL THEN format(
        'UPDATE %s p SET %s WHERE %s;',
        a.profile,
        concat_ws(', ', economy.render_set('%1$I = 0', a.profile_balance_column),
            economy.render_set('%1$I = 0', a.profile_earnings_column)),
        concat_ws(' OR ', economy.render_set('p.%1$I <> 0', a.profile_balance_column),
            economy.render_set('p.%1$I <> 0', a.profile_earnings_column))
    ) ELSE '' END
);
$render$;

-- The functions generated for an attachment, the one list of them (read by
-- create_attached_functions, detach, attachment_sql and doctor): each with
-- its signature (NULL for one not there) and the package role that may call
-- it (NULL: only the triggers).
CREATE OR REPLACE FUNCTION economy.attached_functions(attachment text)
RETURNS TABLE (function_name name, signature text, granted_to name)
LANGUAGE sql
STABLE
AS $$
    SELECT economy.attached_object(attachment, f.suffix),
        CASE WHEN f.arguments IS NOT NULL
            THEN format('economy.%I(%s)', economy.attached_object(attachment, f.suffix), f.arguments)
            -- the earning function's arguments are the columns `earning` reads
            ELSE (SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
                WHERE p.proname = economy.attached_object(attachment, f.suffix)
                    AND p.pronamespace = 'economy'::regnamespace)
        END,
        f.granted_to
    FROM (
        VALUES
        ('sync', '', NULL),
        ('sync_rows', '', NULL),
        ('guard_wallet', '', NULL),
        ('guard_profile', '', NULL),
        ('move', '', NULL),
        ('truncate', '', NULL),
        ('earns', NULL, NULL),
        ('fold', 'bigint[]', 'economy_operator'),
        ('drift', 'bigint[]', 'economy_app'),
        ('ledger_sums', 'bigint, bigint', 'economy_app'),
        ('reconcile', 'boolean, bigint[]', 'economy_operator'),
        ('set_hot', 'bigint, boolean', 'economy_operator'),
        ('balance', 'bigint', 'economy_app'),
        ('wallet', 'bigint', 'economy_app'),
        ('balance_at', 'bigint, timestamptz', 'economy_app'),
        ('owners', 'bigint, integer', 'economy_app')
    ) AS f (suffix, arguments, granted_to);
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
            (economy.render_ledger_sums(a), NULL),
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

-- The columns an attachment maps, by the argument of attach that names
-- them, each with its table.
CREATE OR REPLACE FUNCTION economy.mapped_columns(a economy.attachments)
RETURNS TABLE (argument text, tbl regclass, col name)
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT m.argument, m.tbl, m.col
    FROM (
        VALUES
        ('ledger_wallet_column', a.ledger, a.ledger_wallet_column),
        ('amount_column', a.ledger, a.amount_column),
        ('balance_after_column', a.ledger, a.balance_after_column),
        ('wallet_key_column', a.wallet, a.wallet_key_column),
        ('wallet_balance_column', a.wallet, a.wallet_balance_column),
        ('wallet_earnings_column', a.wallet, a.wallet_earnings_column),
        ('wallet_owner_column', a.wallet, a.wallet_owner_column),
        ('profile_key_column', a.profile, a.profile_key_column),
        ('profile_balance_column', a.profile, a.profile_balance_column),
        ('profile_earnings_column', a.profile, a.profile_earnings_column),
        ('created_at_column', a.ledger, a.created_at_column),
        ('id_column', a.ledger, a.id_column)
    ) AS m (argument, tbl, col)
    WHERE m.col IS NOT NULL;
$$;

-- Checks an attachment's tables, columns, types and earning expression
-- against the catalogs, and returns it with what they say filled in (the
-- wallet's key, each column's number). Nothing is created.
CREATE OR REPLACE FUNCTION economy.check_attachment(a economy.attachments)
RETURNS economy.attachments
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_types regtype[] := ARRAY['smallint', 'integer', 'bigint']::regtype[];
    money_types regtype[] := ARRAY['smallint', 'integer', 'bigint', 'numeric']::regtype[];
    wallet_keys name[];
    tbl regclass;
BEGIN
    FOREACH tbl IN ARRAY array_remove(ARRAY[a.ledger, a.wallet, a.profile], NULL) LOOP
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
        END IF;
    END LOOP;
    -- a dollar sign could end the dollar-quoted bodies the templates make
    IF EXISTS (
        SELECT FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid IN (a.ledger, a.wallet, a.profile) AND (c.relname || n.nspname) LIKE '%$%'
    ) OR EXISTS (SELECT FROM economy.mapped_columns(a) m WHERE m.col LIKE '%$%') THEN
        RAISE EXCEPTION 'table and column names with a dollar sign cannot be attached'
            USING ERRCODE = 'invalid_name';
    END IF;
    IF a.ledger IN (a.wallet, a.profile) OR a.wallet = a.profile THEN
        RAISE EXCEPTION 'ledger, wallet and profile must be three different tables'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- the wallet's primary key: one integer column
    SELECT array_agg(att.attname) INTO wallet_keys
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute att
        ON att.attrelid = i.indrelid AND att.attnum = ANY (i.indkey)
    WHERE i.indrelid = a.wallet AND i.indisprimary;
    IF cardinality(wallet_keys) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'wallet table % needs a primary key of one column', a.wallet
            USING ERRCODE = 'invalid_table_definition';
    END IF;
    a.wallet_key_column := wallet_keys[1];
    PERFORM economy.check_column(a.wallet, a.wallet_key_column, 'wallet key', key_types);
    PERFORM economy.check_column(
        a.ledger, a.ledger_wallet_column, 'ledger_wallet_column', key_types
    );
    -- caches of an integer type need integer amounts: nothing is ever rounded
    IF economy.check_column(a.ledger, a.amount_column, 'amount_column', money_types)
        = 'numeric'::regtype THEN
        money_types := ARRAY['numeric']::regtype[];
    END IF;
    PERFORM economy.check_column(
        a.wallet, a.wallet_balance_column, 'wallet_balance_column', money_types
    );
    IF a.wallet_earnings_column IS NOT NULL THEN
        PERFORM economy.check_column(
            a.wallet, a.wallet_earnings_column, 'wallet_earnings_column', money_types
        );
    END IF;
    IF a.wallet_owner_column IS NOT NULL THEN
        PERFORM economy.check_column(
            a.wallet, a.wallet_owner_column, 'wallet_owner_column', key_types
        );
    END IF;
    IF a.profile IS NOT NULL THEN
        IF a.wallet_owner_column IS NULL THEN
            RAISE EXCEPTION 'a profile table needs wallet_owner_column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF a.profile_balance_column IS NULL AND a.profile_earnings_column IS NULL THEN
            RAISE EXCEPTION 'a profile table needs profile_balance_column or profile_earnings_column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM economy.check_column(
            a.profile, a.profile_key_column, 'profile_key_column', key_types
        );
        IF a.profile_balance_column IS NOT NULL THEN
            PERFORM economy.check_column(
                a.profile, a.profile_balance_column, 'profile_balance_column', money_types
            );
        END IF;
        IF a.profile_earnings_column IS NOT NULL THEN
            PERFORM economy.check_column(
                a.profile, a.profile_earnings_column, 'profile_earnings_column', money_types
            );
        END IF;
    ELSIF a.profile_balance_column IS NOT NULL OR a.profile_earnings_column IS NOT NULL THEN
        RAISE EXCEPTION 'profile_balance_column and profile_earnings_column need a profile table'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        a.profile_key_column := NULL;
    END IF;
    IF a.balance_after_column IS NOT NULL THEN
        PERFORM economy.check_column(
            a.ledger, a.balance_after_column, 'balance_after_column', money_types
        );
    END IF;
    PERFORM economy.check_expression(a.ledger, a.earning, 'earning', 'boolean');
    IF a.overdraft_limit IS NOT NULL THEN
        PERFORM economy.check_expression(a.wallet, a.overdraft_limit, 'overdraft_limit', 'numeric');
    END IF;
    -- a ledger's created_at, unless another column is named
    IF a.created_at_column IS NULL AND economy.column_type(a.ledger, 'created_at')
        IN ('timestamptz'::regtype, 'timestamp'::regtype) THEN
        a.created_at_column := 'created_at';
    END IF;
    IF a.created_at_column IS NOT NULL THEN
        PERFORM economy.check_column(a.ledger, a.created_at_column, 'created_at_column',
            ARRAY['timestamptz', 'timestamp', 'date']::regtype[]);
    END IF;
    -- the ledger's id, which its checkpoint counts in: its primary key, when
    -- that is one integer column, unless another column is named
    IF a.id_column IS NULL THEN
        SELECT att.attname INTO a.id_column
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_attribute att
            ON att.attrelid = i.indrelid AND att.attnum = i.indkey[0]
        WHERE i.indrelid = a.ledger AND i.indisprimary AND i.indnkeyatts = 1
            AND att.atttypid = ANY (key_types);
    ELSE
        PERFORM economy.check_column(a.ledger, a.id_column, 'id_column', key_types);
    END IF;
    IF a.guard IS NULL OR a.guard NOT IN ('keep', 'refuse') THEN
        RAISE EXCEPTION 'guard must be keep or refuse, got %', a.guard
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT jsonb_object_agg(m.argument, att.attnum) INTO a.column_numbers
    FROM economy.mapped_columns(a) m
    JOIN pg_catalog.pg_attribute att ON att.attrelid = m.tbl AND att.attname = m.col;
    RETURN a;
END;
$$;

-- Regenerates an attachment after the app changed its tables (a column
-- renamed, added, dropped or of a new type): its settings, hot wallets and
-- parked credits are kept, a renamed mapped column is followed (by its
-- number), and everything is checked again as attach does. `earning`, when
-- given, replaces the earning expression (one that named a renamed column).
CREATE OR REPLACE FUNCTION economy.reattach(name text, earning text DEFAULT NULL)
RETURNS economy.attachments
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- what it creates is checked as it is created, whatever the session says
SET check_function_bodies = on
AS $$
DECLARE
    a economy.attachments := economy.attachment(reattach.name);
    renamed jsonb;
BEGIN
    IF economy.own_tables(a.name) THEN
        RAISE EXCEPTION 'the package''s own tables are no generated attachment: nothing to regenerate'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT jsonb_object_agg(m.argument, att.attname) INTO renamed
    FROM economy.mapped_columns(a) m
    JOIN pg_catalog.pg_attribute att
        ON att.attrelid = m.tbl AND att.attnum = (a.column_numbers ->> m.argument)::smallint
    WHERE NOT att.attisdropped AND att.attname <> m.col
        AND economy.column_type(m.tbl, m.col) IS NULL;
    a := jsonb_populate_record(a, to_jsonb(a) || coalesce(renamed, '{}'));
    a.earning := coalesce(reattach.earning, a.earning);
    a := economy.check_attachment(a);
    UPDATE economy.attachments x SET column_numbers = a.column_numbers,
        ledger_wallet_column = a.ledger_wallet_column, amount_column = a.amount_column,
        balance_after_column = a.balance_after_column, wallet_key_column = a.wallet_key_column,
        wallet_balance_column = a.wallet_balance_column,
        wallet_earnings_column = a.wallet_earnings_column,
        wallet_owner_column = a.wallet_owner_column, profile_key_column = a.profile_key_column,
        profile_balance_column = a.profile_balance_column,
        profile_earnings_column = a.profile_earnings_column,
        created_at_column = a.created_at_column, id_column = a.id_column, earning = a.earning
    WHERE x.name = a.name;
    PERFORM economy.create_attached_functions(a);
    RETURN a;
END;
$$;

REVOKE ALL ON FUNCTION economy.refuse_snapshot_isolation(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.mark_ledger_horizon(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.advance_ledger_checkpoint(text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE economy.checkpoint_ledger(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.audit_ledger_checkpoint(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.reset_ledger_checkpoint(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.ledger_state(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.trusted_checkpoint(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.correct_attached_checkpoint(text, bigint[], bigint[], numeric[], numeric[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_corrects(economy.attachments, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_row_correction(economy.attachments, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_statement_correction(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_ledger_sums(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name, text, text, name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.has_checkpoint(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.mark_attached_horizon(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.advance_attached_checkpoint(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.audit_attached_checkpoint(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.reset_attached_checkpoint(economy.attachments) FROM PUBLIC;
REVOKE ALL ON PROCEDURE economy.checkpoint_ledgers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.audit_ledger_checkpoint(text),
economy.ledger_state(regclass),
economy.trusted_checkpoint(text),
economy.audit_attached_checkpoint(economy.attachments),
economy.has_checkpoint(text)
TO economy_app;
GRANT EXECUTE ON FUNCTION
economy.mark_ledger_horizon(text),
economy.advance_ledger_checkpoint(text),
economy.reset_ledger_checkpoint(text)
TO economy_operator;
GRANT EXECUTE ON PROCEDURE economy.checkpoint_ledger(bigint, text), economy.checkpoint_ledgers() TO economy_operator;

-- every attachment: its ledger id found, a horizon, its code regenerated
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        a.id_column := (economy.check_attachment(a)).id_column;
        a.column_numbers := (economy.check_attachment(a)).column_numbers;
        UPDATE economy.attachments x SET id_column = a.id_column, column_numbers = a.column_numbers
        WHERE x.name = a.name;
        INSERT INTO economy.attached_ledger_horizon (attachment, sync_role)
        VALUES (a.name, a.sync_role);
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
