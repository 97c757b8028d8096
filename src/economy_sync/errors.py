"""The command line's own errors: one line for a person, never a traceback, never
a password."""

import re

# a password in a URL (scheme://user:secret@host) or in key=value form
SECRETS = (
    (re.compile(r"(://[^:/@\s]*:)[^\s'\"]*@"), r"\1***@"),
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"]+)", re.IGNORECASE), r"\1***"),
)


class CliError(Exception):
    """A one-line message for the user; exit code 2."""


def redact(text: str) -> str:
    """text with any password in a connection string replaced by ***."""
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return redact(text.splitlines()[0] if text else repr(error))
