"""``python -m edgesweep.workloads`` prints the workload table."""

from . import describe_table

if __name__ == "__main__":
    print(describe_table())
