"""Run the explorer's work off the kernel's main thread, newest request first.

Each ``submit`` raises the generation counter. The worker runs only the newest pending
job; a running job calls ``check()`` between steps, which raises ``Superseded`` once a
newer job exists, so stale work stops instead of piling up. With ``background=False``
jobs run at once in the caller's thread (tests, book builds: deterministic).
"""

import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager

import torch

Job = Callable[[Callable[[], None]], None]


class Superseded(Exception):
    """Raised by ``check()`` inside a job that a newer job replaced."""


@contextmanager
def interruptible(model: torch.nn.Module, check: Callable[[], None]):
    """Call ``check()`` before the forward pass of every module of ``model`` run in this
    thread, so that a superseded job stops within one layer's computation, not after a
    step of orderings (which may last tens of seconds on a large game)."""
    thread = threading.current_thread()

    def hook(_module, _inputs):
        if threading.current_thread() is thread:
            check()

    handles = [module.register_forward_pre_hook(hook) for module in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Runner:
    def __init__(self, *, background: bool = True, on_error: Callable | None = None):
        self.background = background
        self.on_error = on_error
        self.generation = 0
        self.last_error: BaseException | None = None
        self._condition = threading.Condition()
        self._pending: tuple[int, Job] | None = None
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        """Run ``job(check)``; any job still running or waiting is superseded."""
        with self._condition:
            if self._closed:
                return
            self.generation += 1
            generation = self.generation
            if self.background:
                self._pending = (generation, job)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="shapcam-explorer", daemon=True
                    )
                    self._thread.start()
                self._condition.notify_all()
                return
        self._execute(generation, job)

    def close(self, timeout: float = 10) -> None:
        """Supersede the work in progress, wait up to ``timeout`` s for it to stop, and
        run no more jobs."""
        with self._condition:
            self._closed = True
            self.generation += 1
            self._pending = None
        self.wait(timeout)

    def check_for(self, generation: int) -> Callable[[], None]:
        def check() -> None:
            if generation != self.generation:
                raise Superseded

        return check

    def busy(self) -> bool:
        with self._condition:
            return self._running or self._pending is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job runs or waits; False if ``timeout`` seconds passed first."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._running and self._pending is None, timeout
            )

    def _loop(self) -> None:
        while True:
            with self._condition:
                if self._pending is None:
                    self._thread = None
                    self._condition.notify_all()
                    return
                generation, job = self._pending
                self._pending = None
                self._running = True
            try:
                self._execute(generation, job)
            finally:
                with self._condition:
                    self._running = False
                    self._condition.notify_all()

    def _execute(self, generation: int, job: Job) -> None:
        try:
            job(self.check_for(generation))
            self.last_error = None
        except Superseded:
            pass
        except Exception as error:  # shown in the widget: the UI must survive any failure
            self.last_error = error
            if self.on_error is not None:
                self.on_error(error, traceback.format_exc())
            elif not self.background:
                raise
