-- 0010_bulk_writes: every multi-row INSERT, INSERT … SELECT and COPY into a
-- ledger, the package's or an attachment's, is synced set-based, with no setting.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0010_bulk_writes)';

ALTER TABLE economy.transaction
ADD COLUMN applied_at_statement_end boolean NOT NULL DEFAULT false;

-- The setting that holds, while a statement inserts into the ledger, the
-- running balances of its wallets whose id falls in one of 256 groups: a
-- list ',wallet:balance:hot,…' (transaction-local, emptied by apply_entries
-- at the end of each statement). It only saves apply_entry a read per row:
-- any role can change a setting, so apply_entries checks every row's
-- balance_after against the cached balance, read under the wallet's lock.
-- (256: each group is a setting for the rest of the session, and on
-- PostgreSQL 15 every call of a function with a SET clause walks them all;
-- fewer groups would make the lists of a statement over many wallets long.)
CREATE FUNCTION economy.running_setting(wallet_id bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT 'economy.running_' || abs(wallet_id % 256)::text;  -- ::text: immutable, inlined
$$;

-- The running list with the wallet's entry set to balance:hot (replacing
-- `seen`, its entry so far, if any).
CREATE FUNCTION economy.with_running_balance(
    running_list text, wallet_id bigint, seen text, balance numeric, hot boolean
)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE
        WHEN seen IS NULL THEN coalesce(nullif(running_list, ''), ',')
            || wallet_id::text || ':' || balance::text || ':' || hot::text || ','
        ELSE replace(running_list, ',' || wallet_id::text || ':' || seen || ',',
            ',' || wallet_id::text || ':' || balance::text || ':' || hot::text || ',')
    END;
$$;

-- Raises the overdraft refusal of a debit that would take its wallet to
-- `balance` (the one wording of it, for apply_entry and apply_entries).
CREATE FUNCTION economy.refuse_overdraft(
    wallet_id bigint, balance numeric, held numeric, overdraft_limit numeric
)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % - held % < -%',
        wallet_id, balance, held, overdraft_limit
        USING ERRCODE = 'check_violation';
END;
$$;

-- Trigger function, AFTER INSERT on the ledger, once per statement: empties
-- the statement's running balances, then applies the entries apply_entry
-- left to it (applied_at_statement_end: only apply_entry sets it) to the
-- cached figures, each wallet and profile updated once. Their wallets are
-- locked already: so this only checks, under those locks, that each
-- wallet's entries, in their order, form a running sum that starts from its
-- cached balance (the settings apply_entry read can be anyone's), that none
-- is at or below the checkpoint's safe horizon (which cannot move while the
-- statement is in flight), and that no debit takes its wallet below
-- -overdraft_limit at its place in the order. Only debits are refused: a
-- credit to a wallet that is below its limit (after a repair of bad data)
-- still brings it closer to allowed. Held amounts are not available.
CREATE FUNCTION economy.apply_entries()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    any_left boolean;
    early economy.transaction;
    refused record;
