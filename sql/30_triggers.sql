-- economy-sync: triggers on the ledger.

CREATE TRIGGER check_entry
BEFORE INSERT ON economy.transaction
FOR EACH ROW
WHEN (scale(NEW.amount) <> 2 OR NEW.reverses_id IS NOT NULL)
EXECUTE FUNCTION economy.check_entry();

CREATE TRIGGER apply_entry
AFTER INSERT ON economy.transaction
FOR EACH ROW
EXECUTE FUNCTION economy.apply_entry();

CREATE TRIGGER refuse_ledger_change
BEFORE UPDATE OR DELETE OR TRUNCATE ON economy.transaction
FOR EACH STATEMENT
EXECUTE FUNCTION economy.refuse_ledger_change();
