"""Runs a command and writes the peak resident memory of that command (KiB) as
the last line of stderr; with --terminal, on a pseudo-terminal (so rich draws
its progress bar). RUSAGE_CHILDREN of this fresh process covers exactly that
one child. Used by scripts/bench and tests/test_scale.py."""

import pty
import resource
import subprocess
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["--terminal"]:
        status = pty.spawn(argv[1:])
        code = status >> 8
    else:
        code = subprocess.run(argv).returncode
    sys.stdout.flush()
    sys.stderr.write(f"\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