BEGIN
    SELECT bool_or(g.left_here) INTO any_left
    FROM (
        SELECT bool_or(e.applied_at_statement_end) AS left_here,
            pg_catalog.set_config(economy.running_setting(e.wallet_id), '', true)
        FROM entries e
        GROUP BY economy.running_setting(e.wallet_id)
    ) g;
    IF any_left IS NOT TRUE THEN
        RETURN NULL;  -- each was applied by apply_entry (or parked)
    END IF;
    SELECT e.* INTO early FROM entries e
    WHERE e.applied_at_statement_end
        AND e.id <= (SELECT h.safe_up_to FROM economy.ledger_horizon h)
    LIMIT 1;
    IF FOUND THEN
        PERFORM economy.refuse_unapplied_entry(early);
    END IF;

    SELECT r.wallet_id, r.balance_after, r.running, r.held, r.overdraft_limit INTO refused
    FROM (
        SELECT e.id, e.wallet_id, e.amount, e.balance_after, w.held, w.overdraft_limit,
            w.balance + sum(e.amount) OVER (PARTITION BY e.wallet_id ORDER BY e.id) AS running
        FROM entries e
        -- locked already (taken again, in id order, if a setting lied)
        JOIN (
            SELECT w.id, w.balance, w.held, w.overdraft_limit FROM economy.wallet w
            WHERE w.id IN (SELECT x.wallet_id FROM entries x WHERE x.applied_at_statement_end)
            ORDER BY w.id
            FOR NO KEY UPDATE
        ) w ON w.id = e.wallet_id
        WHERE e.applied_at_statement_end
    ) r
    WHERE r.balance_after IS DISTINCT FROM r.running
        OR (r.amount < 0 AND r.running - r.held < -r.overdraft_limit)
    ORDER BY r.id
    LIMIT 1;
    IF FOUND AND refused.balance_after IS DISTINCT FROM refused.running THEN
        RAISE EXCEPTION 'wallet % changed while this statement was adding to it', refused.wallet_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'its balance_after values would not be a running sum: a write of the'
            ' statement''s own (a function it calls, or the reversal of a transfer leg whose'
            ' other wallet it also writes) changed the wallet; make that write in a statement'
            ' of its own';
    ELSIF FOUND THEN
        PERFORM economy.refuse_overdraft(
            refused.wallet_id, refused.running, refused.held, refused.overdraft_limit);
    END IF;

    WITH totals AS (
        SELECT e.wallet_id,
            sum(e.amount) AS amount,
            sum(economy.earned(e.amount, k.is_earning)) AS earnings
        FROM entries e
        JOIN economy.transaction_kind k ON k.kind = e.kind
        WHERE e.applied_at_statement_end
        GROUP BY e.wallet_id
    ),

    wallets AS (
        UPDATE economy.wallet w SET balance = w.balance + t.amount
        FROM totals t
        WHERE w.id = t.wallet_id
        RETURNING w.user_id, t.amount, t.earnings
    )

    UPDATE economy.profile p
    SET balance = p.balance + x.amount, lifetime_earnings = p.lifetime_earnings + x.earnings
    FROM wallets x
    WHERE p.user_id = x.user_id;
    RETURN NULL;
END;
$$;

-- How an attachment's ledger INSERTs are synced: 'row or statement' (a
-- one-row INSERT by the row trigger, as cheap as ever, the rows of any other
-- together, once per wallet), or 'row', every row by the row trigger: where
-- the attachment records balance_after_column (each row needs its own
-- balance, so a BEFORE row trigger applies it), and on a partitioned ledger
-- (a row trigger there cannot see the statement's rows, and a statement
-- trigger of the parent misses rows written into a partition or moved to
-- another one by an UPDATE).
CREATE FUNCTION economy.insert_sync(a economy.attachments)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT CASE
        WHEN a.balance_after_column IS NOT NULL THEN 'row'
        WHEN (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = a.ledger) = 'p' THEN 'row'
        ELSE 'row or statement'
    END;
$$;

