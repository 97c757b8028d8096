import pytest
from django.db import connection

LEDGER = "esports_deltacrowntransaction"
REFUSE_TRUNCATE = "economy_esports_refuse_truncate"


@pytest.fixture
def committed(transactional_db):
    """Tests whose writes commit (the management command reads them on a
    connection of its own). Django empties the tables after such a test with
    TRUNCATE, which the attached ledger refuses: the test harness, and only
    it, lets that one through."""
    with connection.cursor() as cur:
        cur.execute(f"ALTER TABLE {LEDGER} ENABLE TRIGGER {REFUSE_TRUNCATE}")
    yield
    with connection.cursor() as cur:
        cur.execute(f"ALTER TABLE {LEDGER} DISABLE TRIGGER {REFUSE_TRUNCATE}")
