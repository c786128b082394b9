"""The fair queue: batches, round-robin across clients, cancel removing queued work."""

from __future__ import annotations

from model_server.server.scheduler import FairQueue, Request


def request(client: bytes, rid: str, n: int) -> Request:
    return Request([client], rid, [f"{rid}-{i}" for i in range(n)], [b""] * n, {})


def test_round_robin_between_clients_and_batches():
    q = FairQueue()
    big = request(b"A", "big", 5)
    q.put(big, batch_size=2)
    small = request(b"B", "small", 2)
    q.put(small, batch_size=2)
    order = []
    while (unit := q.get(timeout=0)) is not None:
        order.append((unit.request.id, unit.indices))
        q.unit_finished(unit.request)
    # B's only batch goes second, not after all of A's.
    assert order == [("big", [0, 1]), ("small", [0, 1]), ("big", [2, 3]), ("big", [4])]
    assert big.units_left == 0 and small.units_left == 0


def test_remove_returns_the_queued_photos():
    q = FairQueue()
    a = request(b"A", "a", 6)
    q.put(a, batch_size=2)
    first = q.get(timeout=0)
    assert first.indices == [0, 1]
    assert q.remove(a) == [2, 3, 4, 5]
    assert a.units_left == 1  # the batch in flight
    assert q.get(timeout=0) is None
    q.close()
    assert q.get(timeout=None) is None
