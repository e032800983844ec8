"""The agent's channel to hearthd: a virtio-serial port (QEMU) or a vsock port (Firecracker).

The kernel command line selects it with hearth.channel=serial:NAME or hearth.channel=vsock:PORT.
"""

import os
import socket
import time

DEFAULT_CHANNEL = "serial:hearth.agent"
VIRTIO_PORTS = "/sys/class/virtio-ports"


class ChannelClosed(Exception):
    pass


class SerialChannel:
    """A virtio-serial port. A read returns 0 bytes while no host end is connected, so the
    reader waits and tries again instead of treating that as the end of the stream."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)

    def read_exact(self, size):
        chunks = []
        remaining = size
        while remaining:
            chunk = os.read(self.fd, remaining)
            if not chunk:
                time.sleep(0.01)
                continue
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def write_all(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


class VsockChannel:
    """A vsock port the agent listens on. When the host's connection drops, the agent
    accepts the next one, so hearthd can reconnect after a restart."""

    def __init__(self, port):
        self.listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        self.listener.bind((socket.VMADDR_CID_ANY, port))
        self.listener.listen(1)
        self.connection = None

    def _connected(self):
        if self.connection is None:
            self.connection, _ = self.listener.accept()
        return self.connection

    def read_exact(self, size):
        chunks = []
        remaining = size
        while remaining:
            try:
                chunk = self._connected().recv(remaining)
            except OSError:
                # A reset, for example after a snapshot restore, ends this connection only.
                chunk = b""
            if not chunk:
                self.connection.close()
                self.connection = None
                if chunks:
                    raise ChannelClosed("the host closed the channel in the middle of a frame")
                continue
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def write_all(self, data):
        try:
            self._connected().sendall(data)
        except OSError:
            # The host went away; what it did not receive is lost with its connection.
            self.connection.close()
            self.connection = None


def find_serial_port(name):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.isdir(VIRTIO_PORTS):
            for port in os.listdir(VIRTIO_PORTS):
                try:
                    with open(os.path.join(VIRTIO_PORTS, port, "name")) as name_file:
                        if name_file.read().strip() == name:
                            return "/dev/" + port
                except OSError:
                    continue
        time.sleep(0.05)
    raise RuntimeError(f"no virtio-serial port named {name!r} appeared within 10 s")


def channel_setting():
    with open("/proc/cmdline") as cmdline:
        for argument in cmdline.read().split():
            if argument.startswith("hearth.channel="):
                return argument.split("=", 1)[1]
    return DEFAULT_CHANNEL


def open_channel():
    kind, _, target = channel_setting().partition(":")
    if kind == "vsock":
        return VsockChannel(int(target))
    if kind == "serial":
        return SerialChannel(find_serial_port(target))
    raise RuntimeError(f"unknown hearth.channel kind {kind!r}: expected serial or vsock")