-- Trigger function, BEFORE INSERT on the ledger, for each row: checks the
-- entry and applies it to the cached figures, or leaves that to the end of
-- its statement (apply_entries), and records the wallet's balance right
-- after it (balance_after). A wallet's first entry in a statement is applied
-- at once, as a single entry always was: one UPDATE of the wallet row both
-- applies the amount and takes the row lock every writer of that wallet, and
-- reconcile, queue on; then the profile's. Its later entries in the
-- statement are left to apply_entries (applied_at_statement_end), each with
-- its running balance, kept in a setting as the statement goes
-- (economy.running_setting): so a statement writes each wallet and profile
-- row at most twice, whatever its number of rows (a row-by-row update would
-- walk a growing chain of row versions: quadratic). Under the wallet's lock
-- an idempotency key already used is seen for sure: such a row is about to
-- be skipped by ON CONFLICT DO NOTHING (or refused as a duplicate), so it
-- counts for nothing. BEFORE, because the ledger is append-only:
-- balance_after must be known before the row is written; and the foreign
-- key's check, at the end of the statement, then finds the wallet row
-- already locked by this transaction.
-- A credit to a hot wallet takes no row lock but KEY SHARE (set_hot(false)
-- waits for it) and is parked, with balance_after NULL. Any other entry on a
-- hot wallet locks it and folds the parked credits first (the wallet's first
-- write), then is left to apply_entries (its second).
CREATE OR REPLACE FUNCTION economy.apply_entry()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    setting text;
    running_list text;
    seen text;  -- 'balance:hot' once the statement has applied an entry of the wallet
    running numeric;
    is_hot boolean;
    parkable boolean;
    beyond_horizon boolean;
    owner_id bigint;
    held numeric;
    overdraft numeric;
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
    NEW.applied_at_statement_end := false;
    setting := economy.running_setting(NEW.wallet_id);
    running_list := coalesce(pg_catalog.current_setting(setting, true), '');
    seen := nullif(split_part(split_part(running_list, ',' || NEW.wallet_id || ':', 2), ',', 1), '');

    IF seen IS NULL THEN
        UPDATE economy.wallet w
        SET balance = w.balance + NEW.amount
        WHERE w.id = NEW.wallet_id AND NOT w.hot
            -- the safe horizon: no entry at or below it may commit any more
            AND NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h)
        RETURNING w.user_id, w.balance, w.held, w.overdraft_limit
        INTO owner_id, running, held, overdraft;
        IF FOUND THEN
            IF NEW.idempotency_key IS NOT NULL AND EXISTS (
                SELECT FROM economy.transaction t
                WHERE t.wallet_id = NEW.wallet_id AND t.idempotency_key = NEW.idempotency_key
            ) THEN
                UPDATE economy.wallet w SET balance = w.balance - NEW.amount
                WHERE w.id = NEW.wallet_id
                RETURNING w.balance INTO running;
                NEW.balance_after := NULL;
            ELSE
                -- Only debits are refused: a credit to a wallet that is below its
                -- limit (after a repair of bad data) still brings it closer to
                -- allowed. Held amounts are not available.
                IF NEW.amount < 0 AND running - held < -overdraft THEN
                    PERFORM economy.refuse_overdraft(NEW.wallet_id, running, held, overdraft);
                END IF;
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
                NEW.balance_after := running;
            END IF;
            -- (an assignment, not PERFORM: evaluated without a query)
            running_list := pg_catalog.set_config(setting,
                economy.with_running_balance(running_list, NEW.wallet_id, NULL, running, false), true);
            RETURN NEW;
        END IF;
    ELSE
        running := split_part(seen, ':', 1)::numeric;
        is_hot := split_part(seen, ':', 2) = 'true';
    END IF;

    -- a hot wallet (or an unknown one, or an id below the horizon); read
    -- once: the horizon cannot move while this insert is in flight
    -- (mark_ledger_horizon waits for it)
    IF seen IS NULL OR (parkable AND is_hot) THEN
        beyond_horizon := NEW.id > (SELECT h.safe_up_to FROM economy.ledger_horizon h);
    END IF;
    IF parkable AND (seen IS NULL OR is_hot) THEN
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
    END IF;
    IF seen IS NULL THEN
        -- a debit on a hot wallet (or one turned back to normal meanwhile):
        -- locked and folded, then left to the end of the statement. The CTE,
        -- which updates nothing, takes the table's lock for that update
        -- before the row's, as an UPDATE would: a writer that holds a row
        -- must never queue for the table behind a schema change (ALTER TABLE)
        -- that queues for that row.
        WITH table_lock AS (UPDATE economy.wallet SET balance = balance WHERE false)
        SELECT w.balance, w.hot INTO running, is_hot
        FROM economy.wallet w
        WHERE w.id = NEW.wallet_id AND beyond_horizon
        FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            PERFORM economy.refuse_unapplied_entry(NEW);
        END IF;
        IF is_hot THEN
            running := running + economy.fold_hot_credits(NEW.wallet_id);
        END IF;
    END IF;

    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT FROM economy.transaction t
        WHERE t.wallet_id = NEW.wallet_id AND t.idempotency_key = NEW.idempotency_key
    ) THEN
        RETURN NEW;
    END IF;
    running := running + NEW.amount;
    NEW.balance_after := running;
    NEW.applied_at_statement_end := true;
    running_list := pg_catalog.set_config(setting,
        economy.with_running_balance(running_list, NEW.wallet_id, seen, running, is_hot), true);
    RETURN NEW;
END;
$$;

