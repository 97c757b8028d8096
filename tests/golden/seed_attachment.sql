CREATE OR REPLACE FUNCTION economy.attached_seed_balance(wallet_id bigint)
 RETURNS numeric
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN (
        SELECT w.cached_balance::numeric + (
            SELECT coalesce(sum(c.amount), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = 'seed' AND c.wallet_id = $1
        )
        FROM public.app_wallet w
        WHERE w.id = $1
    );
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_capture(hold_id bigint, amount numeric, kind text, memo text)
 RETURNS economy.transaction
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_hold economy.attached_hold;
    sync_amount numeric;
    sync_memo text := coalesce($4, 'capture of hold #' || $1);
    sync_entry record;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM FROM public.app_wallet w
    WHERE w.id = (
        SELECT h.wallet_id FROM economy.attached_hold h WHERE h.attachment = 'seed' AND h.id = $1
    )
    FOR NO KEY UPDATE;
    SELECT * INTO sync_hold FROM economy.attached_hold h
    WHERE h.attachment = 'seed' AND h.id = $1
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % does not exist', $1 USING ERRCODE = 'no_data_found';
    END IF;
    IF sync_hold.status <> 'held' THEN
        RAISE EXCEPTION 'hold % is %', $1, sync_hold.status USING ERRCODE = 'check_violation';
    END IF;
    IF sync_hold.expires_at <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'hold % expired at %', $1, sync_hold.expires_at
            USING ERRCODE = 'check_violation';
    END IF;
    sync_amount := coalesce($2, sync_hold.amount);
    IF sync_amount IS NULL THEN
        RAISE EXCEPTION 'captured amount must not be null' USING ERRCODE = 'not_null_violation';
    END IF;
    IF sync_amount IN ('NaN', 'Infinity', '-Infinity') OR sync_amount <= 0 OR sync_amount::integer <> sync_amount OR sync_amount::integer <> sync_amount OR sync_amount::integer <> sync_amount THEN
        RAISE EXCEPTION 'captured amount must be a positive amount that public.app_wallet holds exactly, got %', sync_amount
            USING ERRCODE = 'check_violation';
    END IF;
    IF sync_amount > sync_hold.amount THEN
        RAISE EXCEPTION 'hold % holds %: cannot capture %', $1, sync_hold.amount, sync_amount
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE economy.attached_hold h SET status = 'captured' WHERE h.id = $1;
    UPDATE public.app_wallet w SET pending_balance = w.pending_balance - sync_hold.amount WHERE w.id = sync_hold.wallet_id;
    INSERT INTO public.app_transaction AS r (wallet_id, amount, reason)
    VALUES (sync_hold.wallet_id, -sync_amount, $3)
    RETURNING r.id::bigint AS id, NULL::timestamptz AS created_at,
        NULL::numeric AS balance_after, r.wallet_id::bigint AS wallet_id, r.amount::numeric AS amount
    INTO sync_entry;
    -- as it was written (a trigger of the ledger may change or skip a row)
    IF sync_entry.wallet_id IS DISTINCT FROM sync_hold.wallet_id
        OR sync_entry.amount IS DISTINCT FROM -sync_amount THEN
        RAISE EXCEPTION 'hold %: its debit of % to wallet % was written as % to wallet %',
            $1, -sync_amount, sync_hold.wallet_id, sync_entry.amount, sync_entry.wallet_id
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE economy.attached_hold h SET captured_entry_id = sync_entry.id WHERE h.id = $1;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.transaction, pg_catalog.jsonb_build_object(
        'id', sync_entry.id, 'wallet_id', sync_hold.wallet_id, 'amount', -sync_amount,
        'kind', $3, 'memo', NULL, 'created_at', sync_entry.created_at,
        'balance_after', sync_entry.balance_after));
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_checkpoint_lag()
 RETURNS bigint
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    sync_covered bigint := economy.trusted_checkpoint('seed');
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN (SELECT count(*) FROM public.app_transaction AS r WHERE sync_covered IS NULL OR r.id > sync_covered);
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_drift(user_ids bigint[])
 RETURNS TABLE(user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
 SET work_mem TO '256MB'
 SET jit TO 'off'
AS $function$
#variable_conflict use_column
-- ($1 is user_ids, and the variable is named with its block: the app's
-- tables may have a column of either name)
<<economy_drift>>
DECLARE
    sync_covered bigint;  -- the entries the checkpoint sums, when it is to be trusted
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    economy_drift.sync_covered := economy.trusted_checkpoint('seed');
    RETURN QUERY
    WITH parked AS (
        SELECT c.wallet_id, sum(c.amount) AS balance, sum(c.earnings) AS earnings
        FROM economy.attached_hot_credit c
        WHERE c.attachment = 'seed'
        GROUP BY c.wallet_id
    ),

    holds AS (
        SELECT h.wallet_id, sum(h.amount) AS held
        FROM economy.attached_hold h
        WHERE h.attachment = 'seed' AND h.status = 'held'
        GROUP BY h.wallet_id
    ),

    -- a hot wallet's cached figures with its parked credits: the exact ones
    wallets AS (
        SELECT w.id::bigint AS wallet_id, w.profile_id::bigint AS owner_id,
            w.cached_balance::numeric + coalesce(pk.balance, 0) AS cached_balance,
            w.lifetime_earnings::numeric + coalesce(pk.earnings, 0) AS cached_earnings,
            coalesce(pk.balance, 0) AS parked_balance,
            coalesce(pk.earnings, 0) AS parked_earnings,
            w.pending_balance::numeric AS cached_held, coalesce(hd.held, 0) AS holds_held
        FROM public.app_wallet w
        LEFT JOIN parked pk ON pk.wallet_id = w.id
        LEFT JOIN holds hd ON hd.wallet_id = w.id
        WHERE $1 IS NULL OR w.profile_id = ANY ($1)
            OR (w.profile_id IS NULL AND array_position($1, NULL) IS NOT NULL)
    ),

    -- the whole ledger, or the given owners' wallets' entries through the
    -- index on its wallet column: a branch each, as the plan is made for
    -- the call's arguments, it runs only the one that applies
    ledger AS (
        SELECT r.wallet_id::bigint AS wallet_id, sum(r.amount)::numeric AS balance,
            coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0)::numeric AS earnings
        FROM (
            SELECT * FROM public.app_transaction WHERE $1 IS NULL AND (economy_drift.sync_covered IS NULL OR id > economy_drift.sync_covered)
            UNION ALL
            SELECT * FROM public.app_transaction
            WHERE $1 IS NOT NULL AND wallet_id IN (SELECT wl.wallet_id FROM wallets wl)
        ) AS r
        GROUP BY r.wallet_id
    ),

    per_wallet AS (
        SELECT w.*, coalesce(l.balance, 0) + coalesce(c.balance, 0) AS ledger_balance,
            coalesce(l.earnings, 0) + coalesce(c.earnings, 0) AS ledger_earnings
        FROM wallets w
        LEFT JOIN ledger l ON l.wallet_id = w.wallet_id
        LEFT JOIN economy.attached_ledger_checkpoint c
            ON $1 IS NULL AND economy_drift.sync_covered IS NOT NULL
            AND c.attachment = 'seed' AND c.wallet_id = w.wallet_id
    ),

    per_profile AS (
        SELECT g.user_id, g.wallet_id,
            g.cached_balance + g.parked_balance AS cached_balance,
            g.cached_earnings + g.parked_earnings AS cached_earnings,
            g.ledger_balance, g.ledger_earnings
        FROM (
            SELECT p.id::bigint AS user_id,
                CASE WHEN count(pw.wallet_id) = 1 THEN min(pw.wallet_id) END AS wallet_id,
                p.deltacoin_balance::numeric AS cached_balance, p.lifetime_earnings::numeric AS cached_earnings,
                coalesce(sum(pw.ledger_balance), 0) AS ledger_balance,
                coalesce(sum(pw.ledger_earnings), 0) AS ledger_earnings,
                coalesce(sum(pw.parked_balance), 0) AS parked_balance,
                coalesce(sum(pw.parked_earnings), 0) AS parked_earnings
            FROM public.app_profile p
            LEFT JOIN per_wallet pw ON pw.owner_id = p.id
            WHERE $1 IS NULL OR p.id = ANY ($1)
            GROUP BY p.id, 3, 4
        ) g
    ),

    compared AS (
        SELECT pw.owner_id AS user_id, pw.wallet_id, 1 AS position, 'wallet.balance' AS field,
            pw.cached_balance AS cached_value, pw.ledger_balance AS ledger_value
        FROM per_wallet pw
        UNION ALL
        SELECT pw.owner_id, pw.wallet_id, 2, 'wallet.lifetime_earnings',
            pw.cached_earnings, pw.ledger_earnings
        FROM per_wallet pw
        WHERE 't'
        UNION ALL
        SELECT pw.owner_id, pw.wallet_id, 3, 'wallet.held', pw.cached_held, pw.holds_held
        FROM per_wallet pw
        WHERE 't'
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 4, 'profile.balance',
            pp.cached_balance, pp.ledger_balance
        FROM per_profile pp
        WHERE 't'
        UNION ALL
        SELECT pp.user_id, pp.wallet_id, 5, 'profile.lifetime_earnings',
            pp.cached_earnings, pp.ledger_earnings
        FROM per_profile pp
        WHERE 't'
    )

    SELECT c.user_id, c.wallet_id, c.field, c.cached_value, c.ledger_value
    FROM compared c
    WHERE c.cached_value IS DISTINCT FROM c.ledger_value
    ORDER BY c.user_id NULLS LAST, c.position, c.wallet_id;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_earns(amount integer)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    SELECT coalesce((amount > 0), false);
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_expire()
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_wallets bigint[];
    sync_expired integer;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    sync_wallets := ARRAY(
        SELECT DISTINCT h.wallet_id FROM economy.attached_hold h
        WHERE h.attachment = 'seed' AND h.status = 'held' AND h.expires_at <= pg_catalog.now()
    );
    PERFORM economy.lock_rows(<oid>::regclass, 'id', sync_wallets);
    WITH expired AS (
        UPDATE economy.attached_hold h SET status = 'expired'
        WHERE h.attachment = 'seed' AND h.status = 'held' AND h.expires_at <= pg_catalog.now()
            AND h.wallet_id = ANY (sync_wallets)
        RETURNING h.wallet_id, h.amount
    ),

    per_wallet AS (
        SELECT e.wallet_id, sum(e.amount) AS amount, count(*) AS holds
        FROM expired e
        GROUP BY e.wallet_id
    ),

    updated AS (
        UPDATE public.app_wallet w SET pending_balance = w.pending_balance - p.amount
        FROM per_wallet p
        WHERE w.id = p.wallet_id
    )

    SELECT coalesce(sum(p.holds), 0) INTO sync_expired FROM per_wallet p;
    RETURN sync_expired;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_fold(wallet_ids bigint[])
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    locked bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    locked := ARRAY(
        SELECT w.id::bigint FROM public.app_wallet w
        WHERE w.id IN (
            SELECT c.wallet_id FROM economy.attached_hot_credit c
            WHERE c.attachment = 'seed' AND (wallet_ids IS NULL OR c.wallet_id = ANY (wallet_ids))
            GROUP BY c.wallet_id
            HAVING sum(c.credits) > 0
        )
    );
    PERFORM economy.lock_rows(<oid>::regclass, 'id', locked, <oid>::regclass, 'id', ARRAY(SELECT w.profile_id::bigint FROM public.app_wallet w WHERE w.id = ANY (locked)));
    WITH per_wallet AS (
        SELECT c.wallet_id, sum(c.amount) AS amount, sum(c.earnings) AS earnings,
            sum(c.credits) AS credits
        FROM economy.attached_hot_credit c
        WHERE c.attachment = 'seed' AND c.wallet_id = ANY (locked)
        GROUP BY c.wallet_id
        HAVING sum(c.credits) > 0
    ),

    -- their other rows that no credit holds, merged into the fold row: a
    -- credit in REPEATABLE READ starts a row of its own, this keeps them few
    merged AS (
        DELETE FROM economy.attached_hot_credit c
        WHERE c.ctid IN (
            SELECT m.ctid FROM economy.attached_hot_credit m
            WHERE m.attachment = 'seed' AND m.wallet_id IN (SELECT pw.wallet_id FROM per_wallet pw)
                AND NOT m.folds
                AND current_setting('transaction_isolation') = 'read committed'
            FOR UPDATE SKIP LOCKED
        )
        RETURNING c.wallet_id, c.amount, c.earnings, c.credits
    ),

    taken AS (
        INSERT INTO economy.attached_hot_credit AS c
            (attachment, wallet_id, amount, earnings, credits, folds)
        SELECT 'seed', pw.wallet_id, coalesce(m.amount, 0) - pw.amount,
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
        UPDATE public.app_wallet w SET cached_balance = w.cached_balance + pw.amount, lifetime_earnings = w.lifetime_earnings + pw.earnings
        FROM per_wallet pw
        WHERE w.id = pw.wallet_id
        RETURNING w.profile_id::bigint AS owner_key, pw.amount, pw.earnings
    )

    SELECT array_agg(f.owner_key), array_agg(f.amount), array_agg(f.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM folded f;
    
    IF cardinality(array_remove(sync_owners, NULL)) > 1 THEN
        PERFORM FROM public.app_profile p WHERE p.id = ANY (sync_owners) ORDER BY p.id FOR NO KEY UPDATE;
    END IF;
    <<profiles>>
    DECLARE
        updated bigint;
    BEGIN
        WITH updated AS (
            UPDATE public.app_profile p SET deltacoin_balance = p.deltacoin_balance + d.amount, lifetime_earnings = p.lifetime_earnings + d.earnings
            FROM (
                SELECT d.owner_key, sum(d.amount) AS amount, sum(d.earnings) AS earnings
                FROM unnest(sync_owners, sync_amounts, sync_earnings) AS d (owner_key, amount, earnings)
                GROUP BY d.owner_key
            ) d
            WHERE p.id = d.owner_key
            RETURNING CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
        )
        SELECT count(*) INTO profiles.updated FROM updated;
    END;
    RETURN cardinality(locked);
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_guard_profile()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_balance numeric;
    sync_earnings numeric;
    sync_held numeric;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_profile'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.deltacoin_balance := OLD.deltacoin_balance;
        NEW.lifetime_earnings := OLD.lifetime_earnings;
        RETURN NEW;
    END IF;
    -- the ledger's figures for the new row (and its holds')
    SELECT coalesce(sum(r.amount), 0), coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0)
    INTO sync_balance, sync_earnings
    FROM public.app_transaction AS r
    WHERE r.wallet_id IN (SELECT w.id FROM public.app_wallet w WHERE w.profile_id = NEW.id);
    NEW.deltacoin_balance := sync_balance;
    NEW.lifetime_earnings := sync_earnings;
    RETURN NEW;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_guard_wallet()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_balance numeric;
    sync_earnings numeric;
    sync_held numeric;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_wallet'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.cached_balance := OLD.cached_balance;
        NEW.lifetime_earnings := OLD.lifetime_earnings;
        NEW.pending_balance := OLD.pending_balance;
        RETURN NEW;
    END IF;
    -- the ledger's figures for the new row (and its holds')
    SELECT coalesce(sum(r.amount), 0), coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0)
    INTO sync_balance, sync_earnings
    FROM public.app_transaction AS r
    WHERE r.wallet_id = NEW.id;
    SELECT coalesce(sum(h.amount), 0) INTO sync_held FROM economy.attached_hold h
    WHERE h.attachment = 'seed' AND h.wallet_id = NEW.id AND h.status = 'held';
    NEW.cached_balance := sync_balance;
    NEW.lifetime_earnings := sync_earnings;
    NEW.pending_balance := sync_held;
    RETURN NEW;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_hold(wallet_id bigint, amount numeric, expires_at timestamp with time zone, idempotency_key text, memo text)
 RETURNS economy.wallet_hold
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_balance numeric;
    sync_limit numeric;
    placed economy.attached_hold;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF $2 IS NULL THEN
        RAISE EXCEPTION 'hold amount must not be null' USING ERRCODE = 'not_null_violation';
    END IF;
    IF $2 IN ('NaN', 'Infinity', '-Infinity') OR $2 <= 0 OR $2::integer <> $2 OR $2::integer <> $2 OR $2::integer <> $2 THEN
        RAISE EXCEPTION 'hold amount must be a positive amount that public.app_wallet holds exactly, got %', $2
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (
        SELECT FROM economy.attached_hot_wallet h WHERE h.attachment = 'seed' AND h.wallet_id = $1
    ) THEN
        PERFORM economy.attached_seed_fold(ARRAY[$1]);
    END IF;
    SELECT w.cached_balance::numeric, (CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END)::numeric - coalesce(w.pending_balance::numeric, 'Infinity') INTO sync_balance, sync_limit
    FROM public.app_wallet w
    WHERE w.id = $1
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', $1 USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF $4 IS NOT NULL THEN
        SELECT * INTO placed FROM economy.attached_hold h
        WHERE h.attachment = 'seed' AND h.wallet_id = $1 AND h.idempotency_key = $4;
        IF FOUND THEN
            IF placed.amount <> $2 OR placed.expires_at IS DISTINCT FROM $3
                OR placed.memo IS DISTINCT FROM $5 THEN
                RAISE EXCEPTION 'idempotency key % of wallet % was used for a different hold (#%)',
                    $4, $1, placed.id
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(placed));
        END IF;
    END IF;
    IF sync_balance - $2 < -sync_limit THEN
        RAISE EXCEPTION 'wallet % cannot hold %: its available amount would go below its'
            ' overdraft limit (balance %, less what it holds, must stay at or above %)',
            $1, $2, sync_balance, -sync_limit
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO economy.attached_hold AS h (
        attachment, wallet_id, amount, expires_at, idempotency_key, memo
    )
    VALUES ('seed', $1, $2, $3, $4, $5)
    RETURNING h.* INTO placed;
    UPDATE public.app_wallet w SET pending_balance = w.pending_balance + $2 WHERE w.id = $1;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(placed));
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_ledger_sums(after bigint, up_to bigint)
 RETURNS TABLE(wallet_id bigint, balance numeric, earnings numeric)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
