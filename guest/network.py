"""Configures eth0 from the network field of the host's greeting.

A VM booted with a network device gets its settings from the kernel command line
(init-stage2). A VM restored from a snapshot keeps the template's state, whose eth0 has no
address and whose MAC is the template's, so hearthd sends the new VM's settings in the
greeting instead, and this module applies them from scratch.
"""

import ipaddress
import os
import re
import subprocess

import runners

INTERFACE = "eth0"
# The same paths init-stage2 writes from hearth.pip=, hearth.npmrc= and hearth.aptconf=.
PACKAGE_FILE_PATHS = {
    "pip_conf": "/etc/pip.conf",
    "npmrc": "/etc/npmrc",
    "apt_conf": "/etc/apt/apt.conf.d/90hearth-egress",
}
MAC_ADDRESS = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# `ip` only changes a few kernel tables, so ten seconds without an exit means it is stuck.
IP_TIMEOUT_SECONDS = 10


class NetworkSetupError(Exception):
    """A setting was invalid or could not be applied. The message names which."""


def configure(settings):
    """Gives eth0 the MAC, address and default route in `settings`, after removing every
    address, route and neighbour entry it had, then writes the resolver and package files.
    Raises NetworkSetupError on the first step that fails."""
    address, prefix, gateway, mac_address = validate(settings)
    # One `ip` process runs every step and stops at the first that fails. The MAC changes
    # while the link is down, so the IPv6 link-local address comes from the new one.
    commands = [
        f"link set dev {INTERFACE} down",
        f"link set dev {INTERFACE} address {mac_address}",
        f"address flush dev {INTERFACE}",
        f"route flush dev {INTERFACE}",
        f"neighbour flush dev {INTERFACE}",
        f"link set dev {INTERFACE} up",
        f"address add {address}/{prefix} dev {INTERFACE}",
        f"route replace default via {gateway} dev {INTERFACE}",
    ]
    try:
        returncode, stdout, stderr = run_ip_batch("\n".join(commands) + "\n")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetworkSetupError(f"could not run ip: {error}") from error
    if returncode != 0:
        output = "; ".join((stderr or stdout).strip().splitlines())
        raise NetworkSetupError(f"ip could not configure {INTERFACE}: {output}")

    write_file("/etc/resolv.conf", f"nameserver {gateway}\n")
    files = settings.get("files") or {}
    if not isinstance(files, dict):
        raise NetworkSetupError("files must be an object")
    for name, content in files.items():
        path = PACKAGE_FILE_PATHS.get(name)
        if path is None:
            expected = ", ".join(PACKAGE_FILE_PATHS)
            raise NetworkSetupError(f"unknown package file {name!r}, expected one of {expected}")
        if not isinstance(content, str):
            raise NetworkSetupError(f"package file {name!r} must be a string")
        write_file(path, content)


def run_ip_batch(batch):
    """Runs `ip -batch -` on the given commands and returns (returncode, stdout, stderr).
    The pid is tracked while it runs, so that PID 1's orphan reaper does not take its exit
    status, which would make a failure look like success."""
    process = subprocess.Popen(
        ["ip", "-batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runners.TRACKED_PIDS.add(process.pid)
    try:
        stdout, stderr = process.communicate(batch, timeout=IP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    finally:
        runners.TRACKED_PIDS.discard(process.pid)
    return process.returncode, stdout, stderr


def validate(settings):
    """Returns (address, prefix, gateway, mac_address) checked, so that nothing but those
    values reaches the `ip` batch."""
    if not isinstance(settings, dict):
        raise NetworkSetupError("the network settings must be an object")
    address = parse_ipv4(settings.get("address"))
    gateway = parse_ipv4(settings.get("gateway"))
    prefix = settings.get("prefix")
    if not isinstance(prefix, int) or isinstance(prefix, bool) or not 0 <= prefix <= 32:
        raise NetworkSetupError(f"invalid prefix length {prefix!r}")
    mac_address = settings.get("mac_address")
    if not isinstance(mac_address, str) or not MAC_ADDRESS.fullmatch(mac_address):
        raise NetworkSetupError(f"invalid MAC address {mac_address!r}")
    return str(address), prefix, str(gateway), mac_address


def parse_ipv4(value):
    # IPv4Address also takes integers and bytes, which are no valid setting here.
    if not isinstance(value, str):
        raise NetworkSetupError(f"invalid IPv4 address {value!r}")
    try:
        return ipaddress.IPv4Address(value)
    except ipaddress.AddressValueError as error:
        raise NetworkSetupError(f"invalid IPv4 address: {error}") from error


def write_file(path, content):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            file.write(content)
    except OSError as error:
        raise NetworkSetupError(f"could not write {path}: {error}") from error
