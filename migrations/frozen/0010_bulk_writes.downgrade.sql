-- 0010_bulk_writes: back to 0009_one_engine_foundations.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0009_one_engine_foundations)';

DROP TRIGGER apply_entries ON economy.transaction;

CREATE OR REPLACE TRIGGER apply_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
WHEN (NEW.balance_after IS NULL)
EXECUTE FUNCTION economy.apply_entry();

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
    locked_ids bigint[];
    start_balances numeric[];
    any_hot boolean;
    refused record;
BEGIN
    IF NOT EXISTS (SELECT FROM batch) THEN
        RETURN NULL;
    END IF;
    -- The ledger's lock first, as an INSERT takes it before its trigger
    -- locks a wallet; then the wallets, in id order. (Their profiles need no
    -- order: every writer of a profile holds its wallet's lock first.)
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    -- Their balances too, read once per wallet rather than once per row.
    SELECT array_agg(l.id), array_agg(l.balance), coalesce(bool_or(l.hot), false)
    INTO locked_ids, start_balances, any_hot
    FROM (
        SELECT w.id, w.balance, w.hot FROM economy.wallet w
        WHERE w.id IN (SELECT b.wallet_id FROM batch b)
        ORDER BY w.id
        FOR NO KEY UPDATE
    ) l;
    IF any_hot THEN
        PERFORM economy.fold_hot_credits(w.id) FROM economy.wallet w
        WHERE w.id = ANY (locked_ids) AND w.hot;
        SELECT array_agg(w.id), array_agg(w.balance) INTO locked_ids, start_balances
        FROM economy.wallet w
        WHERE w.id = ANY (locked_ids);
    END IF;

    -- A new statement, so a snapshot taken after the locks.
    WITH entries AS (
        INSERT INTO economy.transaction AS t (
            wallet_id, amount, kind, idempotency_key, memo, balance_after
        )
        SELECT b.wallet_id, b.amount, b.kind, b.idempotency_key, b.memo,
            s.balance + sum(b.amount) OVER (PARTITION BY b.wallet_id ORDER BY b.position)
        FROM (
            SELECT x.position, x.wallet_id, x.kind, x.idempotency_key, x.memo,
                economy.exact_amount(x.amount) AS amount
            FROM batch x
        ) b
        -- LEFT: a row of an unknown wallet goes on, without a balance_after
        LEFT JOIN unnest(locked_ids, start_balances) s (wallet_id, balance)
            ON s.wallet_id = b.wallet_id
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
            PERFORM FROM economy.attached_hot_wallet h
            WHERE h.attachment = %16$L AND h.wallet_id = NEW.%8$I
            FOR KEY SHARE;
            IF FOUND THEN
                INSERT INTO economy.attached_hot_credit (attachment, wallet_id, amount, earnings)
                VALUES (%16$L, NEW.%8$I, sync_amount, sync_earned);
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
            RETURNING %9$s, w.%7$I, w.%14$I, %21$s
            INTO sync_owner, sync_wallet, sync_balance, sync_limit;
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
            UPDATE %1$s p SET %2$s WHERE p.%3$I = sync_owner;
        END IF;$profile$,
        a.profile,
        economy.render_additions(
            'p', a.profile_balance_column, a.profile_earnings_column,
            'sync_amount', 'sync_earned'
        ),
        a.profile_key_column
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
    CASE WHEN a.balance_after_column IS NULL THEN $statement$
    IF TG_OP = 'INSERT' AND pg_catalog.current_setting('economy.sync', true) = 'statement' THEN
        RETURN NULL;  -- the statement's rows are applied together (sync_rows)
    END IF;$statement$ ELSE '' END,
    economy.render_parked_fit(a, format('ARRAY[NEW.%I::bigint]', a.ledger_wallet_column)),
    economy.render_limit(a),
    economy.render_limit_check(a, 'sync_amount'),
    economy.render_limit_check(a, 'sync_amounts[i]')
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
    sync_refused record;
    sync_parked bigint[];
    sync_folded bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    IF pg_catalog.current_setting('economy.sync', true) IS DISTINCT FROM 'statement' THEN
        RETURN NULL;  -- the row triggers applied the rows
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
    a.earning,
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
        -- BEFORE when it records balance_after: the row is written with it
        ('economy_' || a.name || '_sync', a.ledger,
            CASE WHEN a.balance_after_column IS NULL THEN 'AFTER' ELSE 'BEFORE' END || ' INSERT',
            'FOR EACH ROW', quote_ident(economy.attached_object(a.name, 'sync')) || '()'),
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
    -- inserts made with economy.sync = 'statement'; each row needs its own
    -- balance_after, so not where that is recorded
    SELECT 'economy_' || a.name || '_sync_rows', a.ledger, format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS sync_inserted'
        ' FOR EACH STATEMENT EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync_rows', a.ledger,
        economy.attached_object(a.name, 'sync_rows'))
    WHERE a.balance_after_column IS NULL
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
            (CASE WHEN a.balance_after_column IS NULL THEN economy.render_sync_rows(a) END,
                a.ledger),
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

-- every attachment regenerated from 0009's templates
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
DROP FUNCTION economy.insert_sync(economy.attachments);
DROP FUNCTION economy.apply_entries();
DROP FUNCTION economy.refuse_overdraft(bigint, numeric, numeric, numeric);
DROP FUNCTION economy.with_running_balance(text, bigint, text, numeric, boolean);
DROP FUNCTION economy.running_setting(bigint);

ALTER TABLE economy.transaction DROP COLUMN applied_at_statement_end;
