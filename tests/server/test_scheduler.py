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


def test_fair_per_photo_not_per_request():
    """Fairness per photo, not per request: a client sending 4-photo requests gets no more photos than
    1-photo clients.  Closed loop: each client keeps one request queued, and sends the next when it is served."""
    q = FairQueue()
    sizes = {b"A": 4, b"B": 1, b"C": 1, b"D": 1}
    served = dict.fromkeys(sizes, 0)
    sent = dict.fromkeys(sizes, 0)

    def send(client: bytes) -> None:
        sent[client] += 1
        q.put(request(client, f"{client.decode()}{sent[client]}", sizes[client]), batch_size=8)

    for client in sizes:
        send(client)
    photos = 0
    while photos < 64:
        unit = q.get(timeout=0)
        q.unit_finished(unit.request)
        served[unit.request.client] += len(unit.indices)
        photos += len(unit.indices)
        if unit.request.units_left == 0:
            send(unit.request.client)
    assert served[b"A"] <= 20, served
    assert min(served[c] for c in (b"B", b"C", b"D")) >= 14, served


def test_a_client_back_from_idle_gets_no_credit():
    q = FairQueue()
    q.put(request(b"A", "a1", 1), batch_size=8)
    q.unit_finished(q.get(timeout=0).request)
    busy = request(b"B", "b", 40)
    q.put(busy, batch_size=1)
    for _ in range(20):  # B alone for a while
        q.unit_finished(q.get(timeout=0).request)
    q.put(request(b"A", "a2", 30), batch_size=1)
    order = [q.get(timeout=0).request.client for _ in range(6)]
    assert order.count(b"A") == 3 and order.count(b"B") == 3, order  # alternate, A does not take 19 in a row


def test_many_samples_make_smaller_units():
    """A unit's memory is bounded: photos x samples <= MAX_UNIT_SAMPLES (at least one photo)."""
    from geoplonk_service.protocol import MAX_UNIT_SAMPLES

    for samples, expected in [(1024, [3, 3, 3, 1]), (MAX_UNIT_SAMPLES // 2, [2, 2, 2, 2, 2]),
                              (MAX_UNIT_SAMPLES, [1] * 10)]:
        q = FairQueue()
        req = Request([b"A"], "r", [str(i) for i in range(10)], [b""] * 10, {"samples": samples})
        q.put(req, batch_size=3)
        sizes = []
        while (unit := q.get(timeout=0)) is not None:
            sizes.append(len(unit.indices))
        assert sizes == expected


def test_a_joint_requests_combined_map_is_its_last_unit_and_a_cancel_drops_it():
    q = FairQueue()
    joint = request(b"A", "j", 3)
    joint.joint = object()  # a JointState stands here: the queue only asks whether there is one
    q.put(joint, batch_size=2)
    other = request(b"B", "o", 1)
    q.put(other, batch_size=2)
    first = q.get(timeout=0)
    assert (first.request.id, first.indices, first.joint) == ("j", [0, 1], False)
    q.unit_finished(joint)
    assert q.remove(joint) == [2] and joint.joint_dropped and joint.units_left == 0
    assert not joint.finished  # until its joint answer is sent
    joint.answered = {0, 1, 2}
    joint.joint_status = "cancelled"
    assert joint.finished
    kept = request(b"C", "k", 1)
    kept.joint = object()
    q.put(kept, batch_size=2)
    units = [q.get(timeout=0) for _ in range(3)]
    assert [(u.request.id, u.joint) for u in units] == [("o", False), ("k", False), ("k", True)]
