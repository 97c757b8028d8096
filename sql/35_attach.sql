-- economy-sync: the same sync, drift and reconcile, attached to an
-- application's own ledger, wallet and (optionally) profile tables.
--
-- economy.attachments is the catalogue: the package's own tables are its
-- row named `economy` (synced by the static code of 20_functions.sql), every
-- app attachment another row. economy.attach() resolves every name through
-- the catalogs and checks the `earning` expression by preparing it against
-- the ledger; then it creates, for attachment N, from the templates below
-- (format() with %I and %L; the only other text placed in them is the
-- checked `earning` expression) the functions economy.attached_functions(N)
-- lists and the triggers economy.attached_triggers(N) lists: the ledger's
-- row and statement sync, the guards of the cached columns, the move of a
-- wallet to a new owner, and drift, reconcile, fold, set_hot, balance, the
-- checkpoint's sums and lag, and holds (where it names a held_column).
-- economy.reattach(N) regenerates them after the app's own migrations,
-- economy.detach(N) drops them, economy.attachment_sql(N) prints what runs
-- per row. No SQL is built per row: every function is static once generated.
-- tests/golden/seed_attachment.sql is all a reference attachment runs, as
-- rendered from these templates (a test keeps it current).
--
-- Who may do what: the installer (owns schema economy) > the owner of the
-- app's tables > app logins. The generated functions belong to the
-- attachment's sync role (economy.create_sync_role), NOLOGIN, of which the
-- installer is the only member: whatever they run (the `earning`
-- expression and what it calls, the app owner's own triggers and policies
-- on its tables) runs with that role's few rights, never the installer's,
-- and the app owner can neither replace nor alter them. Cached columns
-- belong to the sync: their guards let only the sync role write them (no
-- setting, no trigger depth opens them). Whoever switches user triggers
-- off, or alters the table, bypasses them: drift checks are there for that.

CREATE TABLE economy.attachments (
    name text PRIMARY KEY
    CONSTRAINT attachments_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    ledger regclass NOT NULL UNIQUE,
    wallet regclass NOT NULL,
    profile regclass,
    ledger_wallet_column name NOT NULL,
    amount_column name NOT NULL,
    wallet_key_column name NOT NULL,
    wallet_balance_column name NOT NULL,
    wallet_earnings_column name,
    wallet_owner_column name,
    profile_key_column name,
    profile_balance_column name,
    profile_earnings_column name,
    earning text NOT NULL,
    balance_after_column name,
    attached_at timestamptz NOT NULL DEFAULT now(),
    -- each mapped column's number in its table (attnum), by argument name:
    -- economy.reattach follows a renamed column through it
    column_numbers jsonb,
    -- the role that owns the attachment's generated functions (economy.sync_role)
    sync_role name UNIQUE,
    -- what a write of a cached column by anyone but the sync gets: kept as it
    -- was, or refused (economy.render_guard)
    guard text NOT NULL DEFAULT 'keep' CONSTRAINT attachments_guard CHECK (guard IN ('keep', 'refuse')),
    -- the wallet's overdraft limit: an expression over the wallet row (NULL
    -- result: unlimited); NULL: no rule
    overdraft_limit text,
    -- the ledger's time of entry, for economy.balance_at
    created_at_column name,
    -- the ledger's integer id with a sequence (its primary key by default),
    -- which the ledger checkpoint counts in; NULL: no checkpoint
    id_column name,
    -- the wallet column that caches the sum of its holds in status 'held'
    -- (economy.hold(…, attachment => N)); NULL: no holds
    held_column name,
    -- the ledger columns a captured hold's debit writes its kind and memo to
    -- (NULL: none)
    kind_column name,
    memo_column name
);

-- The package's own tables are the first attachment: every function takes
-- attachment => 'economy' (as NULL) for them. Their sync is the static code
-- of 20_functions.sql and 30_triggers.sql, not generated; this row describes
-- them (its earning text is the rule economy.earned applies).
INSERT INTO economy.attachments (
    name, ledger, wallet, profile, ledger_wallet_column, amount_column, wallet_key_column,
    wallet_balance_column, wallet_owner_column, profile_key_column, profile_balance_column,
    profile_earnings_column, earning, balance_after_column, held_column, kind_column, memo_column
)
VALUES (
    'economy', 'economy.transaction', 'economy.wallet', 'economy.profile', 'wallet_id',
    'amount', 'id', 'balance', 'user_id', 'user_id', 'balance', 'lifetime_earnings',
    'kind IN (SELECT k.kind FROM economy.transaction_kind k WHERE k.is_earning)', 'balance_after',
    'held', 'kind', 'memo'
);

-- Whether an attachment argument names the package's own tables.
CREATE FUNCTION economy.own_tables(attachment text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT attachment IS NULL OR attachment = 'economy';
$$;

-- Hot wallets of attachments (economy.set_hot(…, attachment => N)): the app's
-- wallet table has no column of ours, so they are listed here. A credit to a
-- hot wallet holds KEY SHARE on its row here while in flight; set_hot(false)
-- deletes the row, so it waits for them.
CREATE TABLE economy.attached_hot_wallet (
    attachment text REFERENCES economy.attachments ON DELETE CASCADE,
    wallet_id bigint,
    PRIMARY KEY (attachment, wallet_id),
    -- the attachment's sync role, which wrote the row (row level security)
    sync_role name NOT NULL DEFAULT current_user
);

-- Credits to attached hot wallets, not folded into the app's cached columns
-- yet: the exact figures are the cached ones plus the sum of the wallet's
-- rows here. Kept as running sums, so that summing them stays cheap however
-- many credits are parked (the overflow guard does it for every credit): a
-- credit adds to a row of its wallet that no other transaction holds, or
-- starts one (economy.park_attached_credit), so a wallet has about as many
-- rows as it had credits in flight at once; `credits` counts them. A fold
-- (under the wallet's lock, by a debit, economy.fold_hot_wallets(attachment
-- => N) or a real reconcile) adds what it took, negated, to the wallet's one
-- fold row: it never waits for a credit in flight.
CREATE TABLE economy.attached_hot_credit (
    attachment text NOT NULL,
    wallet_id bigint NOT NULL,
    amount numeric NOT NULL,
    earnings numeric NOT NULL,
    sync_role name NOT NULL DEFAULT current_user,
    credits bigint NOT NULL DEFAULT 1,
    folds boolean NOT NULL DEFAULT false
);

CREATE INDEX attached_hot_credit_wallet ON economy.attached_hot_credit (attachment, wallet_id);

CREATE UNIQUE INDEX attached_hot_credit_fold ON economy.attached_hot_credit (attachment, wallet_id)
WHERE folds;

-- Each attachment's sync role reads and writes its own rows of both, no
-- other attachment's (the installer, their owner, is not bound by this);
-- the package roles read them all (40_roles.sql). A row names the role that
-- wrote it, so that reading needs no lookup (a credit to a hot wallet reads
-- one per insert); writing checks that it is its attachment's.
ALTER TABLE economy.attached_hot_wallet ENABLE ROW LEVEL SECURITY;
ALTER TABLE economy.attached_hot_credit ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_attachment ON economy.attached_hot_wallet
USING (sync_role = current_user)
WITH CHECK (
    sync_role = current_user
    AND attachment = (SELECT a.name FROM economy.attachments a WHERE a.sync_role = current_user)
);

CREATE POLICY own_attachment ON economy.attached_hot_credit
USING (sync_role = current_user)
WITH CHECK (
    sync_role = current_user
    AND attachment = (SELECT a.name FROM economy.attachments a WHERE a.sync_role = current_user)
);

-- The ledger checkpoint of each attachment (economy.checkpoint_ledger(attachment
-- => N)), as economy.ledger_horizon and economy.ledger_checkpoint are the
-- package's: per-wallet sums of the ledger's entries with id <=
-- checkpointed_up_to, so that a drift check sums only the newer ones. An app's
-- ledger may UPDATE and DELETE old entries, and insert ids of its choosing:
-- the sync keeps the sums exact (economy.correct_attached_checkpoint). A
-- drift check trusts them only while the ledger is as DDL left it at the last
-- advance (ledger_state): switching the sync off, or any other change of the
-- ledger's triggers, columns, storage or partitions, voids the checkpoint
-- until the next advance rebuilds it.
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

