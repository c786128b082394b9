"""Process-wide numeric settings for fast CPU inference, and the row workers the bf16 sampler runs on."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import torch


def configure_cpu_math() -> None:
    """Flush denormal floats to zero (in the calling thread: the flag is per thread).

    Near the ends of the schedule the network's activations underflow into denormals, which
    x86 CPUs process many times slower than normal floats, and the sampler with them. Values this small
    are numerically irrelevant to the flow.
    """
    torch.set_flush_denormal(True)


def single_thread_blas() -> None:
    """numpy's BLAS on one thread, process-wide, for the server. Its products multiply (n, 3) by (3, m), where
    threads only add waits, and they would take the core that the side thread's network runs on."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class RowWorkers:
    """Threads that each run torch with `threads` intra-op threads (one for row workers), for independent chunks
    of one batch.

    Intra-op parallelism ends every operator at a barrier where all cores must meet: on a machine shared
    with other processes, a core lent elsewhere stalls the rest at each of the network's ~80 operators per
    call. Chunks of sample rows need no barrier but the last, and rows never interact in the network.
    """

    def __init__(self, count: int, threads: int = 1, name: str = "geoplonk-rows"):
        self.count = count
        self._inboxes: list[queue.SimpleQueue] = []
        ready = threading.Barrier(count + 1)
        for i in range(count):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            self._inboxes.append(inbox)
            threading.Thread(target=self._serve, args=(inbox, ready, threads), name=f"{name}-{i}", daemon=True).start()
        ready.wait()

    @staticmethod
    def _serve(inbox: queue.SimpleQueue, ready: threading.Barrier, threads: int) -> None:
        torch.set_num_threads(threads)
        configure_cpu_math()
        ready.wait()
        while True:
            future, func, args = inbox.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with torch.inference_mode():
                    future.set_result(func(*args))
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)

    def submit(self, func: Callable, *args, worker: int = 0) -> Future:
        """func(*args) on worker `worker`, without waiting: its Future."""
        future: Future = Future()
        self._inboxes[worker % self.count].put((future, func, args))
        return future

    def map(self, func: Callable, chunks: Sequence[tuple]) -> list:
        """[func(*chunk) for chunk in chunks], chunk i on worker i % count; the first exception is re-raised."""
        futures = [self.submit(func, *args, worker=i) for i, args in enumerate(chunks)]
        return [f.result() for f in futures]


_WORKERS: dict[tuple, RowWorkers] = {}
_WORKERS_LOCK = threading.Lock()


def row_workers(count: int) -> RowWorkers:
    """The process's `count` row workers, started on first use.

    Each worker's torch.set_num_threads(1) also changes the process-wide default that torch gives new
    threads, so the caller's setting is put back once they run.
    """
    return _pool(("rows", count), lambda: RowWorkers(count))


def side_thread() -> RowWorkers:
    """The process's side thread: torch work that runs while the caller does other work (numpy, files) on the
    remaining core. It takes all of the caller's torch threads but one (at least one), fixed when it starts."""
    threads = max(1, torch.get_num_threads() - 1)
    return _pool(("side", threads), lambda: RowWorkers(1, threads, name="geoplonk-side"))


def _pool(key: tuple, start: Callable[[], RowWorkers]) -> RowWorkers:
    with _WORKERS_LOCK:
        workers = _WORKERS.get(key)
        if workers is None:
            threads = torch.get_num_threads()
            workers = _WORKERS[key] = start()
            torch.set_num_threads(threads)
        return workers
