"""A process runner whose children the test drives by hand: same interface as ProcessRunner."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred

from hypersdk.pipeline.process import ProcessFailed, ProcessResult


class FakeChild:
    def __init__(self, name, argv, on_output):
        self.name, self.argv, self._on_output = name, list(argv), on_output
        self.stdin: list[str] = []
        self.result = None
        self._ended: list[Deferred] = []

    @property
    def running(self) -> bool:
        return self.result is None

    def send(self, line: str) -> None:
        self.stdin.append(line)

    def say(self, line: str) -> None:
        """A line on the child's stdout."""
        self._on_output("stdout", line)

    def exit(self, code: int = 0, signal=None, stderr: tuple[str, ...] = ()) -> None:
        self.result = ProcessResult(exit_code=code, signal=signal, stderr_tail=stderr)
        for d in self._ended:
            d.callback(self.result)

    def ended(self) -> Deferred:
        d = Deferred()
        if self.result is not None:
            d.callback(self.result)
        else:
            self._ended.append(d)
        return d


class FakeProcesses:
    def __init__(self, starting=None):
        self.children: list[FakeChild] = []
        self.stopped: list[FakeChild] = []
        self._starting = starting  # what a child waited for does when it starts: starting(child)

    def spawn(self, name, argv, env=(), on_output=None, cwd=None) -> FakeChild:
        child = FakeChild(name, argv, on_output)
        self.children.append(child)
        return child

    async def wait(self, child: FakeChild):
        try:
            return await child.ended()
        except CancelledError:
            await self.stop(child)
            raise

    async def wait_for(self, child: FakeChild, ready, timeout, what):
        if self._starting is not None:
            self._starting(child)
        if not ready():
            if child.running:
                raise AssertionError(f"{child.name} neither ready nor ended: the test says what it does")
            raise ProcessFailed(child.result.describe(child.name))

    async def stop(self, child: FakeChild):
        if child.running:
            self.stopped.append(child)
            child.exit(None, signal=15)
        return child.result
