"""The boot check's decisions: what the console says, and how the domain is kept off the network.

Pure. ``ConsoleWatch`` is fed the raw bytes of the guest's serial console and
says when the guest is up (the ready pattern: by default a login prompt) or
has certainly failed (a kernel panic, an initramfs that gave up on its root
device), keeping the last lines for the job. ``isolated_xml`` rewrites a
domain's NICs onto an isolated network for the check: same MACs and models,
no way to clash with the source VM still on the real network.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections import deque
from typing import Optional

from attrs import frozen

TAIL_LINES = 30
DEFAULT_READY = re.compile(r"^\S+ login:")  # a getty's prompt ("vm-1 login: "), maybe with other output after it
# Lines after which the guest will not come up by itself: no need to wait for the timeout.
FAILURES = re.compile("|".join((
    r"Kernel panic - not syncing",
    r"Gave up waiting for root (?:file system )?device",
    r"ALERT!.*does not exist\.\s+Dropping to a shell",
    r"You are in emergency mode",
    r"Entering emergency mode",
    r"dracut-initqueue\[\d+\]: Warning: dracut-initqueue timeout",
    r"No bootable device",
    r"Boot failed: not a bootable disk",
    r"^grub rescue>",
)))
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
_BREAKS = re.compile(r"\r\n|\r|\n")
_PROMPT_END = re.compile(r"[:>#$]\s*$")  # how prompts end ("login: ", "grub rescue>", "# ")


@frozen
class BootCheckSpec:
    timeout: float
    on_failure: str  # "keep" | "remove"
    ready_pattern: Optional[str] = None  # None: a login prompt, or the guest agent answering

    def ready(self) -> re.Pattern:
        return DEFAULT_READY if self.ready_pattern is None else re.compile(self.ready_pattern)

    @property
    def agent_counts(self) -> bool:
        return self.ready_pattern is None


@frozen
class Verdict:
    ready: bool
    line: str  # the console line that decided it


class ConsoleWatch:
    def __init__(self, ready: re.Pattern, tail: int = TAIL_LINES):
        self._ready = ready
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""
        self.tail: deque[str] = deque(maxlen=tail)

    def feed(self, data: bytes) -> Optional[Verdict]:
        """Take console output; a Verdict once the guest is up or has failed, else None."""
        text = self._partial + _ESCAPES.sub("", self._decoder.decode(data))
        *lines, self._partial = _BREAKS.split(text)
        for line in lines:
            line = _printable(line)
            if not line.strip():
                continue
            self.tail.append(line)
            verdict = self._judge(line)
            if verdict is not None:
                return verdict
        # a prompt waits for input on a line of its own, never ended; any other unended line is only
        # the first part of one (the console may deliver a line in pieces)
        partial = _printable(self._partial)
        return self._judge(partial, partial=True) if _PROMPT_END.search(partial) else None

    def _judge(self, line: str, partial: bool = False) -> Optional[Verdict]:
        if FAILURES.search(line):
            if partial:
                self.tail.append(line)
            return Verdict(False, line)
        if self._ready.search(line):
            if partial:
                self.tail.append(line)
            return Verdict(True, line)
        return None

    def last_lines(self) -> list[str]:
        return list(self.tail) + ([_printable(self._partial)] if self._partial.strip() and
                                  (not self.tail or self.tail[-1] != _printable(self._partial)) else [])


def _printable(line: str) -> str:
    return "".join(c for c in line if c.isprintable() or c == "\t").rstrip()


def isolated_xml(domain_xml: str, network: str) -> str:
    """The domain with every NIC on ``network`` (same MAC and model); the rest as it is."""
    dom = ET.fromstring(domain_xml)
    for iface in dom.iterfind("devices/interface"):
        for child in list(iface):
            if child.tag not in ("mac", "model", "address", "boot", "alias"):
                iface.remove(child)
        iface.set("type", "network")
        ET.SubElement(iface, "source", network=network)
    return ET.tostring(dom, encoding="unicode")


def interfaces_of(domain_xml: str) -> list[str]:
    """Each ``<interface>`` of a domain, as the XML a live device update takes."""
    dom = ET.fromstring(domain_xml)
    return [ET.tostring(iface, encoding="unicode") for iface in dom.iterfind("devices/interface")]


def isolated_network_xml(name: str) -> str:
    """A network with no forwarding, no address and no DHCP: its guests reach nothing but each other."""
    net = ET.Element("network")
    ET.SubElement(net, "name").text = name
    ET.SubElement(net, "bridge", stp="off")
    return ET.tostring(net, encoding="unicode")
