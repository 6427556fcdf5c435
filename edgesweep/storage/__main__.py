"""``python -m edgesweep.storage query ROOT "SQL" …`` and ``python -m edgesweep.storage verify
ROOT``: the same commands as ``edgesweep query`` and ``edgesweep verify``, without the rest of
the package (storage only: no torch, no Ray)."""

import sys

from .integrity import verify_main
from .query import query_main

USAGE = ('usage: python -m edgesweep.storage query ROOT "SQL" '
         '[--format table|csv|parquet|json] [--output FILE] [--skip-bad-files] [--max-rows N]\n'
         '       python -m edgesweep.storage verify ROOT [--quick] [--quiet]')


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"query": query_main, "verify": verify_main}
    if not argv or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