-- Holds on the wallets of attachments (economy.hold(…, attachment => N)), as
-- economy.wallet_hold is for the package's: the wallet's held_column caches
-- the sum of its holds in status 'held'. Kept by the attachment's generated
-- hold functions alone, as its sync role (row level security, as above).
CREATE TABLE economy.attached_hold (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attachment text NOT NULL REFERENCES economy.attachments ON DELETE CASCADE,
    wallet_id bigint NOT NULL,
    -- (NaN is above every number, Infinity is not below itself)
    amount numeric NOT NULL CONSTRAINT attached_hold_amount_positive
    CHECK (amount > 0 AND amount < 'Infinity'),
    status text NOT NULL DEFAULT 'held'
    CONSTRAINT attached_hold_status CHECK (status IN ('held', 'captured', 'released', 'expired')),
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    idempotency_key text,
    memo text,
    -- the id of the debit a capture wrote to the app's ledger
    captured_entry_id bigint,
    sync_role name NOT NULL DEFAULT current_user,
    CONSTRAINT attached_hold_wallet_idempotency_key UNIQUE (attachment, wallet_id, idempotency_key)
);

CREATE INDEX attached_hold_held ON economy.attached_hold (attachment, wallet_id)
WHERE status = 'held';
CREATE INDEX attached_hold_expiry ON economy.attached_hold (attachment, expires_at)
WHERE status = 'held';

ALTER TABLE economy.attached_hold ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_attachment ON economy.attached_hold
USING (sync_role = current_user)
WITH CHECK (
    sync_role = current_user
    AND attachment = (SELECT a.name FROM economy.attachments a WHERE a.sync_role = current_user)
);

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

-- Parks a credit to an attached hot wallet (run as the attachment's sync
-- role): false, and nothing written, when the wallet is not hot. The
-- wallet's hot row is held FOR KEY SHARE, which set_hot(false) and detach
-- wait for; the credit is added to one of the wallet's rows that no other
-- transaction holds, or to a new row when all are held (or when the
-- transaction's snapshot is older than its statement's, where a row updated
-- since could not be locked).
CREATE FUNCTION economy.park_attached_credit(
    attachment text, wallet_id bigint, amount numeric, earnings numeric
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    free tid;
BEGIN
    PERFORM FROM economy.attached_hot_wallet h
    WHERE h.attachment = $1 AND h.wallet_id = $2
    FOR KEY SHARE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        SELECT c.ctid INTO free
        FROM economy.attached_hot_credit c
        WHERE c.attachment = $1 AND c.wallet_id = $2 AND NOT c.folds
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
    END IF;
    IF free IS NULL THEN
        INSERT INTO economy.attached_hot_credit (attachment, wallet_id, amount, earnings)
        VALUES ($1, $2, $3, $4);
    ELSE
        UPDATE economy.attached_hot_credit c
        SET amount = c.amount + $3, earnings = c.earnings + $4, credits = c.credits + 1
        WHERE c.ctid = free;
    END IF;
    RETURN true;
END;
$$;

-- The name of an object generated for an attachment.
CREATE FUNCTION economy.attached_object(attachment text, suffix text)
RETURNS name
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT ('attached_' || attachment || '_' || suffix)::name;
$$;

-- The name of an attachment's sync role. Roles belong to the whole cluster:
-- the name is unique to this database (and to the attachment's name).
CREATE FUNCTION economy.sync_role_name(attachment text)
RETURNS name
LANGUAGE sql
STABLE
AS $$
    SELECT ('economy_sync_' || left(md5(
        (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())::text
        || '/' || attachment), 16))::name;
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
CREATE FUNCTION economy.create_sync_role(a economy.attachments)
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
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON economy.attached_hold TO %I',
        a.sync_role);
    EXECUTE format('GRANT SELECT ON %s TO %I', a.ledger, a.sync_role);
    -- a captured hold's debit, written to the app's ledger
    IF a.held_column IS NOT NULL THEN
        EXECUTE format('GRANT INSERT (%s) ON %s TO %I',
            (SELECT string_agg(quote_ident(c), ', ') FROM unnest(array_remove(ARRAY[
                a.ledger_wallet_column, a.amount_column, a.created_at_column, a.kind_column,
                a.memo_column], NULL)) c),
            a.ledger, a.sync_role);
        FOR cached IN
            SELECT s.seq FROM pg_catalog.pg_attribute att
            CROSS JOIN LATERAL pg_catalog.pg_get_serial_sequence(a.ledger::text, att.attname) s (seq)
            WHERE att.attrelid = a.ledger AND att.attnum > 0 AND NOT att.attisdropped
                AND s.seq IS NOT NULL
        LOOP
            EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', cached.seq, a.sync_role);
        END LOOP;
    END IF;
    FOR cached IN SELECT * FROM economy.cached_tables(a) LOOP
        EXECUTE format('GRANT SELECT, UPDATE (%s) ON %s TO %I',
            (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cached.cached) c),
            cached.tbl, a.sync_role);
    END LOOP;
END;
$$;

-- The attachment's row, or an error that names it.
CREATE FUNCTION economy.attachment(attachment_name text)
RETURNS economy.attachments
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    found_row economy.attachments;
BEGIN
    SELECT * INTO found_row FROM economy.attachments a WHERE a.name = attachment_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no attachment named %', attachment_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM economy.attachments';
    END IF;
    RETURN found_row;
END;
$$;

