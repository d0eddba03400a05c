"""CPU-heavy work, run in flet-resilient's process pool (module level, by name)."""

from flet_resilient import offload


@offload(timeout=60, per_session=1, policy="latest")
def build_report(size: int) -> str:
    """Sum of squares below `size`: a stand-in for real number crunching."""
    total = sum(n * n for n in range(size))
    return f"report over {size:,} rows: {total:,}"
