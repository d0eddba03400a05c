"""A Flet app whose heavy button runs CPU work through `@offload`.

Run: python examples/cpu_heavy.py   (then open the printed URL)
Every visitor can click "Crunch" while others keep clicking "+1": the CPU
work runs in a worker process, so the event loop stays free for everybody.
"""

from __future__ import annotations

import flet as ft

import flet_resilient as fr


def count_primes(limit: int) -> int:
    """Deliberately naive CPU work (0.1-1 s for 2_000_000, by machine)."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(sieve[n * n :: n]))
    return sum(1 for n in range(limit + 1) if sieve[n])


crunch = fr.offload(count_primes, timeout=30, per_session=1, policy="latest")


def main(page: ft.Page) -> None:
    page.title = "flet-resilient: offload"
    result = ft.Text("Press Crunch to count primes below 2,000,000", key="result")
    clicks = ft.Text("0", key="clicks", size=30)

    async def on_crunch(e: ft.Event) -> None:
        result.value = "crunching in a worker process..."
        result.update()
        try:
            result.value = f"{await crunch(2_000_000):,} primes"
        except fr.JobDropped:
            return  # a newer click replaced this one
        result.update()

    def on_plus(e: ft.Event) -> None:
        clicks.value = str(int(clicks.value) + 1)

    page.add(
        ft.Row(
            [
                ft.Button("Crunch", key="crunch", on_click=on_crunch),
                ft.Button("+1", key="plus", on_click=on_plus),
                clicks,
            ]
        ),
        result,
    )


if __name__ == "__main__":
    fr.serve(main)  # $PORT, default 8550
