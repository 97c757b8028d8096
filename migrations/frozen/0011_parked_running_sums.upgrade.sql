-- 0011_parked_running_sums: an attached hot wallet's parked credits are kept as running
-- sums, so the overflow guard reads a few rows per credit, not all of them.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0011_parked_running_sums)';

ALTER TABLE economy.attached_hot_credit
ADD COLUMN credits bigint NOT NULL DEFAULT 1,
ADD COLUMN folds boolean NOT NULL DEFAULT false;

WITH gone AS (
    DELETE FROM economy.attached_hot_credit c
    RETURNING c.*
)
INSERT INTO economy.attached_hot_credit (attachment, wallet_id, amount, earnings, sync_role, credits)
SELECT g.attachment, g.wallet_id, sum(g.amount), sum(g.earnings), min(g.sync_role), sum(g.credits)
FROM gone g
GROUP BY g.attachment, g.wallet_id;

CREATE UNIQUE INDEX attached_hot_credit_fold ON economy.attached_hot_credit (attachment, wallet_id)
WHERE folds;

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
DECLARE
    settings text;
BEGIN
    IF hot IS NULL THEN
        RAISE EXCEPTION 'hot must be true or false' USING ERRCODE = 'not_null_violation';
    END IF;
    -- an older snapshot would not see the credits it waits for: they would
    -- stay parked on a wallet that is no longer hot
    IF NOT hot AND current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'set_hot(false) folds the credits it waits for: run it in READ COMMITTED'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I($1, $2)', economy.attached_object(
            (economy.attachment(set_hot.attachment)).name, 'set_hot'))
        USING wallet_id, hot;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN;
    END IF;
    -- the wallet, and its profile, which a fold writes
    PERFORM economy.lock_rows(
        'economy.wallet', 'id', ARRAY[wallet_id],
        'economy.profile', 'user_id',
        ARRAY(SELECT w.user_id FROM economy.wallet w WHERE w.id = set_hot.wallet_id),
        CASE WHEN hot THEN 'NO KEY UPDATE' ELSE 'UPDATE' END
    );
    IF NOT EXISTS (SELECT FROM economy.wallet w WHERE w.id = set_hot.wallet_id) THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    UPDATE economy.wallet w SET hot = set_hot.hot WHERE w.id = set_hot.wallet_id;
    IF NOT hot THEN
        PERFORM economy.fold_hot_credits(wallet_id);
    END IF;
END;
$$;

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

-- Template part: adds the (owner key, amount, earnings) rows of `source` to
-- the owners' profiles (the keys are also in the array sync_owners; NULL for
-- an ownerless wallet), locked first in ascending key order when there are
-- several, each checked against what its owner has parked (render_profile_fit).
-- Empty for an attachment without profiles.
CREATE OR REPLACE FUNCTION economy.render_profile_update(a economy.attachments, source text)
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

-- Template part: refuses a parked credit to the wallets `wallet_keys` after
-- which their figures or their owners' would not fit (the two above).
CREATE OR REPLACE FUNCTION economy.render_parked_fit(a economy.attachments, wallet_keys text)
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
    sync_owners bigint[];
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
    IF TG_OP = 'INSERT' THEN
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
    CASE WHEN a.profile IS NOT NULL THEN format(
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
    ) ELSE '' END,
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
    coalesce(economy.render_wallet_fit(a), 'true')
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
    ) ELSE '' END
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
-- ($1 is user_ids: the app's tables may have a column of that name)
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
            SELECT * FROM %10$s WHERE $1 IS NULL
            UNION ALL
            SELECT * FROM %10$s
            WHERE $1 IS NOT NULL AND %7$I IN (SELECT wl.wallet_id FROM wallets wl)
        ) AS r
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
    economy.attached_object(a.name, 'fold'),
    format('%s::regclass', a.wallet::oid)
);
$render$;

-- Template: folds the parked credits of the given hot wallets (all when
-- NULL) into the cached columns; returns how many wallets it folded. Their
-- rows are locked first, in ascending key order; a credit still in flight is
-- not seen and stays parked. What it took is subtracted in the wallet's fold
-- row, so it never waits for a credit's row.
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
CREATE OR REPLACE FUNCTION economy.render_set_hot(a economy.attachments)
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

REVOKE ALL ON FUNCTION economy.park_attached_credit(text, bigint, numeric, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.bounded_type(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_fit_casts(text, regclass, name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_wallet_fit(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_profile_fit(economy.attachments) FROM PUBLIC;

-- every attachment's sync role may update its parked rows; its code regenerated
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        EXECUTE format('GRANT UPDATE ON economy.attached_hot_credit TO %I', a.sync_role);
        EXECUTE format('GRANT EXECUTE ON FUNCTION economy.park_attached_credit(text, bigint,'
            ' numeric, numeric) TO %I', a.sync_role);
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
