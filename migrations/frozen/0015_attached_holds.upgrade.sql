-- 0015_attached_holds: holds on every attachment (a held_column), captured into the
-- app's ledger; what a drift check sums, counted for every attachment; the
-- keys of transfer_many calls pruned.

COMMENT ON SCHEMA economy IS
'economy-sync: an append-only ledger with cached balances kept in sync by triggers (revision 0015_attached_holds)';

ALTER TABLE economy.attachments
ADD COLUMN held_column name,
ADD COLUMN kind_column name,
ADD COLUMN memo_column name;
UPDATE economy.attachments SET held_column = 'held', kind_column = 'kind', memo_column = 'memo'
WHERE name = 'economy';

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

GRANT SELECT ON economy.attached_hold TO economy_app;
CREATE POLICY package_roles_read ON economy.attached_hold FOR SELECT TO economy_app
USING (true);

DROP FUNCTION economy.reattach(text, text);
DROP FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name, text, text, name, name);
DROP FUNCTION economy.expire_holds();
DROP FUNCTION economy.release_hold(bigint);
DROP FUNCTION economy.capture_hold(bigint, numeric, text, text);
DROP FUNCTION economy.hold(bigint, numeric, timestamptz, text, text);

-- Deletes the keys of transfer_many calls made more than `older_than` ago
-- (retention, for a scheduler): a call retried with a pruned key transfers
-- again, so keep them longer than any client retries. Returns how many.
CREATE FUNCTION economy.prune_transfer_keys(older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of at least 0, got %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM economy.transfer_many_call k WHERE k.created_at < now() - older_than;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END;
$$;

-- Sets `amount` of the wallet's available amount (balance - held) aside.
-- Refused when that would take the available amount below -overdraft_limit.
-- Same idempotency key and payload: the same hold; another payload: error.
-- With an attachment: its generated hold (economy.render_hold).
CREATE FUNCTION economy.hold(
    wallet_id bigint,
    amount numeric,
    expires_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    memo text DEFAULT NULL,
    attachment text DEFAULT NULL
)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    settings text;
    w economy.wallet;
    placed economy.wallet_hold;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT * FROM economy.%I($1, $2, $3, $4, $5)', economy.attached_object(
            (economy.holds_attachment(hold.attachment, true)).name, 'hold'))
        INTO placed
        USING wallet_id, amount, expires_at, idempotency_key, memo;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN placed;
    END IF;
    PERFORM economy.check_amount(amount, 'hold amount');
    -- the wallet's lock first: the available amount and a replayed key are
    -- then seen for sure
    SELECT * INTO w FROM economy.wallet x WHERE x.id = hold.wallet_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', wallet_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF w.hot THEN
        w.balance := w.balance + economy.fold_hot_credits(wallet_id);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        SELECT * INTO placed FROM economy.wallet_hold h
        WHERE h.wallet_id = hold.wallet_id AND h.idempotency_key = hold.idempotency_key;
        IF FOUND THEN
            IF placed.amount <> amount OR placed.expires_at IS DISTINCT FROM expires_at
                OR placed.memo IS DISTINCT FROM memo THEN
                RAISE EXCEPTION 'idempotency key % of wallet % was used for a different hold (#%)',
                    idempotency_key, wallet_id, placed.id
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN placed;
        END IF;
    END IF;
    IF w.balance - w.held - amount < -w.overdraft_limit THEN
        RAISE EXCEPTION 'wallet % cannot hold %: available % (balance % - held %), limit -%',
            wallet_id, amount, w.balance - w.held, w.balance, w.held, w.overdraft_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.wallet_hold AS h (wallet_id, amount, expires_at, idempotency_key, memo)
    VALUES (wallet_id, round(amount, 2), expires_at, idempotency_key, memo)
    RETURNING h.* INTO placed;
    RETURN placed;
END;
$$;

-- Captures a hold: posts one debit of `amount` (all of it when NULL, never
-- more than held) and releases the rest; returns that ledger entry.
CREATE FUNCTION economy.capture_hold(
    hold_id bigint,
    amount numeric DEFAULT NULL,
    kind text DEFAULT 'purchase',
    memo text DEFAULT NULL,
    attachment text DEFAULT NULL
)
RETURNS economy.transaction
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    settings text;
    captured economy.wallet_hold;
    entry economy.transaction;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT * FROM economy.%I($1, $2, $3, $4)', economy.attached_object(
            (economy.holds_attachment(capture_hold.attachment, true)).name, 'capture'))
        INTO entry
        USING hold_id, amount, kind, memo;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN entry;
    END IF;
    captured := economy.lock_held(hold_id, true);
    amount := coalesce(amount, captured.amount);
    PERFORM economy.check_amount(amount, 'captured amount');
    IF amount > captured.amount THEN
        RAISE EXCEPTION 'hold % holds %: cannot capture %', hold_id, captured.amount, amount
            USING ERRCODE = 'check_violation';
    END IF;
    -- released first, so that the debit spends the held amount
    UPDATE economy.wallet_hold h SET status = 'captured' WHERE h.id = hold_id;
    INSERT INTO economy.transaction AS t (wallet_id, amount, kind, memo)
    VALUES (captured.wallet_id, -amount, kind, coalesce(memo, 'capture of hold #' || hold_id))
    RETURNING t.* INTO entry;
    UPDATE economy.wallet_hold h SET captured_entry_id = entry.id WHERE h.id = hold_id;
    RETURN entry;
