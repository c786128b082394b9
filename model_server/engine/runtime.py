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


class RowWorkers:
    """Threads that each run torch with one intra-op thread, for independent chunks of one batch.

    Intra-op parallelism ends every operator at a barrier where all cores must meet: on a machine shared
    with other processes, a core lent elsewhere stalls the rest at each of the network's ~80 operators per
    call. Chunks of sample rows need no barrier but the last, and rows never interact in the network.
    """

    def __init__(self, count: int):
        self.count = count
        self._inboxes: list[queue.SimpleQueue] = []
        ready = threading.Barrier(count + 1)
        for i in range(count):
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            self._inboxes.append(inbox)
            threading.Thread(target=self._serve, args=(inbox, ready), name=f"geoplonk-rows-{i}", daemon=True).start()
        ready.wait()

    @staticmethod
    def _serve(inbox: queue.SimpleQueue, ready: threading.Barrier) -> None:
        torch.set_num_threads(1)
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

    def map(self, func: Callable, chunks: Sequence[tuple]) -> list:
        """[func(*chunk) for chunk in chunks], chunk i on worker i % count; the first exception is re-raised."""
        futures = []
        for i, args in enumerate(chunks):
            future: Future = Future()
            self._inboxes[i % self.count].put((future, func, args))
            futures.append(future)
        return [f.result() for f in futures]


_WORKERS: dict[int, RowWorkers] = {}
_WORKERS_LOCK = threading.Lock()


def row_workers(count: int) -> RowWorkers:
    """The process's `count` row workers, started on first use.

    Each worker's torch.set_num_threads(1) also changes the process-wide default that torch gives new
    threads, so the caller's setting is put back once they run.
    """
    with _WORKERS_LOCK:
        workers = _WORKERS.get(count)
        if workers is None:
            threads = torch.get_num_threads()
            workers = _WORKERS[count] = RowWorkers(count)
            torch.set_num_threads(threads)
        return workers
