"""The boot check stage: start the imported domain cut off from the network and watch it come up.

The domain runs with its NICs on an isolated network of its own (same MACs and
models, so the guest configures them as it would, but nothing it sends can
clash with the source VM's address or MAC). Its serial console is read until
the ready pattern (by default a login prompt, or the guest agent answering), a
line that means the boot failed, or the timeout. Then the domain is shut down,
or, with ``destination.start``, its NICs are moved onto their real networks and
it stays running. A guest that does not come up fails the job with the last
console lines; its domain is kept for inspection unless ``on_failure: remove``.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional

from twisted.internet.defer import Deferred

from ..errors import HyperSDKError
from ..guest.bootcheck import BootCheckSpec, ConsoleWatch, Verdict, interfaces_of, isolated_network_xml, isolated_xml
from ..jobs.definition import BootCheckOption
from ..libvirt.guestrun import GuestRun

TAIL_IN_ERROR = 10  # console lines in the job's error; the result keeps them all


class BootCheckFailed(HyperSDKError):
    code = "boot_check_failed"

    def __init__(self, message: str, result: dict, keep_destination: bool):
        super().__init__(message)
        self.result = result  # the job's result: what the check saw
        self.keep_destination = keep_destination  # the domain and its disks stay for inspection


def boot_check_spec(option: BootCheckOption, defaults) -> BootCheckSpec:
    """The job's options.boot_check over the config's boot_check section."""
    return BootCheckSpec(timeout=option.timeout or defaults.timeout, on_failure=option.on_failure or defaults.on_failure,
                         ready_pattern=option.ready_pattern)


async def boot_check(run: GuestRun, clock, reporter, *, final_xml: str, spec: BootCheckSpec, keep_running: bool,
                     network_name: str, shutdown_grace: float, network_gone: Callable[[], Awaitable] = None) -> dict:
    """``network_gone()`` once the isolated network is removed again (it was recorded as a leftover)."""
    network = await run.create_network(isolated_network_xml(network_name))
    try:
        return await _watch_boot(run, clock, reporter, final_xml=final_xml, spec=spec, keep_running=keep_running,
                                 network=network, shutdown_grace=shutdown_grace)
    finally:
        await run.destroy_network(network)
        if network_gone is not None:
            await network_gone()


async def _watch_boot(run: GuestRun, clock, reporter, *, final_xml, spec, keep_running, network, shutdown_grace):
    started = clock.seconds()
    await run.start_paused(isolated_xml(final_xml, network))
    watch = ConsoleWatch(spec.ready())
    verdict: Deferred = Deferred()

    def decide(outcome: Optional[Verdict]) -> None:
        if not verdict.called:
            verdict.callback(outcome)

    def on_output(data: bytes) -> None:
        outcome = watch.feed(data)
        if outcome is not None:
            decide(outcome)
        elif watch.tail:
            reporter.update(message=f"booting {run.name} ({clock.seconds() - started:.0f} s): {watch.tail[-1][:160]}")

    watching = await run.watch(on_output, (lambda: decide(Verdict(True, "the guest agent answered")))
                               if spec.agent_counts else None)
    watching.done.addBoth(lambda why: decide(Verdict(False, f"({why})")))
    timer = clock.callLater(spec.timeout, decide, None)
    try:
        outcome = await verdict
    finally:  # (cancelled: the job's clean-up removes the domain, running or not)
        if timer.active():
            timer.cancel()
        await watching.stop()
    seconds = round(clock.seconds() - started, 1)
    report = {"passed": bool(outcome and outcome.ready), "seconds": seconds,
              "matched": outcome.line if outcome else None, "console_tail": watch.last_lines()}
    if report["passed"] and keep_running:
        await run.plug(interfaces_of(final_xml))  # onto the real networks, as a cable plugged in
    else:
        await run.stop(shutdown_grace if report["passed"] else 0)
    if report["passed"]:
        report["left_running"] = keep_running
        return report
    if outcome is None:
        why = f"the guest did not come up within {spec.timeout:g} s"
    elif outcome.line.startswith("("):
        why = f"the domain stopped before the guest came up {outcome.line}"
    else:
        why = f"the guest failed to boot after {seconds:g} s: {outcome.line}"
    kept = spec.on_failure == "keep"
    tail = "\n".join(report["console_tail"][-TAIL_IN_ERROR:])
    where = f"domain {run.name} is kept (stopped) for inspection" if kept else f"domain {run.name} was removed"
    raise BootCheckFailed(f"{why} ({where}); last console lines:\n{tail}", {"boot_check": report}, kept)
