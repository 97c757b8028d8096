"""Where the SQL and the migrations are: inside the package when installed from a
wheel, at the top of the source checkout otherwise (an editable install)."""

from importlib import resources
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def bundled_dir(name: str) -> Path:
    packaged = Path(str(resources.files("economy_sync"))) / name
    return packaged if packaged.is_dir() else SOURCE_ROOT / name


def sql_dir() -> Path:
    return bundled_dir("sql")


def migrations_dir() -> Path:
    return bundled_dir("migrations")


def schema_sql() -> str:
    """The schema as sql/ describes it, its files in dependency order."""
    return "\n".join(path.read_text() for path in sorted(sql_dir().glob("*.sql")))
