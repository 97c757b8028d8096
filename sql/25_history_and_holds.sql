-- economy-sync: balances over time, and holds.

-- The sum of the wallet's entries created at or before `at`, read from the
-- index on (wallet_id, created_at) alone. NULL for an unknown wallet. With an
-- attachment: that attachment's generated balance_at (its created_at_column).
CREATE FUNCTION economy.balance_at(
    wallet_id bigint, at timestamptz, attachment text DEFAULT NULL
)
RETURNS numeric
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    settings text;
    found_balance numeric;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        IF (economy.attachment(attachment)).created_at_column IS NULL THEN
            RAISE EXCEPTION 'attachment % has no created_at_column: reattach it with one', attachment
                USING ERRCODE = 'feature_not_supported';
        END IF;
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I($1, $2)',
            economy.attached_object(attachment, 'balance_at'))
        INTO found_balance
        USING balance_at.wallet_id, balance_at.at;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN found_balance;
    END IF;
    SELECT CASE WHEN EXISTS (SELECT FROM economy.wallet w WHERE w.id = balance_at.wallet_id)
        THEN (
            SELECT coalesce(sum(t.amount), 0.00)
            FROM economy.transaction t
            WHERE t.wallet_id = balance_at.wallet_id AND t.created_at <= balance_at.at
        )
    END INTO found_balance;
    RETURN found_balance;
END;
$$;

-- Trigger function, AFTER INSERT, UPDATE or DELETE of a hold: keeps
-- wallet.held equal to the sum of the wallet's holds in status 'held'. The
-- hold functions have locked the wallet already.
CREATE FUNCTION economy.apply_hold()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    change numeric := 0;
BEGIN
    IF TG_OP <> 'DELETE' AND NEW.status = 'held' THEN
        change := NEW.amount;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.status = 'held' THEN
        change := change - OLD.amount;
    END IF;
    IF change <> 0 THEN
        UPDATE economy.wallet w SET held = w.held + change
        WHERE w.id = coalesce(NEW.wallet_id, OLD.wallet_id);
    END IF;
    RETURN NULL;
END;
$$;

-- Raises unless amount is a positive amount of money with at most 2 decimals.
CREATE FUNCTION economy.check_amount(amount numeric, what text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF amount IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = 'not_null_violation';
    END IF;
    -- NaN is above every number: BETWEEN refuses it, and the infinities
    IF NOT amount BETWEEN 0.01 AND 999999999999999.99 OR scale(amount) > 2 THEN
        RAISE EXCEPTION '% must be from 0.01 to 999999999999999.99 with at most 2 decimal'
            ' places, got %', what, amount
            USING ERRCODE = 'check_violation';
    END IF;
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

-- The hold, locked after its wallet (the writers' lock order), when it is
-- still 'held' (and, for a capture, not past its expiry).
CREATE FUNCTION economy.lock_held(hold_id bigint, for_capture boolean)
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
    -- the clock, not the transaction's start: a capture in a transaction
    -- begun before the hold expired is refused too
    IF for_capture AND locked.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'hold % expired at %', hold_id, locked.expires_at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN locked;
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
