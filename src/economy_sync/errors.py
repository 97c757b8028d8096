"""The command line's own errors: one line for a person, never a traceback."""


class CliError(Exception):
    """A one-line message for the user; exit code 2."""


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)