-- The attachment a hold function names, checked: it keeps holds (a
-- held_column), its ledger has no row level security, and for what writes
-- (hold, capture, release) the login calling may insert into that ledger,
-- to which a capture writes a debit (session_user: the login itself, which
-- nothing run in the session can change; a member of economy_app gets no
-- more on the app's tables than it has).
CREATE FUNCTION economy.holds_attachment(attachment text, writes boolean)
RETURNS economy.attachments
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a economy.attachments := economy.attachment(attachment);
BEGIN
    IF a.held_column IS NULL THEN
        RAISE EXCEPTION 'attachment % keeps no holds: attach it with held_column', a.name
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- there a login's rights are per row: which wallets it may act on, the
    -- package cannot tell
    IF writes AND (SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = a.ledger) THEN
        RAISE EXCEPTION 'attachment %: no holds on a ledger with row level security (%)',
            a.name, a.ledger
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF writes AND NOT has_table_privilege(session_user, a.ledger, 'INSERT') THEN
        RAISE EXCEPTION 'holds on attachment % are for logins that may insert into %',
            a.name, a.ledger
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN a;
END;
$$;

-- A column's type; NULL when the table has no such column.
CREATE FUNCTION economy.column_type(tbl regclass, col name)
RETURNS regtype
LANGUAGE sql
STABLE
AS $$
    SELECT a.atttypid::regtype
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
$$;

-- Refuses a column that is missing or whose type is not one of `types`.
CREATE FUNCTION economy.check_column(tbl regclass, col name, purpose text, types regtype[])
RETURNS regtype
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    found_type regtype := economy.column_type(tbl, col);
BEGIN
    IF found_type IS NULL THEN
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

-- Refuses an expression text (`what`: the argument of attach that gave it)
-- that is not one expression over the columns of `tbl`, of the type
-- `result` asks: boolean (the earning rule) or numeric (an overdraft limit).
-- It may hold no backslash and no dollar sign anywhere (so no escape string
-- can hide a quote from the scan below, and no dollar quote can end the
-- templates' own), and outside its string literals and quoted names no
-- statement separator or comment, and its parentheses must balance: wrapped
-- in parentheses it is then one expression and nothing more. Only then is it
-- prepared, in a SELECT that needs its type, which checks its names; nothing
-- is run.
CREATE FUNCTION economy.check_expression(tbl regclass, expression text, what text, result text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    bare text := regexp_replace(expression, '''[^'']*''|"[^"]*"', '', 'g');
    depth integer := 0;
    ch text;
BEGIN
    IF expression IS NULL OR btrim(expression) = '' OR expression ~ '[$\\]'
        OR bare ~ ';' OR bare LIKE '%--%' OR bare LIKE '%/*%' THEN
        RAISE EXCEPTION '% must be one % expression over the columns of %: %',
            what, result, tbl, expression
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH ch IN ARRAY regexp_split_to_array(bare, '') LOOP
        depth := depth + CASE ch WHEN '(' THEN 1 WHEN ')' THEN -1 ELSE 0 END;
        EXIT WHEN depth < 0;
    END LOOP;
    IF depth <> 0 THEN
        RAISE EXCEPTION '% has unbalanced parentheses: %', what, expression
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        -- WHERE takes a boolean only (not merely one castable to it)
        EXECUTE format(CASE result
            WHEN 'boolean' THEN 'PREPARE economy_check_expression AS SELECT FROM %1$s WHERE (%2$s)'
            -- a number, not merely one castable from (text would be)
            ELSE 'PREPARE economy_check_expression AS SELECT (%2$s) + 0::numeric FROM %1$s'
        END, tbl, expression);
        DEALLOCATE economy_check_expression;
    EXCEPTION
        WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
            OR ambiguous_column OR undefined_table OR cannot_coerce THEN
            RAISE EXCEPTION '% is not a % expression over %: % (%)',
                what, result, tbl, expression, SQLERRM
                USING ERRCODE = 'invalid_parameter_value';
    END;
END;
$$;

-- `alias.column`, or NULL where the attachment has no such column.
CREATE FUNCTION economy.render_column(alias text, col name)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN col IS NULL THEN 'NULL' ELSE format('%s.%I', alias, col) END;
$$;

-- One `column = …` item of a SET list (template: %1$I is the column), or
-- nothing where the attachment has no such column.
CREATE FUNCTION economy.render_set(template text, col name)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN col IS NOT NULL THEN format(template, col) END;
$$;

-- The SET list adding amount / earnings to the cached columns present.
CREATE FUNCTION economy.render_additions(
    alias text, balance_column name, earnings_column name, amount text, earnings text
)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT concat_ws(', ',
        economy.render_set(format('%%1$I = %s.%%1$I + %s', alias, amount), balance_column),
        economy.render_set(format('%%1$I = %s.%%1$I + %s', alias, earnings), earnings_column));
$$;

-- The type of a cached column when it is bounded (an integer, or a numeric
-- with a precision), as SQL text; NULL when it is not (or no column).
CREATE FUNCTION economy.bounded_type(tbl regclass, col name)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT pg_catalog.format_type(att.atttypid, att.atttypmod)
    FROM pg_catalog.pg_attribute att
    WHERE att.attrelid = tbl AND att.attname = col
        AND (att.atttypid IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
            OR (att.atttypid = 'numeric'::regtype AND att.atttypmod >= 0));
$$;

-- Template part: a cast for each bounded cached column of `tbl` (alias
-- `alias`; its balance and earnings columns) of its figure plus the sum of
-- the parked rows `c`, comma-separated; NULL when neither is bounded.
CREATE FUNCTION economy.render_fit_casts(
    alias text, tbl regclass, balance_column name, earnings_column name
)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT string_agg(
        format('(%s.%I + coalesce(sum(c.%s), 0))::%s', alias, f.col, f.part, f.type), ', ')
    FROM (
        VALUES
        (balance_column, 'amount', economy.bounded_type(tbl, balance_column)),
        (earnings_column, 'earnings', economy.bounded_type(tbl, earnings_column))
    ) f (col, part, type)
    WHERE f.type IS NOT NULL;
$$;

-- Template parts: a boolean expression over the wallet row `w` (the profile
-- row `p`) that fails with numeric_value_out_of_range when its cached
-- figures plus what is parked for it (for the profile: on every hot wallet
-- of its owner) would not fit their bounded columns; a fold could never
-- write them. NULL when no cached column of the table is bounded. Parked
-- credits still in flight elsewhere are not seen.
CREATE FUNCTION economy.render_wallet_fit(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT format('(SELECT ROW(%s) IS NOT NULL FROM economy.attached_hot_credit c'
        ' WHERE c.attachment = %L AND c.wallet_id = w.%I)',
        casts, a.name, a.wallet_key_column)
    FROM economy.render_fit_casts(
        'w', a.wallet, a.wallet_balance_column, a.wallet_earnings_column) casts
    WHERE casts IS NOT NULL;
$$;

CREATE FUNCTION economy.render_profile_fit(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT format('CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h'
        ' JOIN %1$s ow ON ow.%2$I = h.wallet_id WHERE h.attachment = %3$L AND ow.%4$I = p.%5$I)'
        ' THEN (SELECT ROW(%6$s) IS NOT NULL FROM economy.attached_hot_wallet h'
        ' JOIN %1$s ow ON ow.%2$I = h.wallet_id JOIN economy.attached_hot_credit c'
        ' ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id'
        ' WHERE h.attachment = %3$L AND ow.%4$I = p.%5$I) ELSE true END',
        a.wallet, a.wallet_key_column, a.name, a.wallet_owner_column, a.profile_key_column,
        casts)
    FROM economy.render_fit_casts(
        'p', a.profile, a.profile_balance_column, a.profile_earnings_column) casts
    WHERE a.profile IS NOT NULL AND casts IS NOT NULL;
$$;

-- Template part: adds the (owner key, amount, earnings) rows of `source` to
-- the owners' profiles (the keys are also in the array sync_owners; NULL for
-- an ownerless wallet), locked first in ascending key order when there are
-- several, each checked against what its owner has parked (render_profile_fit).
-- Empty for an attachment without profiles.
CREATE FUNCTION economy.render_profile_update(a economy.attachments, source text)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT CASE WHEN a.profile IS NOT NULL THEN format(
    $template$
    IF cardinality(array_remove(sync_owners, NULL)) > 1 THEN
        PERFORM FROM %1$s p WHERE p.%2$I = ANY (sync_owners) ORDER BY p.%2$I FOR NO KEY UPDATE;
    END IF;
    <<profiles>>
    DECLARE
        updated bigint;
    BEGIN
        WITH updated AS (
            UPDATE %1$s p SET %3$s
            FROM (
                SELECT d.owner_key, sum(d.amount) AS amount, sum(d.earnings) AS earnings
                FROM %4$s AS d (owner_key, amount, earnings)
                GROUP BY d.owner_key
            ) d
            WHERE p.%2$I = d.owner_key
            RETURNING %5$s
        )
        SELECT count(*) INTO profiles.updated FROM updated;
    END;$template$,
    a.profile,
    a.profile_key_column,
    economy.render_additions(
        'p', a.profile_balance_column, a.profile_earnings_column, 'd.amount', 'd.earnings'
    ),
    source,
    coalesce(economy.render_profile_fit(a), 'true')
) ELSE '' END;
$render$;

-- The app tables whose columns an attachment caches, wallet then profile:
-- each with those columns (all, then the balance's and the earnings') and
-- the name of the guard function that keeps them.
CREATE FUNCTION economy.cached_tables(a economy.attachments)
RETURNS TABLE (
    tbl regclass, cached name[], guard name, balance_column name, earnings_column name
)
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT a.wallet,
        array_remove(
            ARRAY[a.wallet_balance_column, a.wallet_earnings_column, a.held_column], NULL),
        economy.attached_object(a.name, 'guard_wallet'),
        a.wallet_balance_column, a.wallet_earnings_column
    UNION ALL
    SELECT a.profile,
        array_remove(ARRAY[a.profile_balance_column, a.profile_earnings_column], NULL),
        economy.attached_object(a.name, 'guard_profile'),
        a.profile_balance_column, a.profile_earnings_column
    WHERE a.profile IS NOT NULL;
$$;

-- The ledger columns the `earning` expression reads, in column order: found
-- through the dependencies of a temporary view of it (nothing is run).
CREATE FUNCTION economy.earning_columns(a economy.attachments)
RETURNS name[]
LANGUAGE plpgsql
AS $$
DECLARE
    found_columns name[];
BEGIN
    EXECUTE format('CREATE TEMPORARY VIEW economy_earning_columns AS SELECT (%s) FROM %s',
        a.earning, a.ledger);
    SELECT coalesce(array_agg(att.attname ORDER BY att.attnum), '{}') INTO found_columns
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_catalog.pg_attribute att ON att.attrelid = d.refobjid AND att.attnum = d.refobjsubid
    WHERE rw.ev_class = 'pg_temp.economy_earning_columns'::regclass
        AND d.refobjid = a.ledger AND d.refobjsubid > 0;
    DROP VIEW pg_temp.economy_earning_columns;
    RETURN found_columns;
END;
$$;

-- Template: the earning rule of one ledger row, as a function of the columns
-- it reads (economy.earning_columns), each a parameter of its name: the
-- `earning` expression sees them and nothing of the trigger's scope, so a
-- column may have any name (tg_op, sync_amount, …). A plain SQL function,
-- so that the planner can inline it into the row trigger's expression.
CREATE FUNCTION economy.render_earning_function(a economy.attachments)
RETURNS text
LANGUAGE sql
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(%2$s)
RETURNS boolean
LANGUAGE sql
AS $fn$
    SELECT coalesce((%3$s), false);
$fn$
$template$,
    economy.attached_object(a.name, 'earns'),
    (SELECT string_agg(format('%I %s', att.attname,
            pg_catalog.format_type(att.atttypid, att.atttypmod)), ', ' ORDER BY att.attnum)
        FROM pg_catalog.pg_attribute att
        WHERE att.attrelid = a.ledger AND att.attname = ANY (economy.earning_columns(a))),
    a.earning
);
$render$;

-- Template part: whether the ledger row `source` (NEW or OLD) is an earning:
-- a call of the attachment's earning function with the row's columns.
CREATE FUNCTION economy.render_earning(a economy.attachments, source text)
RETURNS text
LANGUAGE sql
AS $$
    SELECT format('economy.%I(%s)', economy.attached_object(a.name, 'earns'),
        (SELECT string_agg(format('%s.%I', source, c), ', ')
            FROM unnest(economy.earning_columns(a)) c));
$$;

-- Template part: a boolean expression, true when the amount `amount` cannot
-- be cached exactly: NULL, or (a numeric ledger) NaN, an infinity, or more
-- decimals than a cached column of a numeric type with a scale holds. Such
-- an entry is refused, nothing written: never rounded. (A sum too large
-- for its column fails when it is written.)
CREATE FUNCTION economy.render_inexact(a economy.attachments, amount text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT concat_ws(' OR ', format('%s IS NULL', amount),
        CASE WHEN economy.column_type(a.ledger, a.amount_column) = 'numeric'::regtype
            THEN format('%s IN (''NaN'', ''Infinity'', ''-Infinity'')', amount) END,
        (SELECT format('min_scale(%s) > %s', amount, min((att.atttypmod - 4) & 65535))
            FROM (
                SELECT t.tbl, unnest(t.cached) AS col FROM economy.cached_tables(a) t
                UNION ALL
                SELECT a.ledger, a.balance_after_column WHERE a.balance_after_column IS NOT NULL
            ) c
            JOIN pg_catalog.pg_attribute att ON att.attrelid = c.tbl AND att.attname = c.col
            WHERE att.atttypid = 'numeric'::regtype AND att.atttypmod >= 0
            HAVING count(*) > 0));
$$;

-- Template part: refuses a parked credit to the wallets `wallet_keys` after
-- which their figures or their owners' would not fit (the two above).
CREATE FUNCTION economy.render_parked_fit(a economy.attachments, wallet_keys text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN fits <> '' THEN format(
        $template$PERFORM %1$s
    FROM %2$s w%3$s
    WHERE w.%4$I = ANY (%5$s);$template$,
        fits,
        a.wallet,
        CASE WHEN a.profile IS NOT NULL THEN format(E'\n    LEFT JOIN %s p ON p.%I = w.%I',
            a.profile, a.profile_key_column, a.wallet_owner_column) END,
        a.wallet_key_column,
        wallet_keys
    ) ELSE '' END
    FROM concat_ws(', ', economy.render_wallet_fit(a), economy.render_profile_fit(a)) fits;
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

-- Template parts: the wallet's overdraft limit less what it holds, as a
-- numeric expression over the wallet row `w` (in an UPDATE's RETURNING of
-- it, or a query of it alone): a debit or a hold is refused below its
-- negation, so that the available amount (balance - held) stays at or above
-- -limit; a held sum made NULL behind the sync's back refuses them all (it
-- is NOT NULL at attach). Then the check of a debit against it.
CREATE FUNCTION economy.render_limit(a economy.attachments)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN a.overdraft_limit IS NULL THEN 'NULL::numeric'
        WHEN a.held_column IS NULL THEN format('(%s)::numeric', a.overdraft_limit)
        ELSE format('(%s)::numeric - coalesce(w.%I::numeric, ''Infinity'')', a.overdraft_limit,
            a.held_column) END;
$$;

CREATE FUNCTION economy.render_limit_check(a economy.attachments, amount text)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN a.overdraft_limit IS NOT NULL THEN format(
        $check$IF %1$s < 0 AND sync_balance < -sync_limit THEN
            RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < %%',
                sync_wallet, sync_balance, -sync_limit
                USING ERRCODE = 'check_violation';
        END IF;$check$, amount) ELSE '' END;
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
CREATE FUNCTION economy.insert_sync(a economy.attachments)
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

-- Template part: one entry's amount (sync_amount, sync_earned) added to its
-- wallet's owner's profile (sync_owner), checked to fit with what the owner's
-- hot wallets have parked: only where the attachment has a hot wallet (the
-- check's joins, set up for every row, cost a single-row insert about a
-- fifth of its time).
CREATE FUNCTION economy.render_owner_update(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE WHEN a.profile IS NOT NULL THEN format(
        $profile$IF sync_owner IS NOT NULL THEN
            UPDATE %1$s p SET %2$s WHERE p.%3$I = sync_owner;%4$s
        END IF;$profile$,
        a.profile,
        economy.render_additions(
            'p', a.profile_balance_column, a.profile_earnings_column,
            'sync_amount', 'sync_earned'
        ),
        a.profile_key_column,
        (SELECT format($fit$
            IF EXISTS (SELECT FROM economy.attached_hot_wallet h WHERE h.attachment = %1$L) THEN
                SELECT %2$s INTO sync_fits FROM %3$s p WHERE p.%4$I = sync_owner;
            END IF;$fit$, a.name, fit, a.profile, a.profile_key_column)
            FROM economy.render_profile_fit(a) fit WHERE fit IS NOT NULL)
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
CREATE FUNCTION economy.render_sync(a economy.attachments)
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
        RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < %%',
            sync_refused.wallet_key, sync_refused.running, -sync_refused.overdraft
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
                    RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < %%',
                        sync_wallet, sync_balance, -sync_limit
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
        RAISE EXCEPTION 'wallet %% would go below its overdraft limit: balance %% < %%',
            sync_refused.sync_wallet_key, sync_refused.running,
            -sync_refused.overdraft
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

-- Template: a wallet given to another owner takes its ledger figures from the
-- old owner's profile to the new one's.
CREATE FUNCTION economy.render_move(a economy.attachments)
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

-- Template: the guard of a table's cached columns (the wallet's or the
-- profile's), run for every write that is not the sync role's. An UPDATE
-- that would change a cached column keeps it as it is, the rest of the row
-- saved (guard 'keep': a stale full-row save of an ORM), or is refused
-- (guard 'refuse'). An INSERT gets the figures its ledger gives the new row
-- (zero for a wallet without entries) or, under 'refuse', is refused when it
-- names others.
CREATE FUNCTION economy.render_guard(a economy.attachments, tbl regclass)
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
    sync_held numeric;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        %2$s
        RETURN NEW;
    END IF;
    -- the ledger's figures for the new row (and its holds')
    SELECT coalesce(sum(r.%3$I), 0), coalesce(sum(r.%3$I) FILTER (WHERE %4$s), 0)
    INTO sync_balance, sync_earnings
    FROM %5$s AS r
    WHERE %6$s;%8$s
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
            economy.render_set('NEW.%1$I := sync_earnings;', k.earnings_column),
            economy.render_set('NEW.%1$I := sync_held;', held.col))
        ELSE format(
            'IF %s THEN' || E'\n        '
            || 'RAISE EXCEPTION ''%%: a new row''''s %% must be its ledger''''s figures'','
            ' TG_TABLE_NAME, %L USING ERRCODE = ''check_violation'';' || E'\n    END IF;',
            concat_ws(' OR ',
                economy.render_set('NEW.%1$I IS DISTINCT FROM sync_balance', k.balance_column),
                economy.render_set('NEW.%1$I IS DISTINCT FROM sync_earnings', k.earnings_column),
                economy.render_set('NEW.%1$I IS DISTINCT FROM sync_held', held.col)),
            array_to_string(k.cached, ', '))
    END,
    CASE WHEN held.col IS NOT NULL THEN format(
        E'\n    SELECT coalesce(sum(h.amount), 0) INTO sync_held FROM economy.attached_hold h'
        || E'\n    WHERE h.attachment = %L AND h.wallet_id = NEW.%I AND h.status = ''held'';',
        a.name, a.wallet_key_column) ELSE '' END
)
FROM economy.cached_tables(a) k
-- the held sum is the wallet's
CROSS JOIN LATERAL (SELECT CASE WHEN k.tbl = a.wallet THEN a.held_column END AS col) held
WHERE k.tbl = render_guard.tbl;
$render$;

-- Template: the drift of an attachment, with balance_drift's columns. A
-- profile row names its wallet when the owner has exactly one.
CREATE FUNCTION economy.render_drift(a economy.attachments)
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

    holds AS (
        SELECT h.wallet_id, sum(h.amount) AS held
        FROM economy.attached_hold h
        WHERE h.attachment = %15$L AND h.status = 'held'
        GROUP BY h.wallet_id
    ),

    -- a hot wallet's cached figures with its parked credits: the exact ones
    wallets AS (
        SELECT w.%2$I::bigint AS wallet_id, %3$s::bigint AS owner_id,
            w.%4$I::numeric + coalesce(pk.balance, 0) AS cached_balance,
            %5$s::numeric + coalesce(pk.earnings, 0) AS cached_earnings,
            coalesce(pk.balance, 0) AS parked_balance,
            coalesce(pk.earnings, 0) AS parked_earnings,
            %18$s::numeric AS cached_held, coalesce(hd.held, 0) AS holds_held
        FROM %6$s w
        LEFT JOIN parked pk ON pk.wallet_id = w.%2$I
        LEFT JOIN holds hd ON hd.wallet_id = w.%2$I
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
        SELECT pw.owner_id, pw.wallet_id, 3, 'wallet.held', pw.cached_held, pw.holds_held
        FROM per_wallet pw
        WHERE %19$L
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 4, 'profile.balance',
            pp.cached_balance, pp.ledger_balance
        FROM per_profile pp
        WHERE %13$L
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 5, 'profile.lifetime_earnings',
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
            a.id_column) ELSE '' END,
    economy.render_column('w', a.held_column),
    a.held_column IS NOT NULL
);
$render$;

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

-- Template: reconcile an attachment as reconcile_economy does the package's
-- tables: lock the drifted owners' wallets and the drifted ownerless ones
-- (ascending keys), then their profiles, fold the parked credits of the hot
-- ones, measure again with a snapshot taken after the locks, and set each
-- drifted cache to its ledger value (less the credits parked since).
CREATE FUNCTION economy.render_reconcile(a economy.attachments)
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
    repaired jsonb;
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
            SELECT c.wallet_id FROM economy.attached_hot_credit c
            WHERE c.attachment = %9$L
            GROUP BY c.wallet_id
            HAVING sum(c.credits) > 0
        )
    ) h
    WHERE user_ids IS NULL OR h.owner_id = ANY (user_ids)
        OR (h.owner_id IS NULL AND array_position(user_ids, NULL) IS NOT NULL);

    locked_wallets := ARRAY(
        SELECT w.%5$I::bigint FROM %3$s w
        WHERE %4$s = ANY (drifted_owners) OR w.%5$I = ANY (drifted_wallets)
    );
    PERFORM economy.lock_rows(%11$s, %5$L, locked_wallets, %6$s, drifted_owners);
    PERFORM economy.%10$I(locked_wallets);

    -- A new statement, so a new snapshot: taken after the locks.
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
        LEFT JOIN drift h ON h.wallet_id = u.wallet_id AND h.field = 'wallet.held'
        LEFT JOIN parked pk ON pk.wallet_id = u.wallet_id
        WHERE w.%5$I = u.wallet_id
    ),

    profile_fix AS (%8$s)

    SELECT coalesce(jsonb_agg(to_jsonb(d)), '[]') INTO repaired
    FROM drift d;

    -- fixed: equal to the ledger now (a value its column cannot hold is not)
    RETURN QUERY
    WITH still AS (
        SELECT d.*
        FROM economy.%2$I(
            drifted_owners
            || CASE WHEN drifted_wallets = '{}' THEN '{}' ELSE ARRAY[NULL::bigint] END
        ) d
    )

    SELECT r.user_id, r.wallet_id, r.field, r.cached_value, r.ledger_value,
        NOT EXISTS (
            SELECT FROM still s
            WHERE s.field = r.field AND s.user_id IS NOT DISTINCT FROM r.user_id
                AND s.wallet_id IS NOT DISTINCT FROM r.wallet_id
        )
    FROM jsonb_to_recordset(repaired) AS r (
        user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric
    );
END;
$fn$
$template$,
    economy.attached_object(a.name, 'reconcile'),
    economy.attached_object(a.name, 'drift'),
    a.wallet,
    economy.render_column('w', a.wallet_owner_column),
    a.wallet_key_column,
    CASE WHEN a.profile IS NULL THEN 'NULL, NULL' ELSE format(
        '%s::regclass, %L', a.profile::oid, a.profile_key_column) END,
    concat_ws(', ',
        economy.render_set(
            '%1$I = coalesce(b.ledger_value - coalesce(pk.balance, 0), w.%1$I)',
            a.wallet_balance_column),
        economy.render_set(
            '%1$I = coalesce(e.ledger_value - coalesce(pk.earnings, 0), w.%1$I)',
            a.wallet_earnings_column),
        economy.render_set('%1$I = coalesce(h.ledger_value, w.%1$I)', a.held_column)),
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
    economy.attached_object(a.name, 'fold'),
    format('%s::regclass', a.wallet::oid)
);
$render$;

-- Template: folds the parked credits of the given hot wallets (all when
-- NULL) into the cached columns; returns how many wallets it folded. Their
-- rows are locked first, in ascending key order; a credit still in flight is
-- not seen and stays parked. What it took is subtracted in the wallet's fold
-- row, so it never waits for a credit's row.
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
    locked bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    locked := ARRAY(
        SELECT w.%2$I::bigint FROM %3$s w
        WHERE w.%2$I IN (
            SELECT c.wallet_id FROM economy.attached_hot_credit c
            WHERE c.attachment = %4$L AND (wallet_ids IS NULL OR c.wallet_id = ANY (wallet_ids))
            GROUP BY c.wallet_id
            HAVING sum(c.credits) > 0
        )
    );
    PERFORM economy.lock_rows(%8$s, %2$L, locked, %9$s);
    WITH per_wallet AS (
        SELECT c.wallet_id, sum(c.amount) AS amount, sum(c.earnings) AS earnings,
            sum(c.credits) AS credits
        FROM economy.attached_hot_credit c
        WHERE c.attachment = %4$L AND c.wallet_id = ANY (locked)
        GROUP BY c.wallet_id
        HAVING sum(c.credits) > 0
    ),

    -- their other rows that no credit holds, merged into the fold row: a
    -- credit in REPEATABLE READ starts a row of its own, this keeps them few
    merged AS (
        DELETE FROM economy.attached_hot_credit c
        WHERE c.ctid IN (
            SELECT m.ctid FROM economy.attached_hot_credit m
            WHERE m.attachment = %4$L AND m.wallet_id IN (SELECT pw.wallet_id FROM per_wallet pw)
                AND NOT m.folds
                AND current_setting('transaction_isolation') = 'read committed'
            FOR UPDATE SKIP LOCKED
        )
        RETURNING c.wallet_id, c.amount, c.earnings, c.credits
    ),

    taken AS (
        INSERT INTO economy.attached_hot_credit AS c
            (attachment, wallet_id, amount, earnings, credits, folds)
        SELECT %4$L, pw.wallet_id, coalesce(m.amount, 0) - pw.amount,
            coalesce(m.earnings, 0) - pw.earnings, coalesce(m.credits, 0) - pw.credits, true
        FROM per_wallet pw
        LEFT JOIN (
            SELECT m.wallet_id, sum(m.amount) AS amount, sum(m.earnings) AS earnings,
                sum(m.credits) AS credits
            FROM merged m
            GROUP BY m.wallet_id
        ) m ON m.wallet_id = pw.wallet_id
        ON CONFLICT (attachment, wallet_id) WHERE folds DO UPDATE
        SET amount = c.amount + excluded.amount, earnings = c.earnings + excluded.earnings,
            credits = c.credits + excluded.credits
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
    economy.render_profile_update(a, 'unnest(sync_owners, sync_amounts, sync_earnings)'),
    format('%s::regclass', a.wallet::oid),
    CASE WHEN a.profile IS NULL THEN 'NULL, NULL, NULL' ELSE format(
        '%s::regclass, %L, ARRAY(SELECT %s::bigint FROM %s w WHERE w.%I = ANY (locked))',
        a.profile::oid, a.profile_key_column, economy.render_column('w', a.wallet_owner_column),
        a.wallet, a.wallet_key_column) END
);
$render$;

-- Template: set_hot(…, attachment => N). Turning a wallet back to normal
-- deletes its row of attached_hot_wallet, so it first waits for the credits
-- in flight (each holds KEY SHARE on that row), then folds them: its parked
-- rows, all zero then, go.
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
        DELETE FROM economy.attached_hot_credit c
        WHERE c.attachment = %4$L AND c.wallet_id = $1;
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
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (
        SELECT w.%2$I::numeric + (
            SELECT coalesce(sum(c.amount), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = %3$L AND c.wallet_id = $1
        )
        FROM %4$s w
        WHERE w.%5$I = $1
    );
END;
$fn$
$template$,
    economy.attached_object(a.name, 'balance'),
    a.wallet_balance_column,
    a.name,
    a.wallet,
    a.wallet_key_column
);
$render$;

-- Template: the ledger's AFTER TRUNCATE trigger: allowed only when the same
-- statement emptied the wallet table too (what Django's flush does); the
-- parked credits go with the wallets, and a profile table left as it was is
-- set to the empty ledger's figures.
CREATE FUNCTION economy.render_truncate(a economy.attachments)
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
    DELETE FROM economy.attached_hold h WHERE h.attachment = %5$L;
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

-- Template: one wallet's owner and ledger totals (for wallet_owner and
-- wallet_ledger_totals); no row for an unknown wallet.
CREATE FUNCTION economy.render_wallet(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(wallet_id bigint)
RETURNS TABLE (owner_key bigint, balance numeric, earnings numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT %2$s::bigint,
        (SELECT coalesce(sum(r.%3$I), 0)::numeric FROM %4$s AS r WHERE r.%5$I = $1),
        (SELECT coalesce(sum(r.%3$I) FILTER (WHERE %6$s), 0)::numeric
            FROM %4$s AS r WHERE r.%5$I = $1)
    FROM %7$s w
    WHERE w.%8$I = $1;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'wallet'),
    economy.render_column('w', a.wallet_owner_column),
    a.amount_column,
    a.ledger,
    a.ledger_wallet_column,
    a.earning,
    a.wallet,
    a.wallet_key_column
);
$render$;

-- Template: balance_at(…, attachment => N): the sum of the wallet's entries
-- made at or before `at` (by created_at_column); NULL for an unknown wallet.
-- None without a created_at_column.
CREATE FUNCTION economy.render_balance_at(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(wallet_id bigint, at timestamptz)
RETURNS numeric
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN (
        SELECT (
            SELECT coalesce(sum(r.%2$I), 0)::numeric FROM %3$s AS r
            WHERE r.%4$I = $1 AND r.%5$I <= $2
        )
        FROM %6$s w
        WHERE w.%7$I = $1
    );
END;
$fn$
$template$,
    economy.attached_object(a.name, 'balance_at'),
    a.amount_column,
    a.ledger,
    a.ledger_wallet_column,
    a.created_at_column,
    a.wallet,
    a.wallet_key_column
)
WHERE a.created_at_column IS NOT NULL;
$render$;

-- Template part: refuses a hold's amount `amount` (`what`) that is not
-- positive, or that the ledger's amount column, the wallet's balance or its
-- held column would not hold exactly (nothing is ever rounded).
CREATE FUNCTION economy.render_hold_amount(a economy.attachments, amount text, what text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT format(
        $part$IF %1$s IS NULL THEN
        RAISE EXCEPTION '%2$s must not be null' USING ERRCODE = 'not_null_violation';
    END IF;
    IF %1$s IN ('NaN', 'Infinity', '-Infinity') OR %1$s <= 0%3$s THEN
        RAISE EXCEPTION '%2$s must be a positive amount that %4$s holds exactly, got %%', %1$s
            USING ERRCODE = 'check_violation';
    END IF;$part$,
        amount, what,
        (SELECT string_agg(format(' OR %1$s::%2$s <> %1$s', amount, t.type), '')
            FROM (
                VALUES
                (economy.bounded_type(a.ledger, a.amount_column)),
                (economy.bounded_type(a.wallet, a.wallet_balance_column)),
                (economy.bounded_type(a.wallet, a.held_column))
            ) t (type)
            WHERE t.type IS NOT NULL),
        a.wallet::text);
$$;

-- Template part: the hold $1 of a capture or release, locked after its
-- wallet (the writers' lock order) into sync_hold, when it is still 'held'
-- (and, for a capture, not past its expiry by the clock: a transaction begun
-- before it expired is refused too).
CREATE FUNCTION economy.render_lock_held(a economy.attachments, for_capture boolean)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT format(
        $part$PERFORM FROM %1$s w
    WHERE w.%2$I = (
        SELECT h.wallet_id FROM economy.attached_hold h WHERE h.attachment = %3$L AND h.id = $1
    )
    FOR NO KEY UPDATE;
    SELECT * INTO sync_hold FROM economy.attached_hold h
    WHERE h.attachment = %3$L AND h.id = $1
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold %% does not exist', $1 USING ERRCODE = 'no_data_found';
    END IF;
    IF sync_hold.status <> 'held' THEN
        RAISE EXCEPTION 'hold %% is %%', $1, sync_hold.status USING ERRCODE = 'check_violation';
    END IF;%4$s$part$,
        a.wallet, a.wallet_key_column, a.name,
        CASE WHEN for_capture THEN $expiry$
    IF sync_hold.expires_at <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'hold % expired at %', $1, sync_hold.expires_at
            USING ERRCODE = 'check_violation';
    END IF;$expiry$ ELSE '' END);
$$;

-- Template: hold(…, attachment => N): sets an amount of the wallet's
-- available amount (balance - held) aside, as economy.hold does for the
-- package's wallets: a hot wallet's parked credits folded first, then under
-- the wallet's lock, refused below -overdraft_limit, or where the held
-- column would not hold the sum (nothing written). Same idempotency key and
-- payload: the same hold. None without a held_column.
CREATE FUNCTION economy.render_hold(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(
    wallet_id bigint, amount numeric, expires_at timestamptz, idempotency_key text, memo text
)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    sync_balance numeric;
    sync_limit numeric;
    placed economy.attached_hold;
BEGIN
    %2$s
    IF EXISTS (
        SELECT FROM economy.attached_hot_wallet h WHERE h.attachment = %3$L AND h.wallet_id = $1
    ) THEN
        PERFORM economy.%4$I(ARRAY[$1]);
    END IF;
    SELECT w.%5$I::numeric, %6$s INTO sync_balance, sync_limit
    FROM %7$s w
    WHERE w.%8$I = $1
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet %% does not exist', $1 USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF $4 IS NOT NULL THEN
        SELECT * INTO placed FROM economy.attached_hold h
        WHERE h.attachment = %3$L AND h.wallet_id = $1 AND h.idempotency_key = $4;
        IF FOUND THEN
            IF placed.amount <> $2 OR placed.expires_at IS DISTINCT FROM $3
                OR placed.memo IS DISTINCT FROM $5 THEN
                RAISE EXCEPTION 'idempotency key %% of wallet %% was used for a different hold (#%%)',
                    $4, $1, placed.id
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(placed));
        END IF;
    END IF;
    IF sync_balance - $2 < -sync_limit THEN
        RAISE EXCEPTION 'wallet %% cannot hold %%: its available amount would go below its'
            ' overdraft limit (balance %%, less what it holds, must stay at or above %%)',
            $1, $2, sync_balance, -sync_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.attached_hold AS h (
        attachment, wallet_id, amount, expires_at, idempotency_key, memo
    )
    VALUES (%3$L, $1, $2, $3, $4, $5)
    RETURNING h.* INTO placed;
    UPDATE %7$s w SET %9$I = w.%9$I + $2 WHERE w.%8$I = $1;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(placed));
END;
$fn$
$template$,
    economy.attached_object(a.name, 'hold'),
    economy.render_hold_amount(a, '$2', 'hold amount'),
    a.name,
    economy.attached_object(a.name, 'fold'),
    a.wallet_balance_column,
    economy.render_limit(a),
    a.wallet,
    a.wallet_key_column,
    a.held_column
)
WHERE a.held_column IS NOT NULL;
$render$;

-- Template: capture_hold(…, attachment => N): the hold released, then one
-- debit of the captured amount (all of it when NULL, never more than held)
-- written to the app's ledger, its kind and memo to kind_column and
-- memo_column where named; the ledger's sync applies it (spending the held
-- amount). Returns it as an economy.transaction row (the ledger's id,
-- created_at and balance_after where it has them).
CREATE FUNCTION economy.render_capture(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
-- the debit's columns and values
WITH c AS (
    SELECT v.position, v.col, v.value
    FROM (
        VALUES
        (1, a.ledger_wallet_column, 'sync_hold.wallet_id'),
        (2, a.amount_column, '-sync_amount'),
        (3, a.created_at_column, 'pg_catalog.now()'),
        (4, a.kind_column, '$3'),
        (5, a.memo_column, 'sync_memo')
    ) v (position, col, value)
    WHERE v.col IS NOT NULL
)

SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(hold_id bigint, amount numeric, kind text, memo text)
RETURNS economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    sync_hold economy.attached_hold;
    sync_amount numeric;
    sync_memo text := coalesce($4, 'capture of hold #' || $1);
    sync_entry record;
BEGIN
    %2$s
    sync_amount := coalesce($2, sync_hold.amount);
    %3$s
    IF sync_amount > sync_hold.amount THEN
        RAISE EXCEPTION 'hold %% holds %%: cannot capture %%', $1, sync_hold.amount, sync_amount
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE economy.attached_hold h SET status = 'captured' WHERE h.id = $1;
    UPDATE %4$s w SET %5$I = w.%5$I - sync_hold.amount WHERE w.%6$I = sync_hold.wallet_id;
    INSERT INTO %7$s AS r (%8$s)
    VALUES (%9$s)
    RETURNING %10$s::bigint AS id, %11$s::timestamptz AS created_at,
        %12$s::numeric AS balance_after, r.%15$I::bigint AS wallet_id, r.%16$I::numeric AS amount
    INTO sync_entry;
    -- as it was written (a trigger of the ledger may change or skip a row)
    IF sync_entry.wallet_id IS DISTINCT FROM sync_hold.wallet_id
        OR sync_entry.amount IS DISTINCT FROM -sync_amount THEN
        RAISE EXCEPTION 'hold %%: its debit of %% to wallet %% was written as %% to wallet %%',
            $1, -sync_amount, sync_hold.wallet_id, sync_entry.amount, sync_entry.wallet_id
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE economy.attached_hold h SET captured_entry_id = sync_entry.id WHERE h.id = $1;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.transaction, pg_catalog.jsonb_build_object(
        'id', sync_entry.id, 'wallet_id', sync_hold.wallet_id, 'amount', -sync_amount,
        'kind', %13$s, 'memo', %14$s, 'created_at', sync_entry.created_at,
        'balance_after', sync_entry.balance_after));
END;
$fn$
$template$,
    economy.attached_object(a.name, 'capture'),
    economy.render_lock_held(a, true),
    economy.render_hold_amount(a, 'sync_amount', 'captured amount'),
    a.wallet,
    a.held_column,
    a.wallet_key_column,
    a.ledger,
    (SELECT string_agg(quote_ident(c.col), ', ' ORDER BY c.position) FROM c),
    (SELECT string_agg(c.value, ', ' ORDER BY c.position) FROM c),
    economy.render_column('r', a.id_column),
    economy.render_column('r', a.created_at_column),
    economy.render_column('r', a.balance_after_column),
    CASE WHEN a.kind_column IS NOT NULL THEN '$3' ELSE 'NULL' END,
    CASE WHEN a.memo_column IS NOT NULL THEN 'sync_memo' ELSE 'NULL' END,
    a.ledger_wallet_column,
    a.amount_column
)
WHERE a.held_column IS NOT NULL;
$render$;

-- Template: release_hold(…, attachment => N): gives a held amount back.
CREATE FUNCTION economy.render_release(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(hold_id bigint)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    sync_hold economy.attached_hold;
BEGIN
    %2$s
    UPDATE economy.attached_hold h SET status = 'released' WHERE h.id = $1
    RETURNING h.* INTO sync_hold;
    UPDATE %3$s w SET %4$I = w.%4$I - sync_hold.amount WHERE w.%5$I = sync_hold.wallet_id;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(sync_hold));
END;
$fn$
$template$,
    economy.attached_object(a.name, 'release'),
    economy.render_lock_held(a, false),
    a.wallet,
    a.held_column,
    a.wallet_key_column
)
WHERE a.held_column IS NOT NULL;
$render$;

-- Template: expire_holds(attachment => N): marks 'expired' every hold past
-- its expiry; returns how many. Their wallets are locked first, as a
-- reconcile locks them (economy.lock_rows: never waiting for one while
-- holding another, so no deadlock with the app's own order).
CREATE FUNCTION economy.render_expire(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
    sync_wallets bigint[];
    sync_expired integer;
BEGIN
    sync_wallets := ARRAY(
        SELECT DISTINCT h.wallet_id FROM economy.attached_hold h
        WHERE h.attachment = %2$L AND h.status = 'held' AND h.expires_at <= pg_catalog.now()
    );
    PERFORM economy.lock_rows(%3$s::regclass, %4$L, sync_wallets);
    WITH expired AS (
        UPDATE economy.attached_hold h SET status = 'expired'
        WHERE h.attachment = %2$L AND h.status = 'held' AND h.expires_at <= pg_catalog.now()
            AND h.wallet_id = ANY (sync_wallets)
        RETURNING h.wallet_id, h.amount
    ),

    per_wallet AS (
        SELECT e.wallet_id, sum(e.amount) AS amount, count(*) AS holds
        FROM expired e
        GROUP BY e.wallet_id
    ),

    updated AS (
        UPDATE %5$s w SET %6$I = w.%6$I - p.amount
        FROM per_wallet p
        WHERE w.%4$I = p.wallet_id
    )

    SELECT coalesce(sum(p.holds), 0) INTO sync_expired FROM per_wallet p;
    RETURN sync_expired;
END;
$fn$
$template$,
    economy.attached_object(a.name, 'expire'),
    a.name,
    a.wallet::oid,
    a.wallet_key_column,
    a.wallet,
    a.held_column
)
WHERE a.held_column IS NOT NULL;
$render$;

-- Template: the ledger entries a drift check of the attachment sums: those
-- newer than its checkpoint while it may be trusted, else all of them
-- (economy.checkpoint_lag). Run as the sync role: the ledger is the app's.
CREATE FUNCTION economy.render_checkpoint_lag(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I()
RETURNS bigint
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    sync_covered bigint := %2$s;
BEGIN
    RETURN (SELECT count(*) FROM %3$s AS r WHERE %4$s);
END;
$fn$
$template$,
    economy.attached_object(a.name, 'checkpoint_lag'),
    CASE WHEN a.id_column IS NOT NULL
        THEN format('economy.trusted_checkpoint(%L)', a.name) ELSE 'NULL' END,
    a.ledger,
    CASE WHEN a.id_column IS NOT NULL
        THEN format('sync_covered IS NULL OR r.%I > sync_covered', a.id_column) ELSE 'true' END
);
$render$;

-- Template: the owners a reconcile walks, in key order after `after`, at
-- most `batch_size` (all when NULL): the profiles' keys, or the wallets'
-- distinct owners when there is no profile table (none without owners).
CREATE FUNCTION economy.render_owners(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $render$
SELECT format(
    $template$
CREATE OR REPLACE FUNCTION economy.%1$I(after bigint, batch_size integer)
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    %2$s
END;
$fn$
$template$,
    economy.attached_object(a.name, 'owners'),
    CASE WHEN a.wallet_owner_column IS NULL THEN 'RETURN;  -- no owners' ELSE format(
        $query$RETURN QUERY
    SELECT DISTINCT t.%1$I::bigint FROM %2$s t
    WHERE t.%1$I IS NOT NULL AND ($1 IS NULL OR t.%1$I > $1)
    ORDER BY 1
    LIMIT $2;$query$,
        coalesce(a.profile_key_column, a.wallet_owner_column),
        coalesce(a.profile, a.wallet)
    ) END
);
$render$;

-- A generated function's text with its first checks: it runs only as the
-- attachment's sync role, its owner (its owner is the only role that could
-- make it SECURITY INVOKER; then it refuses to run, rather than run as a
-- caller such as the installer), and, for a trigger function, only as a
-- trigger of `trigger_table` (not of a table of someone else's choosing).
CREATE FUNCTION economy.run_only_as(
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

-- The functions generated for an attachment, the one list of them (read by
-- create_attached_functions, detach, attachment_sql and doctor): each with
-- its signature (NULL for one not there) and the package role that may call
-- it (NULL: only the triggers).
CREATE FUNCTION economy.attached_functions(attachment text)
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
        ('owners', 'bigint, integer', 'economy_app'),
        ('checkpoint_lag', '', 'economy_app'),
        -- (the hold functions are called through economy.hold and the others
        -- alone, which check who calls)
        ('hold', 'bigint, numeric, timestamptz, text, text', NULL),
        ('capture', 'bigint, numeric, text, text', NULL),
        ('release', 'bigint', NULL),
        ('expire', '', NULL)
    ) AS f (suffix, arguments, granted_to);
$$;

-- The triggers an attachment puts on the app's tables, the one list of them
-- (read by create_attached_functions, detach, attachment_sql and doctor):
-- name, table and definition.
CREATE FUNCTION economy.attached_triggers(a economy.attachments)
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
CREATE FUNCTION economy.create_attached_functions(a economy.attachments)
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
            (economy.render_checkpoint_lag(a), NULL),
            (economy.render_hold(a), NULL),
            (economy.render_capture(a), NULL),
            (economy.render_release(a), NULL),
            (economy.render_expire(a), NULL),
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
CREATE FUNCTION economy.mapped_columns(a economy.attachments)
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
        ('id_column', a.ledger, a.id_column),
        ('held_column', a.wallet, a.held_column),
        ('kind_column', a.ledger, a.kind_column),
        ('memo_column', a.ledger, a.memo_column)
    ) AS m (argument, tbl, col)
    WHERE m.col IS NOT NULL;
$$;

-- Checks an attachment's tables, columns, types and earning expression
-- against the catalogs, and returns it with what they say filled in (the
-- wallet's key, each column's number). Nothing is created.
CREATE FUNCTION economy.check_attachment(a economy.attachments)
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
    IF a.held_column IS NOT NULL THEN
        PERFORM economy.check_column(a.wallet, a.held_column, 'held_column', money_types);
        -- (a NULL held sum would be no sum: see render_limit)
        IF NOT (SELECT att.attnotnull FROM pg_catalog.pg_attribute att
            WHERE att.attrelid = a.wallet AND att.attname = a.held_column) THEN
            RAISE EXCEPTION 'held_column %.% must be NOT NULL', a.wallet, a.held_column
                USING ERRCODE = 'invalid_table_definition';
        END IF;
        IF a.held_column IN (a.wallet_key_column, a.wallet_balance_column,
            a.wallet_earnings_column, a.wallet_owner_column) THEN
            RAISE EXCEPTION 'held_column % is mapped already', a.held_column
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF a.kind_column = a.memo_column THEN
        RAISE EXCEPTION 'kind_column and memo_column must be two columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF a.kind_column IS NOT NULL THEN
        PERFORM economy.check_column(a.ledger, a.kind_column, 'kind_column',
            ARRAY['text', 'character varying']::regtype[]);
    END IF;
    IF a.memo_column IS NOT NULL THEN
        PERFORM economy.check_column(a.ledger, a.memo_column, 'memo_column',
            ARRAY['text', 'character varying']::regtype[]);
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
    id_column name DEFAULT NULL,
    held_column name DEFAULT NULL,
    kind_column name DEFAULT NULL,
    memo_column name DEFAULT NULL
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
    a.held_column := attach.held_column;
    a.kind_column := attach.kind_column;
    a.memo_column := attach.memo_column;
    a.attached_at := now();
    a.sync_role := economy.sync_role_name(a.name);
    a := economy.check_attachment(a);
    INSERT INTO economy.attachments VALUES (a.*);
    INSERT INTO economy.attached_ledger_horizon (attachment, sync_role) VALUES (a.name, a.sync_role);
    PERFORM economy.create_attached_functions(a);
    RETURN a;
END;
$$;

-- Regenerates an attachment after the app changed its tables (a column
-- renamed, added, dropped or of a new type): its settings, hot wallets,
-- parked credits and holds are kept, a renamed mapped column is followed (by
-- its number), and everything is checked again as attach does. `earning`,
-- when given, replaces the earning expression (one that named a renamed
-- column); `held_column`, `kind_column` and `memo_column`, when given, name
-- those columns (holds for an attachment made without them).
CREATE FUNCTION economy.reattach(
    name text,
    earning text DEFAULT NULL,
    held_column name DEFAULT NULL,
    kind_column name DEFAULT NULL,
    memo_column name DEFAULT NULL
)
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
    a.held_column := coalesce(reattach.held_column, a.held_column);
    a.kind_column := coalesce(reattach.kind_column, a.kind_column);
    a.memo_column := coalesce(reattach.memo_column, a.memo_column);
    a := economy.check_attachment(a);
    UPDATE economy.attachments x SET column_numbers = a.column_numbers,
        ledger_wallet_column = a.ledger_wallet_column, amount_column = a.amount_column,
        balance_after_column = a.balance_after_column, wallet_key_column = a.wallet_key_column,
        wallet_balance_column = a.wallet_balance_column,
        wallet_earnings_column = a.wallet_earnings_column,
        wallet_owner_column = a.wallet_owner_column, profile_key_column = a.profile_key_column,
        profile_balance_column = a.profile_balance_column,
        profile_earnings_column = a.profile_earnings_column,
        created_at_column = a.created_at_column, id_column = a.id_column, earning = a.earning,
        held_column = a.held_column, kind_column = a.kind_column, memo_column = a.memo_column
    WHERE x.name = a.name;
    PERFORM economy.create_attached_functions(a);
    RETURN a;
END;
$$;

-- Removes everything attach() created; the app's tables and data stay.
CREATE FUNCTION economy.detach(name text)
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

-- The SQL an attachment runs when the app writes its tables: the triggers on
-- them and the functions they call, as the database has them (for the
-- package's own tables, their triggers and trigger functions).
CREATE FUNCTION economy.attachment_sql(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    a economy.attachments := economy.attachment(attachment_sql.name);
    rendered text;
BEGIN
    WITH triggers AS (
        SELECT t.oid, t.tgname, t.tgfoid
        FROM pg_catalog.pg_trigger t
        JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
        WHERE t.tgrelid IN (a.ledger, a.wallet, a.profile) AND NOT t.tgisinternal
            AND f.pronamespace = 'economy'::regnamespace
    )

    SELECT string_agg(d.definition, E'\n\n' ORDER BY d.position, d.title) INTO rendered
    FROM (
        SELECT 1 AS position, t.tgname::text AS title,
            pg_catalog.pg_get_triggerdef(t.oid, true) || ';' AS definition
        FROM triggers t
        UNION ALL
        SELECT DISTINCT 2, t.tgfoid::regprocedure::text, pg_catalog.pg_get_functiondef(t.tgfoid)
        FROM triggers t
    ) d;
    RETURN rendered;
END;
$$;

-- The owner key of a wallet (NULL for an ownerless one); an unknown wallet
-- is an error.
CREATE FUNCTION economy.wallet_owner(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    settings text;
    owner_key bigint;
    found_rows bigint;
BEGIN
    IF economy.own_tables(attachment) THEN
        SELECT w.user_id INTO owner_key FROM economy.wallet w WHERE w.id = wallet_owner.wallet_id;
    ELSE
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT w.owner_key FROM economy.%I($1) w',
            economy.attached_object((economy.attachment(attachment)).name, 'wallet'))
        INTO owner_key
        USING wallet_owner.wallet_id;
    END IF;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF settings IS NOT NULL THEN
        PERFORM economy.refuse_changed_settings(settings);
    END IF;
    IF found_rows = 0 THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_owner.wallet_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN owner_key;
END;
$$;

-- The owners whose caches a reconcile walks, in key order after `after`, at
-- most `batch_size` of them (all when NULL): the package's users, or an
-- attachment's profiles (its wallets' distinct owners when it has none).
-- Ownerless wallets are named by a NULL in user_ids, not listed here.
CREATE FUNCTION economy.owner_keys(
    attachment text DEFAULT NULL, after bigint DEFAULT NULL, batch_size integer DEFAULT NULL
)
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    settings text;
    a economy.attachments;
BEGIN
    IF economy.own_tables(attachment) THEN
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
    settings := economy.session_settings();  -- before code run for the attachment
    RETURN QUERY EXECUTE format('SELECT * FROM economy.%I($1, $2)',
        economy.attached_object(a.name, 'owners'))
    USING after, batch_size;
    PERFORM economy.refuse_changed_settings(settings);
END;
$$;

-- What the ledger says one wallet's figures are.
CREATE FUNCTION economy.wallet_ledger_totals(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS TABLE (balance numeric, lifetime_earnings numeric)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    settings text;
BEGIN
    PERFORM economy.wallet_owner(wallet_ledger_totals.wallet_id, attachment);  -- known wallet
    IF economy.own_tables(attachment) THEN
        RETURN QUERY
        SELECT coalesce(sum(lt.balance), 0.00), coalesce(sum(lt.lifetime_earnings), 0.00)
        FROM economy.wallet_totals(ARRAY[wallet_ledger_totals.wallet_id]) lt;
        RETURN;
    END IF;
    settings := economy.session_settings();  -- before code run for the attachment
    RETURN QUERY EXECUTE format('SELECT w.balance, w.earnings FROM economy.%I($1) w',
        economy.attached_object((economy.attachment(attachment)).name, 'wallet'))
    USING wallet_ledger_totals.wallet_id;
    PERFORM economy.refuse_changed_settings(settings);
END;
$$;

-- Every attachment's drift, counted: one row per attachment and drifted
-- field, none when all are in sync (for a scheduler, doctor and metrics).
CREATE FUNCTION economy.drift_summary()
RETURNS TABLE (attachment text, field text, drifted bigint)
LANGUAGE plpgsql
STABLE
AS $$
#variable_conflict use_column
DECLARE
    attachment_name text;
BEGIN
    FOR attachment_name IN
        SELECT a.name FROM economy.attachments a ORDER BY a.name <> 'economy', a.name
    LOOP
        RETURN QUERY
        SELECT attachment_name, d.field, count(*)
        FROM economy.balance_drift(attachment => attachment_name) d
        GROUP BY d.field
        ORDER BY d.field;
    END LOOP;
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

-- The ledger entries a drift check sums (`economy_checkpoint_lag_entries`):
-- those newer than the checkpoint, every entry of an attachment without a
-- trusted one. With an attachment: its generated checkpoint_lag.
CREATE FUNCTION economy.checkpoint_lag(attachment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text;
    lag bigint;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I()', economy.attached_object(
            (economy.attachment(checkpoint_lag.attachment)).name, 'checkpoint_lag'))
        INTO lag;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN lag;
    END IF;
    RETURN (
        SELECT count(*) FROM economy.transaction t
        WHERE t.id > (SELECT h.checkpointed_up_to FROM economy.ledger_horizon h)
    );
END;
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
