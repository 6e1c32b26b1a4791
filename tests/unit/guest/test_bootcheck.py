"""The boot check's reading of a serial console, and its isolated NICs."""

import re
import xml.etree.ElementTree as ET

from hypersdk.guest.bootcheck import DEFAULT_READY, ConsoleWatch, interfaces_of, isolated_xml


def feed_all(watch, *chunks):
    for chunk in chunks:
        verdict = watch.feed(chunk)
        if verdict is not None:
            return verdict
    return None


def test_a_login_prompt_is_ready_even_split_across_reads_and_never_ended_by_a_newline():
    watch = ConsoleWatch(DEFAULT_READY)
    verdict = feed_all(watch, b"[  OK  ] Started getty.\r\n\r\nDebian GNU/Linux 12 vm ttyS0\r\n\r\nvm lo", b"gin: ")
    assert verdict.ready and verdict.line == "vm login:"


def test_a_line_that_arrives_in_pieces_is_judged_whole():
    watch = ConsoleWatch(re.compile(r"HYPERSDK-MARKER \S+ \S+"))
    assert watch.feed(b"HYPERSDK-MARKER ens192 1") is None  # (it would match already: it is not a prompt)
    verdict = watch.feed(b"0.11.12.13/24\r\n")
    assert verdict.ready and verdict.line == "HYPERSDK-MARKER ens192 10.11.12.13/24"


def test_a_prompt_that_other_output_ran_into_still_counts():
    watch = ConsoleWatch(DEFAULT_READY)
    assert feed_all(watch, b"vmware-guest login: HYPERSDK-MARKER ens192 10.11.12.13/24\r\n").ready


def test_kernel_lines_mentioning_login_do_not():
    watch = ConsoleWatch(DEFAULT_READY)
    assert feed_all(watch, b"[  OK  ] Started systemd-logind.service - User Login Management.\r\n",
                    b"[    5.1] audit: login: uid=0\r\n") is None


def test_a_root_device_that_never_appears_fails_at_once_keeping_the_last_lines():
    watch = ConsoleWatch(DEFAULT_READY)
    lines = [f"[ {i}] line {i}".encode() for i in range(40)]
    verdict = feed_all(watch, b"\r\n".join(lines) + b"\r\n",
                       b"Gave up waiting for root file system device.  Common problems:\r\n")
    assert not verdict.ready and "Gave up waiting" in verdict.line
    tail = watch.last_lines()
    assert len(tail) == 30 and tail[-1].startswith("Gave up waiting")


def test_a_custom_pattern_and_colours_stripped():
    watch = ConsoleWatch(re.compile(r"HYPERSDK-MARKER \S+ \S+"))
    verdict = feed_all(watch, b"\x1b[0;32m  OK  \x1b[0m] Reached target\r\n", b"HYPERSDK-MARKER ens192 10.11.12.13/24\r\n")
    assert verdict.ready and verdict.line == "HYPERSDK-MARKER ens192 10.11.12.13/24"
    assert watch.last_lines()[0] == "  OK  ] Reached target"


DOMAIN = """<domain type='qemu'><name>vm</name><devices>
<interface type='bridge'><mac address='00:50:56:01:02:03'/><source bridge='br0'/><model type='vmxnet3'/></interface>
<interface type='network'><mac address='00:50:56:01:02:04'/><source network='default'/><model type='e1000e'/>
<target dev='vnet0'/></interface></devices></domain>"""


def test_isolated_nics_keep_their_mac_and_model_on_the_isolated_network():
    dom = ET.fromstring(isolated_xml(DOMAIN, "hypersdk-check-1"))
    ifaces = dom.findall("devices/interface")
    assert [(i.get("type"), i.find("source").get("network"), i.find("mac").get("address"), i.find("model").get("type"))
            for i in ifaces] == [("network", "hypersdk-check-1", "00:50:56:01:02:03", "vmxnet3"),
                                 ("network", "hypersdk-check-1", "00:50:56:01:02:04", "e1000e")]
    assert all(i.find("target") is None for i in ifaces)
    assert [ET.fromstring(x).find("source").attrib for x in interfaces_of(DOMAIN)] == [{"bridge": "br0"},
                                                                                        {"network": "default"}]
