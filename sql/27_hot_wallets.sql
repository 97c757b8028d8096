-- economy-sync: hot wallets (a treasury that takes a fee from every purchase).
-- A credit to a hot wallet is parked in economy.hot_credit instead of
-- updating the wallet and profile rows, so credits never queue on those rows
-- (apply_entry, apply_hot_credit); debits, holds and reversals still lock the
-- wallet, fold the parked credits and are checked against the exact balance.
-- An attachment's hot wallets work the same way (35_attach.sql).

-- The wallet's exact balance after every commit, hot or not: the cached
-- balance plus its parked credits. NULL for an unknown wallet. With an
-- attachment: that attachment's generated balance function (35_attach.sql).
CREATE FUNCTION economy.wallet_balance(wallet_id bigint, attachment text DEFAULT NULL)
RETURNS numeric
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    settings text;
    exact numeric;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I($1)', economy.attached_object(
            (economy.attachment(wallet_balance.attachment)).name, 'balance'))
        INTO exact
        USING wallet_balance.wallet_id;
        PERFORM economy.refuse_changed_settings(settings);
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

-- Marks a wallet hot, or back to normal: then it first waits for the credits
-- in flight (FOR UPDATE conflicts with the KEY SHARE lock each of them holds)
-- and folds them. With an attachment: that attachment's generated set_hot.
CREATE FUNCTION economy.set_hot(
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

-- Folds the parked credits of every wallet that has some into its cached
-- figures (for a scheduler; a real reconcile does it too). Returns how many
-- wallets were folded. Their rows are locked first, in id order. With an
-- attachment: that attachment's hot wallets.
CREATE FUNCTION economy.fold_hot_wallets(attachment text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings text;
    parked bigint[];
    folded integer;
BEGIN
    IF NOT economy.own_tables(attachment) THEN
        settings := economy.session_settings();  -- before code run for the attachment
        EXECUTE format('SELECT economy.%I(NULL)', economy.attached_object(
            (economy.attachment(fold_hot_wallets.attachment)).name, 'fold'))
        INTO folded;
        PERFORM economy.refuse_changed_settings(settings);
        RETURN folded;
    END IF;
    parked := ARRAY(
        SELECT w.id FROM economy.wallet w
        WHERE w.id IN (SELECT c.wallet_id FROM economy.hot_credit c)
        ORDER BY w.id
    );
    PERFORM economy.lock_rows(
        'economy.wallet', 'id', parked, 'economy.profile', 'user_id',
        ARRAY(SELECT w.user_id FROM economy.wallet w WHERE w.id = ANY (parked))
    );
    PERFORM economy.fold_hot_credits(p.wallet_id) FROM unnest(parked) AS p (wallet_id);
    RETURN cardinality(parked);
END;
$$;
