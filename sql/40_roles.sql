-- economy-sync: group roles (NOLOGIN; grant them to real login roles).
-- Roles belong to the whole cluster, so they are created only when missing:
-- another database of the same server may already use them.
--   economy_app      opens wallets, posts, transfers, reverses, holds, reads,
--                    checks drift (a dry-run reconcile too)
--   economy_operator economy_app, plus a real reconcile (repair_economy), the
--                    ledger checkpoint and hot wallets
-- Neither may write the cached columns, change the ledger or own its triggers.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['economy_app', 'economy_operator'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);  -- our constants
        END IF;
    END LOOP;
EXCEPTION
    WHEN duplicate_object THEN NULL;  -- created meanwhile by another database's install
END;
$$;

GRANT economy_app TO economy_operator;

-- the parked credits of every attachment (row level security: a sync role
-- sees only its own, 35_attach.sql)
CREATE POLICY package_roles_read ON economy.attached_hot_wallet FOR SELECT TO economy_app
USING (true);
CREATE POLICY package_roles_read ON economy.attached_hot_credit FOR SELECT TO economy_app
USING (true);
CREATE POLICY package_roles_read ON economy.attached_ledger_horizon FOR SELECT TO economy_app
USING (true);
CREATE POLICY package_roles_read ON economy.attached_ledger_checkpoint FOR SELECT TO economy_app
USING (true);
CREATE POLICY package_roles_read ON economy.attached_hold FOR SELECT TO economy_app
USING (true);

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA economy FROM PUBLIC;

GRANT USAGE ON SCHEMA economy TO economy_app;
GRANT SELECT ON ALL TABLES IN SCHEMA economy TO economy_app;
-- Plain INSERTs are allowed: the triggers sync them like any other entry.
-- Not of id and created_at, which are the database's (OVERRIDING SYSTEM VALUE
-- needs INSERT on id), nor of transfer_debit_id, which only transfer() and
-- transfer_many() set.
GRANT INSERT (wallet_id, amount, kind, idempotency_key, reverses_id, memo, metadata)
ON economy.transaction TO economy_app;
GRANT INSERT (wallet_id, amount, kind, idempotency_key, memo)
ON economy.transaction_batch TO economy_app;
GRANT EXECUTE ON FUNCTION
economy.open_wallet(bigint, numeric),
economy.post_transaction(bigint, numeric, text, text, text, jsonb),
economy.transfer(bigint, bigint, numeric, text, text, jsonb),
economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb),
economy.reverse_transaction(bigint, text),
economy.balance_drift(bigint[], text),
economy.reconcile_economy(boolean, bigint[], integer, uuid, text),
economy.bounded_drift(bigint[], integer, text),
economy.drifted_figures(bigint[]),
economy.earned(numeric, boolean),
economy.wallet_totals(bigint[]),
economy.audit_ledger_checkpoint(text),
economy.ledger_state(regclass),
economy.trusted_checkpoint(text),
economy.audit_attached_checkpoint(economy.attachments),
economy.has_checkpoint(text),
economy.checkpoint_lag(text),
economy.wallet_owner(bigint, text),
economy.owner_keys(text, bigint, integer),
economy.wallet_ledger_totals(bigint, text),
economy.attachment(text),
economy.attached_object(text, text),
economy.own_tables(text),
economy.session_settings(),
economy.refuse_changed_settings(text),
economy.attached_functions(text),
economy.attached_triggers(economy.attachments),
economy.cached_tables(economy.attachments),
economy.attachment_sql(text),
economy.mapped_columns(economy.attachments),
economy.column_type(regclass, name),
economy.drift_summary(),
economy.balance_at(bigint, timestamptz, text),
economy.hold(bigint, numeric, timestamptz, text, text, text),
economy.capture_hold(bigint, numeric, text, text, text),
economy.release_hold(bigint, text),
economy.expire_holds(text),
economy.wallet_balance(bigint, text)
TO economy_app;

GRANT EXECUTE ON FUNCTION
economy.repair_economy(bigint[], integer, uuid, text),
economy.mark_ledger_horizon(text),
economy.advance_ledger_checkpoint(text),
economy.reset_ledger_checkpoint(text),
economy.set_hot(bigint, boolean, text),
economy.fold_hot_wallets(text),
economy.prune_reconcile_log(interval),
economy.prune_transfer_keys(interval)
TO economy_operator;
REVOKE ALL ON PROCEDURE economy.checkpoint_ledger(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE economy.checkpoint_ledger(bigint, text) TO economy_operator;
REVOKE ALL ON PROCEDURE economy.checkpoint_ledgers() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE economy.checkpoint_ledgers() TO economy_operator;