#variable_conflict use_column
-- ($1 and $2: the app's ledger may have columns of those names)
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    SELECT r.wallet_id::bigint, sum(r.amount)::numeric,
        coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0)::numeric
    FROM public.app_transaction r
    WHERE ($1 IS NULL OR r.id > $1) AND r.id <= $2
    GROUP BY r.wallet_id;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_move()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_owners bigint[] := ARRAY[OLD.profile_id, NEW.profile_id];
    moved numeric;
    moved_earnings numeric;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_wallet'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- what the wallet brought to the old owner's cached profile: its ledger
    -- less its parked credits (those count through whoever owns it), both
    -- read in one snapshot
    SELECT coalesce(sum(r.amount), 0) - (
            SELECT coalesce(sum(c.amount), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = 'seed' AND c.wallet_id = NEW.id
        ),
        coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0) - (
            SELECT coalesce(sum(c.earnings), 0) FROM economy.attached_hot_credit c
            WHERE c.attachment = 'seed' AND c.wallet_id = NEW.id
        )
    INTO moved, moved_earnings
    FROM public.app_transaction AS r
    WHERE r.wallet_id = NEW.id;
    
    IF cardinality(array_remove(sync_owners, NULL)) > 1 THEN
        PERFORM FROM public.app_profile p WHERE p.id = ANY (sync_owners) ORDER BY p.id FOR NO KEY UPDATE;
    END IF;
    <<profiles>>
    DECLARE
        updated bigint;
    BEGIN
        WITH updated AS (
            UPDATE public.app_profile p SET deltacoin_balance = p.deltacoin_balance + d.amount, lifetime_earnings = p.lifetime_earnings + d.earnings
            FROM (
                SELECT d.owner_key, sum(d.amount) AS amount, sum(d.earnings) AS earnings
                FROM (VALUES (OLD.profile_id::bigint, -moved, -moved_earnings), (NEW.profile_id::bigint, moved, moved_earnings)) AS d (owner_key, amount, earnings)
                GROUP BY d.owner_key
            ) d
            WHERE p.id = d.owner_key
            RETURNING CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
        )
        SELECT count(*) INTO profiles.updated FROM updated;
    END;
    RETURN NULL;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_owners(after bigint, batch_size integer)
 RETURNS SETOF bigint
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    SELECT DISTINCT t.id::bigint FROM public.app_profile t
    WHERE t.id IS NOT NULL AND ($1 IS NULL OR t.id > $1)
    ORDER BY 1
    LIMIT $2;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_reconcile(dry_run boolean, user_ids bigint[])
 RETURNS TABLE(user_id bigint, wallet_id bigint, field text, cached_value numeric, ledger_value numeric, fixed boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    drifted_owners bigint[];
    drifted_wallets bigint[];
    locked_wallets bigint[];
    repaired jsonb;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF dry_run THEN
        RETURN QUERY SELECT d.*, false FROM economy.attached_seed_drift(user_ids) d;
        RETURN;
    END IF;

    SELECT coalesce(array_agg(DISTINCT d.user_id) FILTER (WHERE d.user_id IS NOT NULL), '{}'),
        coalesce(array_agg(DISTINCT d.wallet_id) FILTER (WHERE d.user_id IS NULL), '{}')
    INTO drifted_owners, drifted_wallets
    FROM economy.attached_seed_drift(user_ids) d;
    -- and the hot wallets with parked credits, which a real run folds
    SELECT
        drifted_owners
        || coalesce(array_agg(h.owner_id) FILTER (WHERE h.owner_id IS NOT NULL), '{}'),
        drifted_wallets
        || coalesce(array_agg(h.wallet_id) FILTER (WHERE h.owner_id IS NULL), '{}')
    INTO drifted_owners, drifted_wallets
    FROM (
        SELECT w.id::bigint AS wallet_id, w.profile_id::bigint AS owner_id
        FROM public.app_wallet w
        WHERE w.id IN (
            SELECT c.wallet_id FROM economy.attached_hot_credit c
            WHERE c.attachment = 'seed'
            GROUP BY c.wallet_id
            HAVING sum(c.credits) > 0
        )
    ) h
    WHERE user_ids IS NULL OR h.owner_id = ANY (user_ids)
        OR (h.owner_id IS NULL AND array_position(user_ids, NULL) IS NOT NULL);

    locked_wallets := ARRAY(
        SELECT w.id::bigint FROM public.app_wallet w
        WHERE w.profile_id = ANY (drifted_owners) OR w.id = ANY (drifted_wallets)
    );
    PERFORM economy.lock_rows(<oid>::regclass, 'id', locked_wallets, <oid>::regclass, 'id', drifted_owners);
    PERFORM economy.attached_seed_fold(locked_wallets);

    -- A new statement, so a new snapshot: taken after the locks.
    WITH drift AS (
        SELECT d.*
        FROM economy.attached_seed_drift(
            drifted_owners
            || CASE WHEN drifted_wallets = '{}' THEN '{}' ELSE ARRAY[NULL::bigint] END
        ) d
        WHERE d.user_id = ANY (drifted_owners) OR d.wallet_id = ANY (drifted_wallets)
    ),

    -- credits parked since the fold: the caches are set to the ledger less them
    parked AS (
        SELECT c.wallet_id, sum(c.amount) AS balance, sum(c.earnings) AS earnings
        FROM economy.attached_hot_credit c
        WHERE c.attachment = 'seed'
        GROUP BY c.wallet_id
    ),

    wallet_fix AS (
        UPDATE public.app_wallet w SET cached_balance = coalesce(b.ledger_value - coalesce(pk.balance, 0), w.cached_balance), lifetime_earnings = coalesce(e.ledger_value - coalesce(pk.earnings, 0), w.lifetime_earnings), pending_balance = coalesce(h.ledger_value, w.pending_balance)
        FROM (SELECT DISTINCT d.wallet_id FROM drift d WHERE d.field LIKE 'wallet.%') u
        LEFT JOIN drift b ON b.wallet_id = u.wallet_id AND b.field = 'wallet.balance'
        LEFT JOIN drift e ON e.wallet_id = u.wallet_id AND e.field = 'wallet.lifetime_earnings'
        LEFT JOIN drift h ON h.wallet_id = u.wallet_id AND h.field = 'wallet.held'
        LEFT JOIN parked pk ON pk.wallet_id = u.wallet_id
        WHERE w.id = u.wallet_id
    ),

    profile_fix AS (
        UPDATE public.app_profile p SET deltacoin_balance = coalesce(b.ledger_value - coalesce(po.balance, 0), p.deltacoin_balance), lifetime_earnings = coalesce(e.ledger_value - coalesce(po.earnings, 0), p.lifetime_earnings)
        FROM (SELECT DISTINCT d.user_id FROM drift d WHERE d.field LIKE 'profile.%') u
        LEFT JOIN drift b ON b.user_id = u.user_id AND b.field = 'profile.balance'
        LEFT JOIN drift e ON e.user_id = u.user_id AND e.field = 'profile.lifetime_earnings'
        LEFT JOIN (
            SELECT w.profile_id::bigint AS owner_id, sum(pk.balance) AS balance,
                sum(pk.earnings) AS earnings
            FROM parked pk
            JOIN public.app_wallet w ON w.id = pk.wallet_id
            GROUP BY 1
        ) po ON po.owner_id = u.user_id
        WHERE p.id = u.user_id
    )

    SELECT coalesce(jsonb_agg(to_jsonb(d)), '[]') INTO repaired
    FROM drift d;

    -- fixed: equal to the ledger now (a value its column cannot hold is not)
    RETURN QUERY
    WITH still AS (
        SELECT d.*
        FROM economy.attached_seed_drift(
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
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_release(hold_id bigint)
 RETURNS economy.wallet_hold
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_hold economy.attached_hold;
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM FROM public.app_wallet w
    WHERE w.id = (
        SELECT h.wallet_id FROM economy.attached_hold h WHERE h.attachment = 'seed' AND h.id = $1
    )
    FOR NO KEY UPDATE;
    SELECT * INTO sync_hold FROM economy.attached_hold h
    WHERE h.attachment = 'seed' AND h.id = $1
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % does not exist', $1 USING ERRCODE = 'no_data_found';
    END IF;
    IF sync_hold.status <> 'held' THEN
        RAISE EXCEPTION 'hold % is %', $1, sync_hold.status USING ERRCODE = 'check_violation';
    END IF;
    UPDATE economy.attached_hold h SET status = 'released' WHERE h.id = $1
    RETURNING h.* INTO sync_hold;
    UPDATE public.app_wallet w SET pending_balance = w.pending_balance - sync_hold.amount WHERE w.id = sync_hold.wallet_id;
    RETURN pg_catalog.jsonb_populate_record(NULL::economy.wallet_hold, to_jsonb(sync_hold));
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_set_hot(wallet_id bigint, hot boolean)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM FROM public.app_wallet w WHERE w.id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet % does not exist', $1 USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF $2 THEN
        INSERT INTO economy.attached_hot_wallet (attachment, wallet_id)
        VALUES ('seed', $1)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM economy.attached_hot_wallet h
        WHERE h.attachment = 'seed' AND h.wallet_id = $1;
        PERFORM economy.attached_seed_fold(ARRAY[$1]);
        DELETE FROM economy.attached_hot_credit c
        WHERE c.attachment = 'seed' AND c.wallet_id = $1;
    END IF;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_sync()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
            RETURN NULL;  -- one of several rows: applied together (sync_rows)
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        sync_amount := NEW.amount;
        IF sync_amount IS NULL OR min_scale(sync_amount) > 2 THEN
            RAISE EXCEPTION '%: amount % cannot be cached exactly', TG_TABLE_NAME, sync_amount
                USING ERRCODE = 'check_violation';
        END IF;
        sync_earned := CASE WHEN economy.attached_seed_earns(NEW.amount) THEN sync_amount ELSE 0 END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- (read here first: most wallets are not hot, and a call costs more)
        IF EXISTS (
            SELECT FROM economy.attached_hot_wallet h
            WHERE h.attachment = 'seed' AND h.wallet_id = NEW.wallet_id
        ) THEN
            IF sync_amount <= 0 THEN
                PERFORM economy.attached_seed_fold(ARRAY[NEW.wallet_id::bigint]);  -- the balance is exact after it
            -- a credit to a hot wallet is parked: no shared row written
            ELSIF economy.park_attached_credit('seed', NEW.wallet_id, sync_amount, sync_earned) THEN
                PERFORM (SELECT ROW((w.cached_balance + coalesce(sum(c.amount), 0))::integer, (w.lifetime_earnings + coalesce(sum(c.earnings), 0))::integer) IS NOT NULL FROM economy.attached_hot_credit c WHERE c.attachment = 'seed' AND c.wallet_id = w.id), CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
    FROM public.app_wallet w
    LEFT JOIN public.app_profile p ON p.id = w.profile_id
    WHERE w.id = ANY (ARRAY[NEW.wallet_id::bigint]);
                IF NEW.id <= (SELECT h.safe_up_to FROM economy.attached_ledger_horizon h WHERE h.attachment = 'seed') OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
            PERFORM economy.correct_attached_checkpoint('seed', ARRAY[NEW.id::bigint], ARRAY[NEW.wallet_id::bigint], ARRAY[sync_amount], ARRAY[sync_earned]);
        END IF;
                RETURN NULL;
            END IF;
        END IF;
        UPDATE public.app_wallet w SET cached_balance = w.cached_balance + sync_amount, lifetime_earnings = w.lifetime_earnings + sync_earned
        WHERE w.id = NEW.wallet_id
        RETURNING w.profile_id, w.id, w.cached_balance, (CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END)::numeric - coalesce(w.pending_balance::numeric, 'Infinity')
        INTO sync_owner, sync_wallet, sync_balance, sync_limit;
        IF sync_amount < 0 AND sync_balance < -sync_limit THEN
            RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % < %',
                sync_wallet, sync_balance, -sync_limit
                USING ERRCODE = 'check_violation';
        END IF;
        IF sync_owner IS NOT NULL THEN
            UPDATE public.app_profile p SET deltacoin_balance = p.deltacoin_balance + sync_amount, lifetime_earnings = p.lifetime_earnings + sync_earned WHERE p.id = sync_owner;
            IF EXISTS (SELECT FROM economy.attached_hot_wallet h WHERE h.attachment = 'seed') THEN
                SELECT CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END INTO sync_fits FROM public.app_profile p WHERE p.id = sync_owner;
            END IF;
        END IF;
        IF NEW.id <= (SELECT h.safe_up_to FROM economy.attached_ledger_horizon h WHERE h.attachment = 'seed') OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
            PERFORM economy.correct_attached_checkpoint('seed', ARRAY[NEW.id::bigint], ARRAY[NEW.wallet_id::bigint], ARRAY[sync_amount], ARRAY[sync_earned]);
        END IF;
        RETURN NULL;
    END IF;

    sync_wallets := ARRAY[OLD.wallet_id];
    sync_amounts := ARRAY[-OLD.amount];
    sync_earnings := ARRAY[CASE WHEN economy.attached_seed_earns(OLD.amount) THEN -OLD.amount ELSE 0 END];
    IF TG_OP = 'UPDATE' THEN
        IF NEW.wallet_id = OLD.wallet_id THEN
            sync_amounts[1] := sync_amounts[1] + sync_amount;
            sync_earnings[1] := sync_earnings[1] + sync_earned;
        ELSIF NEW.wallet_id > OLD.wallet_id THEN
            sync_wallets := sync_wallets || NEW.wallet_id;
            sync_amounts := sync_amounts || sync_amount;
            sync_earnings := sync_earnings || sync_earned;
        ELSE
            sync_wallets := NEW.wallet_id || sync_wallets;
            sync_amounts := sync_amount || sync_amounts;
            sync_earnings := sync_earned || sync_earnings;
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(sync_wallets) LOOP
        sync_owner := NULL;
        IF sync_amounts[i] <> 0 OR sync_earnings[i] <> 0 THEN
            UPDATE public.app_wallet w SET cached_balance = w.cached_balance + sync_amounts[i], lifetime_earnings = w.lifetime_earnings + sync_earnings[i]
            WHERE w.id = sync_wallets[i]
            RETURNING w.profile_id, w.id, w.cached_balance, (CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END)::numeric - coalesce(w.pending_balance::numeric, 'Infinity'), (SELECT ROW((w.cached_balance + coalesce(sum(c.amount), 0))::integer, (w.lifetime_earnings + coalesce(sum(c.earnings), 0))::integer) IS NOT NULL FROM economy.attached_hot_credit c WHERE c.attachment = 'seed' AND c.wallet_id = w.id)
            INTO sync_owner, sync_wallet, sync_balance, sync_limit, sync_fits;
            IF sync_amounts[i] < 0 AND sync_balance < -sync_limit THEN
            RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % < %',
                sync_wallet, sync_balance, -sync_limit
                USING ERRCODE = 'check_violation';
        END IF;
        END IF;
        sync_owners := sync_owners || sync_owner;
    END LOOP;
    
    IF cardinality(array_remove(sync_owners, NULL)) > 1 THEN
        PERFORM FROM public.app_profile p WHERE p.id = ANY (sync_owners) ORDER BY p.id FOR NO KEY UPDATE;
    END IF;
    <<profiles>>
    DECLARE
        updated bigint;
    BEGIN
        WITH updated AS (
            UPDATE public.app_profile p SET deltacoin_balance = p.deltacoin_balance + d.amount, lifetime_earnings = p.lifetime_earnings + d.earnings
            FROM (
                SELECT d.owner_key, sum(d.amount) AS amount, sum(d.earnings) AS earnings
                FROM unnest(sync_owners, sync_amounts, sync_earnings) AS d (owner_key, amount, earnings)
                GROUP BY d.owner_key
            ) d
            WHERE p.id = d.owner_key
            RETURNING CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
        )
        SELECT count(*) INTO profiles.updated FROM updated;
    END;
    IF least(OLD.id, NEW.id) <= (SELECT h.safe_up_to FROM economy.attached_ledger_horizon h WHERE h.attachment = 'seed') OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
            PERFORM economy.correct_attached_checkpoint('seed', ARRAY[OLD.id::bigint, NEW.id::bigint], ARRAY[OLD.wallet_id::bigint, NEW.wallet_id::bigint], ARRAY[-OLD.amount::numeric, sync_amount], ARRAY[CASE WHEN economy.attached_seed_earns(OLD.amount) THEN -OLD.amount::numeric ELSE 0 END, sync_earned]);
        END IF;
    RETURN NULL;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_sync_rows()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    sync_refused record;
    sync_parked bigint[];
    sync_folded bigint[];
    sync_owners bigint[];
    sync_amounts numeric[];
    sync_earnings numeric[];
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT FROM sync_inserted OFFSET 1) THEN
        RETURN NULL;  -- no row, or one: the row trigger applied it
    END IF;
    IF EXISTS (SELECT FROM sync_inserted n WHERE n.amount IS NULL OR min_scale(n.amount) > 2) THEN
        RAISE EXCEPTION '%: an amount of the statement cannot be cached exactly', TG_TABLE_NAME
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
            SELECT n.wallet_id AS wallet_key, bool_and(n.amount > 0) AS credits_only
            FROM sync_inserted n
            GROUP BY n.wallet_id
        ) i ON i.wallet_key = h.wallet_id
        WHERE h.attachment = 'seed'
        ORDER BY h.wallet_id
        FOR KEY SHARE OF h
    ) h;
    PERFORM FROM public.app_wallet w
    WHERE w.id IN (SELECT n.wallet_id FROM sync_inserted n WHERE n.wallet_id <> ALL (sync_parked))
    ORDER BY w.id
    FOR NO KEY UPDATE;
    IF cardinality(sync_folded) > 0 THEN
        PERFORM economy.attached_seed_fold(sync_folded);
    END IF;
    -- each wallet's sums, once: parked or added to its cached columns
    IF cardinality(sync_parked) > 0 THEN
        PERFORM economy.park_attached_credit('seed', t.wallet_key, t.amount, t.earnings)
        FROM (
        SELECT n.wallet_id AS wallet_key, sum(n.amount) AS amount,
            sum(CASE WHEN coalesce((amount > 0), false) THEN n.amount ELSE 0 END) AS earnings
        FROM sync_inserted n
        GROUP BY n.wallet_id
    ) t
        WHERE t.wallet_key = ANY (sync_parked);
    END IF;
    WITH totals AS (
        SELECT n.wallet_id AS wallet_key, sum(n.amount) AS amount,
            sum(CASE WHEN coalesce((amount > 0), false) THEN n.amount ELSE 0 END) AS earnings
        FROM sync_inserted n
        GROUP BY n.wallet_id
    ),

    updated AS (
        UPDATE public.app_wallet w SET cached_balance = w.cached_balance + t.amount, lifetime_earnings = w.lifetime_earnings + t.earnings
        FROM totals t
        WHERE w.id = t.wallet_key AND t.wallet_key <> ALL (sync_parked)
        RETURNING (w.profile_id)::bigint AS owner_key, t.amount, t.earnings
    )

    SELECT array_agg(u.owner_key), array_agg(u.amount), array_agg(u.earnings)
    INTO sync_owners, sync_amounts, sync_earnings
    FROM updated u;
    PERFORM (SELECT ROW((w.cached_balance + coalesce(sum(c.amount), 0))::integer, (w.lifetime_earnings + coalesce(sum(c.earnings), 0))::integer) IS NOT NULL FROM economy.attached_hot_credit c WHERE c.attachment = 'seed' AND c.wallet_id = w.id), CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
    FROM public.app_wallet w
    LEFT JOIN public.app_profile p ON p.id = w.profile_id
    WHERE w.id = ANY (sync_parked);
    -- every debit of the statement, in its order, against the overdraft limit
    SELECT r.wallet_key, r.running, r.overdraft INTO sync_refused
    FROM (
        SELECT n.wallet_key, n.amount, b.overdraft,
            b.balance - sum(n.amount) OVER (PARTITION BY n.wallet_key)
            + sum(n.amount) OVER (PARTITION BY n.wallet_key ORDER BY n.position) AS running
        FROM (
            SELECT row_number() OVER () AS position, s.wallet_id AS wallet_key, s.amount AS amount
            FROM sync_inserted s
        ) n
        JOIN (
            SELECT w.id AS wallet_key, w.cached_balance::numeric AS balance, (CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END)::numeric - coalesce(w.pending_balance::numeric, 'Infinity') AS overdraft
            FROM public.app_wallet w
            WHERE w.id IN (SELECT s.wallet_id FROM sync_inserted s)
        ) b ON b.wallet_key = n.wallet_key
    ) r
    WHERE r.amount < 0 AND r.running < -r.overdraft
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet % would go below its overdraft limit: balance % < %',
            sync_refused.wallet_key, sync_refused.running, -sync_refused.overdraft
            USING ERRCODE = 'check_violation';
    END IF;
    
    IF cardinality(array_remove(sync_owners, NULL)) > 1 THEN
        PERFORM FROM public.app_profile p WHERE p.id = ANY (sync_owners) ORDER BY p.id FOR NO KEY UPDATE;
    END IF;
    <<profiles>>
    DECLARE
        updated bigint;
    BEGIN
        WITH updated AS (
            UPDATE public.app_profile p SET deltacoin_balance = p.deltacoin_balance + d.amount, lifetime_earnings = p.lifetime_earnings + d.earnings
            FROM (
                SELECT d.owner_key, sum(d.amount) AS amount, sum(d.earnings) AS earnings
                FROM unnest(sync_owners, sync_amounts, sync_earnings) AS d (owner_key, amount, earnings)
                GROUP BY d.owner_key
            ) d
            WHERE p.id = d.owner_key
            RETURNING CASE WHEN EXISTS (SELECT FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) THEN (SELECT ROW((p.deltacoin_balance + coalesce(sum(c.amount), 0))::numeric(10,2), (p.lifetime_earnings + coalesce(sum(c.earnings), 0))::numeric(10,2)) IS NOT NULL FROM economy.attached_hot_wallet h JOIN public.app_wallet ow ON ow.id = h.wallet_id JOIN economy.attached_hot_credit c ON c.attachment = h.attachment AND c.wallet_id = h.wallet_id WHERE h.attachment = 'seed' AND ow.profile_id = p.id) ELSE true END
        )
        SELECT count(*) INTO profiles.updated FROM updated;
    END;
    -- rows at or below the checkpoint's safe horizon keep it exact
    PERFORM economy.correct_attached_checkpoint('seed', array_agg(s.id::bigint),
        array_agg(s.wallet_id::bigint), array_agg(s.amount::numeric),
        array_agg(CASE WHEN coalesce((amount > 0), false) THEN s.amount::numeric ELSE 0 END))
    FROM sync_inserted s
    WHERE s.id <= (SELECT h.safe_up_to FROM economy.attached_ledger_horizon h WHERE h.attachment = 'seed') OR pg_catalog.current_setting('transaction_isolation') <> 'read committed'
    HAVING count(*) > 0;
    RETURN NULL;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_truncate()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' OR (TG_RELID OPERATOR(pg_catalog.<>) <oid>::regclass AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(<oid>::regclass) t WHERE t.relid OPERATOR(pg_catalog.=) TG_RELID)) THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>, for a trigger on public.app_transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT FROM public.app_wallet) THEN
        RAISE EXCEPTION 'TRUNCATE of % refused: economy-sync keeps caches of it in %;'
            ' DELETE instead, or truncate both in one statement', 'public.app_transaction', 'public.app_wallet'
            USING ERRCODE = 'restrict_violation';
    END IF;
    DELETE FROM economy.attached_hot_credit c WHERE c.attachment = 'seed';
    DELETE FROM economy.attached_hot_wallet h WHERE h.attachment = 'seed';
    DELETE FROM economy.attached_hold h WHERE h.attachment = 'seed';
    -- the checkpoint sums nothing now (an entry written again with an id it
    -- covers is a correction, as any)
    DELETE FROM economy.attached_ledger_checkpoint c WHERE c.attachment = 'seed';
    UPDATE public.app_profile p SET deltacoin_balance = 0, lifetime_earnings = 0 WHERE p.deltacoin_balance <> 0 OR p.lifetime_earnings <> 0;
    RETURN NULL;
