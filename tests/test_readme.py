"""Every SQL and Python example of the README, in order, on a fresh database, as
the role the README says to use (the comment above each example)."""

import re

import pytest

from economy_sync._paths import SOURCE_ROOT

EXAMPLE = re.compile(
    r"<!-- (?P<how>[^>]*?) -->\n```(?P<language>sql|python)\n(?P<code>.*?)```", re.S
)


def examples() -> list[tuple[str, str, str]]:
    text = (SOURCE_ROOT / "README.md").read_text()
    found = [(m["how"], m["language"], m["code"]) for m in EXAMPLE.finditer(text)]
    assert len(found) == text.count("```sql") + text.count("```python"), (
        "every SQL and Python example of the README says how it is run"
    )
    return found


def statements(sql: str) -> list[str]:
    """One statement at a time, as psql sends them (a line ending in `;`, before
    any comment, ends one): CALL may then commit inside."""
    found, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.split("--")[0].rstrip().endswith(";"):
            found.append("\n".join(current))
            current = []
    return found + (["\n".join(current)] if "".join(current).strip() else [])


def test_every_readme_example_runs_as_its_role(conn, login):
    """On a database the migrations just installed; the owner is the superuser."""
    owner = conn
    for how, language, code in examples():
        if how.startswith("not run here"):
            continue
        role = re.match(r"run as (economy_app|economy_operator|the owner of .*?)(,|$)", how)
        assert role, f"unknown way to run an example: {how!r}"
        runner = owner if role[1].startswith("the owner") else login(role[1])
        try:
            if language == "sql":
                for statement in statements(code):
                    runner.execute(statement)
            else:
                exec(code, {"dsn": runner.info.dsn})  # the README's own code
        except Exception as error:
            pytest.fail(f"README example ({how}) failed: {error}\n{code}")
