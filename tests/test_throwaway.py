"""The servers the tests and the demo start outlive every other Python process."""

import string
from pathlib import Path

from conftest import EXISTING_DSN
from mirakuru.base import ENV_UUID
from mirakuru.base_env import processes_with_env

from economy_sync.throwaway import ThrowawayServer


def postmaster_pid(executor) -> int:
    return int(Path(executor.datadir, "postmaster.pid").read_text().split()[0])


def test_no_python_process_exiting_kills_a_server(request):
    """mirakuru SIGKILLs, when a Python process that imported it exits, every
    process whose mark contains that process's pid (a CI run lost a server so)."""
    with ThrowawayServer("marks") as server:
        executors = [server.executor]
        if not EXISTING_DSN:
            executors.append(request.getfixturevalue("pg_server"))
        killed_at_some_exit = set().union(
            *(processes_with_env(ENV_UUID, digit) for digit in string.digits)
        )
        for executor in executors:
            assert postmaster_pid(executor) not in killed_at_some_exit
