"""The interface names a guest's own network configuration expects. Pure.

A guest configured for ``ens192`` brings its address up only on an interface of that name. When
vCenter does not report a NIC's PCI slot, these names are what tells which name to pin (names.py).
Read from the files the guest inspector brings back: systemd-networkd ``.network`` ``[Match]``,
ifupdown ``iface``/``auto``, netplan ``ethernets``, NetworkManager keyfiles ``interface-name=``,
and ifcfg ``DEVICE=``/``HWADDR=``. A name that comes with the MAC address it is for keeps it: that
NIC can be found by its MAC.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from typing import Callable, Iterator, Mapping, Optional

import yaml
from attrs import frozen

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_GLOB = re.compile(r"[*?\[\]]")


@frozen
class ConfiguredName:
    name: str  # "ens192"
    mac: Optional[str]  # "00:50:56:aa:bb:cc" when the configuration matches on it too
    source: str  # the file that names it


def configured_names(files: Mapping[str, str]) -> tuple[ConfiguredName, ...]:
    """The interface names ``files`` ({path in the guest: text}) configure, in file order; one per
    name (with its MAC when any file gives one). ``lo``, wildcards and negations are left out."""
    found: dict[str, ConfiguredName] = {}
    for path in sorted(files):
        parse = _parser(path)
        if parse is None:
            continue
        for name, mac in parse(files[path]):
            name = name.strip()
            if not name or name == "lo" or _GLOB.search(name) or name.startswith("!"):
                continue
            if name not in found or (found[name].mac is None and mac is not None):
                found[name] = ConfiguredName(name, mac, path)
    return tuple(found.values())


def _parser(path: str) -> Optional[Callable[[str], Iterator[tuple[str, Optional[str]]]]]:
    if fnmatch.fnmatch(path, "/etc/systemd/network/*.network"):
        return networkd
    if path == "/etc/network/interfaces" or path.startswith("/etc/network/interfaces.d/"):
        return ifupdown
    if fnmatch.fnmatch(path, "/etc/netplan/*.yaml"):
        return netplan
    if path.startswith("/etc/NetworkManager/system-connections/"):
        return networkmanager
    if fnmatch.fnmatch(path, "/etc/sysconfig/network*/ifcfg-*"):
        return lambda text: ifcfg(text, default_name=path.rsplit("ifcfg-", 1)[1])
    return None


def normal_mac(text: object) -> Optional[str]:
    """``00:50:56:aa:bb:cc`` from the spellings configuration files use, else None."""
    if not isinstance(text, str):
        return None
    value = text.strip().strip('"').lower().replace("-", ":")
    if ";" in value:  # NetworkManager's old byte list: "0;80;86;170;187;204;"
        try:
            value = ":".join(f"{int(b):02x}" for b in value.strip(";").split(";"))
        except ValueError:
            return None
    return value if _MAC.match(value) else None


def _ini(text: str) -> Iterator[tuple[str, str, str]]:
    """(section, key, value) of an INI-like file (systemd units, NetworkManager keyfiles)."""
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, _, value = line.partition("=")
            yield section, key.strip(), value.strip()


def _one_mac(macs: list[str]) -> Optional[str]:
    found = {m for m in (normal_mac(x) for x in macs) if m}
    return found.pop() if len(found) == 1 else None


def networkd(text: str) -> Iterator[tuple[str, Optional[str]]]:
    """``[Match] Name=`` (space-separated, repeatable), with ``MACAddress=`` when it names one."""
    names, macs = [], []
    for section, key, value in _ini(text):
        if section != "Match":
            continue
        if key == "Name":
            names += value.split() if value else []
        elif key in ("MACAddress", "PermanentMACAddress"):
            macs += value.split()
    mac = _one_mac(macs)
    for name in names:
        yield name, mac


def ifupdown(text: str) -> Iterator[tuple[str, Optional[str]]]:
    """``iface NAME ...``, ``auto NAME...``, ``allow-hotplug NAME...`` (an alias ``ens192:1`` is ens192)."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "iface":
            yield words[1].split(":", 1)[0], None
        elif words and (words[0] == "auto" or words[0].startswith("allow-")):
            for name in words[1:]:
                yield name.split(":", 1)[0], None


def netplan(text: str) -> Iterator[tuple[str, Optional[str]]]:
    """``network.ethernets``: each id is the name, unless ``match`` says otherwise (``set-name`` wins)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    ethernets = ((doc or {}).get("network") or {}).get("ethernets") if isinstance(doc, dict) else None
    if not isinstance(ethernets, dict):
        return
    for ident, settings in ethernets.items():
        settings = settings if isinstance(settings, dict) else {}
        match = settings.get("match") if isinstance(settings.get("match"), dict) else None
        mac = normal_mac(match.get("macaddress")) if match else None
        name = settings.get("set-name") or (match.get("name") if match else ident)
        if isinstance(name, str):
            yield name, mac


def networkmanager(text: str) -> Iterator[tuple[str, Optional[str]]]:
    """``[connection] interface-name=``, with ``[ethernet] mac-address=`` when it is set."""
    name, mac = None, None
    for section, key, value in _ini(text):
        if section == "connection" and key == "interface-name":
            name = value
        elif section in ("ethernet", "802-3-ethernet") and key == "mac-address":
            mac = normal_mac(value)
    if name:
        yield name, mac


def ifcfg(text: str, default_name: str) -> Iterator[tuple[str, Optional[str]]]:
    """``DEVICE=`` (else the file's own suffix), with ``HWADDR=`` when it is set."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            continue
        values[key.strip()] = words[0] if words else ""
    yield values.get("DEVICE") or default_name, normal_mac(values.get("HWADDR"))
