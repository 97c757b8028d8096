-- economy-sync: triggers on the ledger.

CREATE TRIGGER apply_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
EXECUTE FUNCTION economy.apply_entry();

CREATE TRIGGER apply_entries
AFTER INSERT ON economy.transaction
REFERENCING NEW TABLE AS entries
FOR EACH STATEMENT
EXECUTE FUNCTION economy.apply_entries();

CREATE TRIGGER apply_hot_credit
AFTER INSERT ON economy.transaction
FOR EACH ROW
WHEN (
    NEW.balance_after IS NULL AND NEW.idempotency_key IS NOT NULL
    AND NEW.amount > 0 AND NEW.reverses_id IS NULL
)
EXECUTE FUNCTION economy.apply_hot_credit();

CREATE TRIGGER reverse_transfer_leg
AFTER INSERT ON economy.transaction
FOR EACH ROW
WHEN (NEW.reverses_id IS NOT NULL)
EXECUTE FUNCTION economy.reverse_transfer_leg();

CREATE TRIGGER refuse_ledger_change
BEFORE UPDATE OR DELETE OR TRUNCATE ON economy.transaction
FOR EACH STATEMENT
EXECUTE FUNCTION economy.refuse_ledger_change();

CREATE TRIGGER apply_hold
AFTER INSERT OR UPDATE OF status OR DELETE ON economy.wallet_hold
FOR EACH ROW
EXECUTE FUNCTION economy.apply_hold();

CREATE TRIGGER apply_batch
AFTER INSERT ON economy.transaction_batch
REFERENCING NEW TABLE AS batch
FOR EACH STATEMENT
EXECUTE FUNCTION economy.apply_batch();
