"""``python -m edgesweep.storage query ROOT "SQL" …`` and ``python -m edgesweep.storage verify
ROOT``: the same commands as ``edgesweep query`` and ``edgesweep verify``, without the rest of
the package (storage only: no torch, no Ray)."""

import argparse
import sys

from .integrity import verify_main
from .query import add_query_arguments, query_main


def usage() -> str:
    """Both commands' usage lines; query's from its own parser, so no option is left out."""
    query = add_query_arguments(argparse.ArgumentParser(prog="python -m edgesweep.storage query"))
    return (query.format_usage().rstrip("\n") + "\n"
            "usage: python -m edgesweep.storage verify ROOT [--quick] [--quiet]\n"
            "(each command's --help says more)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"query": query_main, "verify": verify_main}
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in commands:
        print(usage(), file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