-- Trigger function, AFTER INSERT on economy.transaction_batch, once per
-- statement: locks the statement's wallets in id order, then moves its rows
-- into the ledger in their order, where they are applied as the rows of any
-- multi-row INSERT are (apply_entry, apply_entries: each wallet and profile
-- updated once). What it adds to a plain INSERT is the lock order: batches
-- over the same wallets, whatever the order of their rows, queue instead of
-- deadlocking.
CREATE OR REPLACE FUNCTION economy.apply_batch()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM batch) THEN
        RETURN NULL;
    END IF;
    -- The ledger's lock first, as an INSERT takes it before its trigger
    -- locks a wallet; then the wallets, in id order. (Their profiles need no
    -- order: every writer of a profile holds its wallet's lock first.)
    LOCK TABLE economy.transaction IN ROW EXCLUSIVE MODE;
    PERFORM FROM economy.wallet w
    WHERE w.id IN (SELECT b.wallet_id FROM batch b)
    ORDER BY w.id
    FOR NO KEY UPDATE;
    INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key, memo)
    SELECT b.wallet_id, b.amount, b.kind, b.idempotency_key, b.memo
    FROM batch b
    ORDER BY b.position;
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
    CASE WHEN economy.insert_sync(a) = 'row or statement' THEN $statement$
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
            RETURN NULL;  -- one of several rows: applied together (sync_rows)
        END IF;
    END IF;$statement$ ELSE '' END,
    economy.render_parked_fit(a, format('ARRAY[NEW.%I::bigint]', a.ledger_wallet_column)),
    economy.render_limit(a),
    economy.render_limit_check(a, 'sync_amount'),
    economy.render_limit_check(a, 'sync_amounts[i]')
);
$render$;

-- Template: the ledger's statement trigger, for an INSERT of several rows (a
-- multi-row INSERT, INSERT … SELECT, COPY, Django's bulk_create): its
-- wallets locked in ascending key order, each updated once with the sum of
-- its rows, then each owner's profile once; so the cost is linear, and two
-- such statements never deadlock whatever the order of their rows. As row by
-- row, a hot wallet that only gets credits has them parked (one parked row
-- per wallet, no shared row written); one that also gets a debit is folded
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
        -- BEFORE when it records balance_after: the row is written with it;
        -- else AFTER, seeing whether the statement has other rows
        ('economy_' || a.name || '_sync', a.ledger,
            CASE WHEN a.balance_after_column IS NULL THEN 'AFTER' ELSE 'BEFORE' END || ' INSERT',
            CASE economy.insert_sync(a)
                WHEN 'row' THEN 'FOR EACH ROW'
                ELSE 'REFERENCING NEW TABLE AS sync_inserted FOR EACH ROW'
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
    -- inserts of several rows
    SELECT 'economy_' || a.name || '_sync_rows', a.ledger, format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS sync_inserted'
        ' FOR EACH STATEMENT EXECUTE FUNCTION economy.%I()',
        'economy_' || a.name || '_sync_rows', a.ledger,
        economy.attached_object(a.name, 'sync_rows'))
    WHERE economy.insert_sync(a) = 'row or statement'
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
            (CASE WHEN economy.insert_sync(a) = 'row or statement'
                THEN economy.render_sync_rows(a) END, a.ledger),
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

REVOKE ALL ON FUNCTION economy.running_setting(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.with_running_balance(text, bigint, text, numeric, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.refuse_overdraft(bigint, numeric, numeric, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.apply_entries() FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.insert_sync(economy.attachments) FROM PUBLIC;

-- every row through apply_entry (a batch's too), the caches updated at the
-- end of each statement
CREATE OR REPLACE TRIGGER apply_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
EXECUTE FUNCTION economy.apply_entry();

CREATE TRIGGER apply_entries
AFTER INSERT ON economy.transaction
REFERENCING NEW TABLE AS entries
FOR EACH STATEMENT
EXECUTE FUNCTION economy.apply_entries();

-- every attachment regenerated; a partitioned ledger's rows are all synced by its
-- row trigger (which the setting economy.sync no longer switches off): its
-- statement trigger goes
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        IF economy.insert_sync(a) = 'row' THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s',
                'economy_' || a.name || '_sync_rows', a.ledger);
            EXECUTE format('DROP FUNCTION IF EXISTS economy.%I()',
                economy.attached_object(a.name, 'sync_rows'));
        END IF;
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