END;
$$;

CREATE FUNCTION economy.release_hold(hold_id bigint, attachment text DEFAULT NULL)
RETURNS economy.wallet_hold
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text;
    released economy.wallet_hold;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT * FROM economy.%I($1)', economy.attached_object(
            (economy.holds_attachment(release_hold.attachment, true)).name, 'release'))
        INTO released
        USING hold_id;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN released;
    END IF;
    PERFORM economy.lock_held(hold_id, false);
    UPDATE economy.wallet_hold h SET status = 'released' WHERE h.id = hold_id
    RETURNING h.* INTO released;
    RETURN released;
END;
$$;

-- Marks 'expired' every hold past its expiry (for a scheduler); returns how
-- many. Their wallets are locked first, in id order. With an attachment: its
-- generated expire (economy.render_expire).
CREATE FUNCTION economy.expire_holds(attachment text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text;
    expired integer;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I()', economy.attached_object(
            (economy.holds_attachment(expire_holds.attachment, false)).name, 'expire'))
        INTO expired;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN expired;
    END IF;
    PERFORM FROM economy.wallet w
    WHERE w.id IN (
        SELECT h.wallet_id FROM economy.wallet_hold h
        WHERE h.status = 'held' AND h.expires_at <= now()
    )
    ORDER BY w.id
    FOR NO KEY UPDATE;
    UPDATE economy.wallet_hold h SET status = 'expired'
    WHERE h.status = 'held' AND h.expires_at <= now();
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
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

-- The app tables whose columns an attachment caches, wallet then profile:
-- each with those columns (all, then the balance's and the earnings') and
-- the name of the guard function that keeps them.
CREATE OR REPLACE FUNCTION economy.cached_tables(a economy.attachments)
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

-- Template parts: the wallet's overdraft limit less what it holds, as a
-- numeric expression over the wallet row `w` (in an UPDATE's RETURNING of
-- it, or a query of it alone): a debit or a hold is refused below its
-- negation, so that the available amount (balance - held) stays at or above
-- -limit; a held sum made NULL behind the sync's back refuses them all (it
-- is NOT NULL at attach). Then the check of a debit against it.
CREATE OR REPLACE FUNCTION economy.render_limit(a economy.attachments)
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN a.overdraft_limit IS NULL THEN 'NULL::numeric'
        WHEN a.held_column IS NULL THEN format('(%s)::numeric', a.overdraft_limit)
        ELSE format('(%s)::numeric - coalesce(w.%I::numeric, ''Infinity'')', a.overdraft_limit,
            a.held_column) END;
$$;

CREATE OR REPLACE FUNCTION economy.render_limit_check(a economy.attachments, amount text)
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

-- Template part: one entry's amount (sync_amount, sync_earned) added to its
-- wallet's owner's profile (sync_owner), checked to fit with what the owner's
-- hot wallets have parked: only where the attachment has a hot wallet (the
-- check's joins, set up for every row, cost a single-row insert about a
-- fifth of its time).
CREATE OR REPLACE FUNCTION economy.render_owner_update(a economy.attachments)
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

REVOKE ALL ON FUNCTION economy.prune_transfer_keys(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.hold(bigint, numeric, timestamptz, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.capture_hold(bigint, numeric, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.release_hold(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.expire_holds(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.holds_attachment(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_hold_amount(economy.attachments, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_lock_held(economy.attachments, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_hold(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_capture(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_release(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_expire(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.render_checkpoint_lag(economy.attachments) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.attach(text, regclass, regclass, name, name, name, name, name, regclass, name, name, name, text, name, text, text, name, name, name, name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.reattach(text, text, name, name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION economy.checkpoint_lag(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
economy.hold(bigint, numeric, timestamptz, text, text, text),
economy.capture_hold(bigint, numeric, text, text, text),
economy.release_hold(bigint, text),
economy.expire_holds(text),
economy.checkpoint_lag(text)
TO economy_app;
GRANT EXECUTE ON FUNCTION economy.prune_transfer_keys(interval) TO economy_operator;

-- every attachment regenerated (its sync role granted the holds table)
DO $$
DECLARE
    a economy.attachments;
BEGIN
    FOR a IN SELECT * FROM economy.attachments x WHERE x.name <> 'economy' ORDER BY x.name LOOP
        
        PERFORM economy.create_attached_functions(a);
    END LOOP;
END;
$$;
