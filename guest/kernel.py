"""The persistent Python kernel of a hearth session.

The agent starts it with stdin on /dev/null, stdout and stderr on pipes it reads, and a
request pipe and a reply pipe whose fds it names in HEARTH_REQUEST_FD and HEARTH_REPLY_FD. Each request or reply is a 4-byte big-endian length followed by
UTF-8 JSON. Code runs in one namespace that lives as long as this process, so variables and
imports persist between calls.
"""

import builtins
import importlib
import json
import linecache
import os
import signal
import struct
import sys
import traceback

LENGTH = struct.Struct(">I")


def join_cgroup():
    procs_path = os.environ.pop("HEARTH_CGROUP_PROCS", "")
    if procs_path:
        with open(procs_path, "w") as procs:
            procs.write(str(os.getpid()))


def read_exact(stream, size):
    """Reads exactly size bytes, or returns fewer only at end of file: a pipe read returns
    at most what the pipe holds, far less than a large request."""
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_request(stream):
    header = read_exact(stream, LENGTH.size)
    if len(header) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(header)
    return json.loads(read_exact(stream, length))


def write_reply(stream, reply):
    body = json.dumps(reply, separators=(",", ":")).encode()
    stream.write(LENGTH.pack(len(body)) + body)
    stream.flush()


def describe(error, skip_frames):
    """Returns the error as {name, value, traceback}, leaving out the kernel's own frames."""
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb)
    return {"name": type(error).__name__, "value": str(error), "traceback": "".join(lines)}


class Kernel:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cell_number = 0

    def run(self, request):
        self.cell_number += 1
        filename = f"<cell {self.cell_number}>"
        source = request["code"]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

        try:
            code = compile(source, filename, "exec")
        except (SyntaxError, ValueError) as error:
            return {"status": "error", "exit_code": 1, "error": describe(error, 1)}

        importlib.invalidate_caches()
        try:
            exec(code, self.namespace)
        except SystemExit as error:
            exit_code = system_exit_code(error.code)
            if exit_code == 0:
                return {"status": "ok", "exit_code": 0, "error": None}
            return {"status": "error", "exit_code": exit_code, "error": describe(error, 1)}
        except BaseException as error:
            return {"status": "error", "exit_code": 1, "error": describe(error, 1)}
        return {"status": "ok", "exit_code": 0, "error": None}


def system_exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


class CallContext:
    """Applies a call's env and cwd for that call only and restores them afterwards."""

    def __init__(self, request):
        self.env = request.get("env") or {}
        self.cwd = request.get("cwd")
        self.saved_env = {}
        self.saved_cwd = None

    def __enter__(self):
        for key, value in self.env.items():
            self.saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        if self.cwd:
            self.saved_cwd = os.getcwd()
            os.chdir(self.cwd)
        return self

    def __exit__(self, *exc_info):
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.saved_cwd is not None:
            try:
                os.chdir(self.saved_cwd)
            except OSError:
                pass
        return False


class StandardStreams:
    """Copies of the pipes on fds 1 and 2. Code that closes sys.stdout, sys.stderr or the
    fds, or points the fds elsewhere, loses its output for that call only."""

    STREAMS = ((1, "stdout", "strict"), (2, "stderr", "backslashreplace"))

    def __init__(self):
        self.pipes = {fd: os.fstat(fd) for fd, _, _ in self.STREAMS}
        self.saved = {fd: os.dup(fd) for fd, _, _ in self.STREAMS}

    def flush(self):
        """Flushes what the call left buffered to wherever its streams point now."""
        for _, name, _ in self.STREAMS:
            try:
                getattr(sys, name).flush()
            except (AttributeError, OSError, ValueError):
                pass

    def restore(self):
        """Puts the pipes back on fds 1 and 2 and reopens closed sys streams. Raises
        OSError when no copy of a pipe is left, which only a new kernel can fix."""
        for fd, name, errors in self.STREAMS:
            if not self.is_pipe(self.saved[fd], fd):
                # User code closed the copy, or reused its number: copy the fd if it is still
                # open on the pipe.
                if not self.is_pipe(fd, fd):
                    raise OSError(f"the kernel's pipe for {name} was closed")
                self.saved[fd] = os.dup(fd)
            if not self.is_pipe(fd, fd):
                os.dup2(self.saved[fd], fd)
            reopened = None
            for attribute in (name, f"__{name}__"):
                stream = getattr(sys, attribute)
                if stream is None or getattr(stream, "closed", False):
                    if reopened is None:
                        reopened = open(fd, "w", encoding="utf-8", errors=errors, closefd=False)
                    setattr(sys, attribute, reopened)

    def is_pipe(self, fd, stream_fd):
        """Returns whether fd is open on the kernel's original pipe for stream_fd."""
        try:
            info = os.fstat(fd)
        except OSError:
            return False
        pipe = self.pipes[stream_fd]
        return (info.st_dev, info.st_ino) == (pipe.st_dev, pipe.st_ino)


def refresh(settings):
    """Takes on a new session's env and reseeds the random module, for a kernel that was
    started before its session existed (warm pool, snapshot)."""
    env = settings.get("env") or {}
    os.environ.update(env)
    if "HOME" in env:
        # A booted kernel starts in the session's HOME, so a claimed one moves there.
        try:
            os.chdir(env["HOME"])
        except OSError:
            pass
    if "random" in sys.modules:
        sys.modules["random"].seed()


def main():
    join_cgroup()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    requests = os.fdopen(int(os.environ.pop("HEARTH_REQUEST_FD")), "rb", buffering=0)
    replies = os.fdopen(int(os.environ.pop("HEARTH_REPLY_FD")), "wb", buffering=0)
    kernel = Kernel()
    streams = StandardStreams()
    while True:
        try:
            try:
                request = read_request(requests)
            except KeyboardInterrupt:
                continue  # an interrupt meant for a call that already ended
            if request is None:
                return
            if "refresh" in request:
                # A claiming session numbers its cells from 1, whatever the template ran.
                kernel.cell_number = 0
                refresh(request["refresh"])
            with CallContext(request):
                reply = kernel.run(request)
        except KeyboardInterrupt as error:
            # An interrupt that lands outside user code still ends the call as interrupted.
            reply = {"status": "error", "exit_code": 1, "error": describe(error, 0)}
        streams.flush()
        try:
            streams.restore()
        except OSError:
            return  # the agent notices the exit and starts a new kernel
        write_reply(replies, reply)


if __name__ == "__main__":
    main()
