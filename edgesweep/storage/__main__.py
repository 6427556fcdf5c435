"""``python -m edgesweep.storage query ROOT "SQL" …`` (until the main CLI wires it in)."""

import sys

from .query import query_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "query":
        print('usage: python -m edgesweep.storage query ROOT "SQL" '
              '[--format table|csv|parquet|json] [--output FILE]', file=sys.stderr)
        return 2
    return query_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