END;
$function$

CREATE OR REPLACE FUNCTION economy.attached_seed_wallet(wallet_id bigint)
 RETURNS TABLE(owner_key bigint, balance numeric, earnings numeric)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
BEGIN
    IF CURRENT_USER OPERATOR(pg_catalog.<>) '<sync role>' THEN
        RAISE EXCEPTION 'economy-sync: this function runs only as its owner, <sync role>'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    SELECT w.profile_id::bigint,
        (SELECT coalesce(sum(r.amount), 0)::numeric FROM public.app_transaction AS r WHERE r.wallet_id = $1),
        (SELECT coalesce(sum(r.amount) FILTER (WHERE amount > 0), 0)::numeric
            FROM public.app_transaction AS r WHERE r.wallet_id = $1)
    FROM public.app_wallet w
    WHERE w.id = $1;
END;
$function$

CREATE OR REPLACE TRIGGER economy_seed_keep_cached BEFORE UPDATE ON app_profile FOR EACH ROW WHEN (CURRENT_USER <> '<sync role>' AND (OLD.deltacoin_balance IS DISTINCT FROM NEW.deltacoin_balance OR OLD.lifetime_earnings IS DISTINCT FROM NEW.lifetime_earnings)) EXECUTE FUNCTION economy.attached_seed_guard_profile();
CREATE OR REPLACE TRIGGER economy_seed_keep_cached BEFORE UPDATE ON app_wallet FOR EACH ROW WHEN (CURRENT_USER <> '<sync role>' AND (OLD.cached_balance IS DISTINCT FROM NEW.cached_balance OR OLD.lifetime_earnings IS DISTINCT FROM NEW.lifetime_earnings OR OLD.pending_balance IS DISTINCT FROM NEW.pending_balance)) EXECUTE FUNCTION economy.attached_seed_guard_wallet();
CREATE OR REPLACE TRIGGER economy_seed_move AFTER UPDATE OF profile_id ON app_wallet FOR EACH ROW WHEN (OLD.profile_id IS DISTINCT FROM NEW.profile_id) EXECUTE FUNCTION economy.attached_seed_move();
CREATE OR REPLACE TRIGGER economy_seed_new_cached BEFORE INSERT ON app_profile FOR EACH ROW WHEN (CURRENT_USER <> '<sync role>') EXECUTE FUNCTION economy.attached_seed_guard_profile();
CREATE OR REPLACE TRIGGER economy_seed_new_cached BEFORE INSERT ON app_wallet FOR EACH ROW WHEN (CURRENT_USER <> '<sync role>') EXECUTE FUNCTION economy.attached_seed_guard_wallet();
CREATE OR REPLACE TRIGGER economy_seed_refuse_truncate AFTER TRUNCATE ON app_transaction FOR EACH STATEMENT EXECUTE FUNCTION economy.attached_seed_truncate();
CREATE OR REPLACE TRIGGER economy_seed_sync AFTER INSERT ON app_transaction REFERENCING NEW TABLE AS sync_inserted FOR EACH ROW EXECUTE FUNCTION economy.attached_seed_sync();
CREATE OR REPLACE TRIGGER economy_seed_sync_delete AFTER DELETE ON app_transaction FOR EACH ROW EXECUTE FUNCTION economy.attached_seed_sync();
CREATE OR REPLACE TRIGGER economy_seed_sync_rows AFTER INSERT ON app_transaction REFERENCING NEW TABLE AS sync_inserted FOR EACH STATEMENT EXECUTE FUNCTION economy.attached_seed_sync_rows();
CREATE OR REPLACE TRIGGER economy_seed_sync_update AFTER UPDATE ON app_transaction FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION economy.attached_seed_sync();