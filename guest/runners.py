"""Runners for user code: the persistent Python kernel and per-call Bash processes.

Each runner's run() streams the call's stdout and stderr through emit(frame_type, bytes) as
they are produced, up to the call's output limit per stream, and returns the result frame.
"""

import fcntl
import json
import os
import select
import selectors
import signal
import struct
import subprocess
import threading
import time

import protocol

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_PATH = os.path.join(HERE, "kernel.py")
BASH_PRELUDE_PATH = os.path.join(HERE, "bash-prelude.sh")
STATE_DIR = "/run/hearth"

# How long an interrupted Python call may take to stop before the kernel is restarted.
INTERRUPT_GRACE_SECONDS = 2.0
# Exit code reported for a call that hit its timeout, as coreutils' timeout(1) does.
TIMEOUT_EXIT_CODE = 124
READ_CHUNK_BYTES = 65536
# Reads per drain before the caller's loop checks its deadline again: 1 MiB at most.
DRAIN_CHUNKS = 16

# Pids that runners wait for themselves, so that PID 1's orphan reaper leaves them alone.
TRACKED_PIDS = set()


class Canceller:
    """Lets the host stop the running call: a cancel wakes the runner's select loop, which
    then ends the call as if its deadline had passed."""

    def __init__(self):
        self.read_fd, self.write_fd = nonblocking_pipe()

    def request(self):
        os.write(self.write_fd, b"x")

    def reset(self):
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass


class CallError(Exception):
    """A request the agent rejects before running anything."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class OutputStreams:
    """Forwards bytes from stdout and stderr pipes, counting all and sending up to a limit."""

    def __init__(self, emit, limit_bytes):
        self.emit = emit
        self.limit_bytes = limit_bytes
        self.totals = {protocol.STDOUT: 0, protocol.STDERR: 0}

    def forward(self, frame_type, data):
        sent = self.totals[frame_type]
        self.totals[frame_type] = sent + len(data)
        if sent < self.limit_bytes:
            self.emit(frame_type, data[: self.limit_bytes - sent])

    def drain(self, fd, frame_type):
        """Reads what the pipe contains now, without waiting, up to DRAIN_CHUNKS reads.
        Returns False at end of file.

        The bound matters because a writer that never pauses, such as `yes`, can keep the
        pipe from ever running empty; the caller's loop must get back to its deadline.
        """
        for _ in range(DRAIN_CHUNKS):
            try:
                data = os.read(fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.forward(frame_type, data)
        return True

    def summary(self):
        stdout_bytes = self.totals[protocol.STDOUT]
        stderr_bytes = self.totals[protocol.STDERR]
        return {
            "stdout_bytes": stdout_bytes,
            "stderr_bytes": stderr_bytes,
            "truncated": max(stdout_bytes, stderr_bytes) > self.limit_bytes,
        }


def nonblocking_pipe():
    read_fd, write_fd = os.pipe()
    flags = fcntl.fcntl(read_fd, fcntl.F_GETFL)
    fcntl.fcntl(read_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return read_fd, write_fd


def check_cwd(request):
    cwd = request.get("cwd")
    if cwd is not None and not os.path.isdir(cwd):
        raise CallError("cwd_not_found", f"the working directory {cwd} does not exist in the VM")


def memory_error(cgroups):
    return {
        "name": "MemoryLimitExceeded",
        "value": (
            f"the code used more than the session's memory limit for user code "
            f"({cgroups.memory_limit_mib()} MiB) and the guest kernel killed it"
        ),
        "traceback": "",
    }


def signal_exit_code(returncode):
    """Maps a Popen return code to a shell-style exit code and the signal, if any."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


class PythonRunner:
    def __init__(self, cgroups, session_env, canceller):
        self.cgroups = cgroups
        self.canceller = canceller
        self.session_env = session_env
        self.process = None
        self.lock = threading.Lock()
        # The env of a refresh that the kernel has not received yet, or None.
        self.pending_refresh = None

    def start(self):
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self._spawn()

    def running(self):
        return self.process is not None and self.process.poll() is None

    def refresh(self, env):
        """Makes the running kernel take on a claiming session's env, reseed its random
        module and number its cells from 1 before it runs the next call. It travels with
        that call's request, which spares the greeting a round trip to the kernel."""
        with self.lock:
            if self.pending_refresh is None:
                self.pending_refresh = {}
            self.pending_refresh.update(env)

    def _spawn(self):
        procs_path = self.cgroups.create("python")
        if procs_path:
            self.cgroups.kill(procs_path)
        request_read, self.request_fd = os.pipe()
        self.reply_fd, reply_write = os.pipe()
        self.stdout_fd, stdout_write = nonblocking_pipe()
        self.stderr_fd, stderr_write = nonblocking_pipe()
        env = dict(self.session_env)
        env["HEARTH_CGROUP_PROCS"] = procs_path or ""
        env["HEARTH_REQUEST_FD"] = str(request_read)
        env["HEARTH_REPLY_FD"] = str(reply_write)
        self.process = subprocess.Popen(
            ["/usr/bin/python3", KERNEL_PATH],
            stdin=subprocess.DEVNULL,
            stdout=stdout_write,
            stderr=stderr_write,
            pass_fds=(request_read, reply_write),
            env=env,
            cwd=env.get("HOME", "/"),
        )
        TRACKED_PIDS.add(self.process.pid)
        for fd in (request_read, reply_write, stdout_write, stderr_write):
            os.close(fd)
        self.procs_path = procs_path
        # One selector per kernel process, reused by every call, keeps the per-call cost low.
        self.pidfd = os.pidfd_open(self.process.pid)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout_fd, selectors.EVENT_READ, protocol.STDOUT)
        self.selector.register(self.stderr_fd, selectors.EVENT_READ, protocol.STDERR)
        self.selector.register(self.reply_fd, selectors.EVENT_READ, "reply")
        self.selector.register(self.pidfd, selectors.EVENT_READ, "exit")
        self.selector.register(self.canceller.read_fd, selectors.EVENT_READ, "cancel")

    def _stop(self):
        if self.process is None:
            return
        self.cgroups.kill(self.procs_path)
        try:
            self.process.kill()
        except ProcessLookupError:
            pass
        self.process.wait()
        TRACKED_PIDS.discard(self.process.pid)
        self.selector.close()
        for fd in (self.request_fd, self.reply_fd, self.stdout_fd, self.stderr_fd, self.pidfd):
            os.close(fd)
        self.process = None

    def run(self, request, emit):
        check_cwd(request)
        self.start()
        started = time.monotonic()
        output = OutputStreams(emit, request["output_limit_bytes"])

        kernel_request = {
            "code": request["code"],
            "env": request.get("env") or {},
            "cwd": request.get("cwd"),
        }
        with self.lock:
            if self.pending_refresh is not None:
                kernel_request["refresh"] = {"env": self.pending_refresh}
                self.pending_refresh = None
        body = json.dumps(kernel_request).encode()
        os.write(self.request_fd, struct.pack(">I", len(body)) + body)

        timeout_seconds = request.get("timeout_seconds")
        deadline = started + timeout_seconds if timeout_seconds else None
        reply, timed_out, restarted = self._wait(output, deadline)

        result = output.summary()
        result["execution_time"] = time.monotonic() - started
        result["kernel_restarted"] = restarted
        if timed_out:
            result.update(status="timeout", exit_code=TIMEOUT_EXIT_CODE)
            result["error"] = reply["error"] if reply else {
                "name": "TimeoutError",
                "value": (
                    f"the code ran past its {timeout_seconds} s timeout and ignored the "
                    "interrupt, so the Python kernel was restarted and its variables are lost"
                ),
                "traceback": "",
            }
        elif reply is None:
            result.update(status="error", exit_code=self.last_exit_code)
            if self.cgroups.new_oom_kills():
                result["error"] = memory_error(self.cgroups)
            elif self.last_exit_code is None:
                result["exit_code"] = 1
                result["error"] = {
                    "name": "KernelDied",
                    "value": (
                        "the Python kernel's reply pipe carried something that was not a reply, "
                        "so the kernel was restarted and its variables are lost"
                    ),
                    "traceback": "",
                }
            else:
                result["error"] = {
                    "name": "KernelDied",
                    "value": (
                        f"the Python kernel exited with code {self.last_exit_code} during the "
                        "call and was restarted, so its variables are lost"
                    ),
                    "traceback": "",
                }
        else:
            result.update(status=reply["status"], exit_code=reply["exit_code"])
            result["error"] = reply["error"]
        return result

    def _wait(self, output, deadline):
        """Forwards output until the kernel replies or dies. Returns (reply, timed_out,
        restarted)."""
        selector = self.selector
        interrupted_at = None
        while True:
            if interrupted_at is not None:
                wake_at = interrupted_at + INTERRUPT_GRACE_SECONDS
            else:
                wake_at = deadline
            timeout = None if wake_at is None else max(0, wake_at - time.monotonic())
            events = selector.select(timeout)
            for key, _ in events:
                if key.data == "cancel":
                    self.canceller.reset()
                    if interrupted_at is None:
                        deadline = time.monotonic()
                    continue
                if key.data == "reply":
                    try:
                        reply = read_reply(self.reply_fd)
                    except EOFError:
                        # The kernel died; its pidfd may not have fired yet.
                        return self._restart_after_death(output, interrupted_at)
                    except MalformedReply:
                        # The pipe cannot be trusted any more, so neither can the kernel.
                        self.last_exit_code = None
                        self._drain(output)
                        self._stop()
                        self.start()
                        return None, interrupted_at is not None, True
                    self._drain(output)
                    return reply, interrupted_at is not None, False
                if key.data == "exit":
                    return self._restart_after_death(output, interrupted_at)
                if not output.drain(key.fd, key.data):
                    selector.unregister(key.fd)
            # Checked after the events, so that a reply that is already waiting is never
            # followed by an interrupt of an idle kernel. Output that never pauses must not
            # keep the deadline from being noticed either.
            if interrupted_at is not None:
                wake_at = interrupted_at + INTERRUPT_GRACE_SECONDS
            else:
                wake_at = deadline
            if wake_at is not None and time.monotonic() >= wake_at:
                if interrupted_at is None:
                    interrupted_at = time.monotonic()
                    os.kill(self.process.pid, signal.SIGINT)
                else:
                    self._drain(output)
                    self._stop()
                    self.start()
                    return None, True, True

    def _restart_after_death(self, output, interrupted_at):
        self._drain(output)
        self.last_exit_code, _ = signal_exit_code(self.process.wait())
        self._stop()
        self.start()
        return None, interrupted_at is not None, True

    def _drain(self, output):
        output.drain(self.stdout_fd, protocol.STDOUT)
        output.drain(self.stderr_fd, protocol.STDERR)


class MalformedReply(Exception):
    """The kernel's reply pipe carried something other than a whole, valid reply. User code
    can write to that pipe, so this is not trusted to be the kernel's doing."""


# A real reply is a few hundred bytes written at once; one that takes longer is not real.
REPLY_READ_TIMEOUT_SECONDS = 2.0
MAX_REPLY_BYTES = 1 << 20


def read_reply(fd):
    """Reads one length-prefixed JSON reply. Raises EOFError when the kernel is gone and
    MalformedReply when the bytes do not form a reply within the read timeout."""
    deadline = time.monotonic() + REPLY_READ_TIMEOUT_SECONDS
    (length,) = struct.unpack(">I", read_exact(fd, 4, deadline))
    if length > MAX_REPLY_BYTES:
        raise MalformedReply(f"a reply of {length} bytes")
    try:
        return json.loads(read_exact(fd, length, deadline))
    except ValueError as error:
        raise MalformedReply(str(error)) from error


def read_exact(fd, size, deadline):
    chunks = []
    while size:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        if not ready:
            raise MalformedReply("a reply that stopped partway")
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the Python kernel closed its reply pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class BashRunner:
    """Runs each call in a new `bash -c`, in a cgroup of its own.

    The shell's state between calls is its working directory and exported variables: the
    prelude's EXIT trap writes them to a state file, and the next call starts from them.
    """

    # Variables that belong to one shell process, not to the session.
    SHELL_OWNED = {"PWD", "OLDPWD", "SHLVL", "_", "BASH_ENV"}

    def __init__(self, cgroups, session_env, canceller):
        self.cgroups = cgroups
        self.session_env = session_env
        self.canceller = canceller
        self.cwd = None
        self.exports = None
        self.lingering = []

    def apply_session_env(self, env):
        """Adds a claiming session's env to the exports that the next call starts with. A
        session's HOME is also where its first call starts, as on a booted VM."""
        if self.exports is not None:
            self.exports.update(env)
            if "HOME" in env:
                self.cwd = env["HOME"]

    def run(self, request, emit):
        check_cwd(request)
        if self.exports is None:
            self.exports = dict(self.session_env)
            self.cwd = self.exports.get("HOME", "/")
        os.makedirs(STATE_DIR, exist_ok=True)
        state_path = f"{STATE_DIR}/bash-state"
        try:
            os.unlink(state_path)
        except FileNotFoundError:
            pass

        call_env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        env = dict(self.exports)
        env.update(call_env)
        procs_path = self.cgroups.create_call_group()
        env["BASH_ENV"] = BASH_PRELUDE_PATH
        env["HEARTH_STATE_FILE"] = state_path
        env["HEARTH_CGROUP_PROCS"] = procs_path or ""

        cwd = request.get("cwd") or self.cwd
        if not os.path.isdir(cwd):
            cwd = "/"
        stdout_fd, stdout_write = nonblocking_pipe()
        stderr_fd, stderr_write = nonblocking_pipe()
        started = time.monotonic()
        process = subprocess.Popen(
            ["/bin/bash", "-c", request["code"]],
            stdin=subprocess.DEVNULL,
            stdout=stdout_write,
            stderr=stderr_write,
            env=env,
            cwd=cwd,
        )
        TRACKED_PIDS.add(process.pid)
        os.close(stdout_write)
        os.close(stderr_write)

        output = OutputStreams(emit, request["output_limit_bytes"])
        timeout_seconds = request.get("timeout_seconds")
        deadline = started + timeout_seconds if timeout_seconds else None
        timed_out = self._wait(process, procs_path, output, stdout_fd, stderr_fd, deadline)
        exit_code, signal_number = signal_exit_code(process.wait())
        TRACKED_PIDS.discard(process.pid)
        self._linger(stdout_fd, stderr_fd, output)

        result = output.summary()
        result["execution_time"] = time.monotonic() - started
        result["kernel_restarted"] = False
        result["error"] = None
        if timed_out:
            result.update(status="timeout", exit_code=TIMEOUT_EXIT_CODE)
        else:
            result.update(status="ok" if exit_code == 0 else "error", exit_code=exit_code)
            if signal_number is not None:
                result["signal"] = signal_number
            if exit_code != 0 and self.cgroups.new_oom_kills():
                result["error"] = memory_error(self.cgroups)
        if not timed_out:
            self._load_state(state_path, call_env)
        return result

    def _wait(self, process, procs_path, output, stdout_fd, stderr_fd, deadline):
        """Forwards output until bash exits. Returns True when the deadline ended the call."""
        selector = selectors.DefaultSelector()
        selector.register(stdout_fd, selectors.EVENT_READ, protocol.STDOUT)
        selector.register(stderr_fd, selectors.EVENT_READ, protocol.STDERR)
        pidfd = os.pidfd_open(process.pid)
        selector.register(pidfd, selectors.EVENT_READ, "exit")
        selector.register(self.canceller.read_fd, selectors.EVENT_READ, "cancel")
        timed_out = False
        try:
            while True:
                timeout = None
                if deadline is not None and not timed_out:
                    timeout = max(0, deadline - time.monotonic())
                events = selector.select(timeout)
                # Output that never pauses must not keep the deadline from being noticed.
                if deadline is not None and not timed_out and time.monotonic() >= deadline:
                    timed_out = True
                    self.cgroups.kill(procs_path)
                    # Bash may not have joined its group yet when the timeout is very short.
                    process.kill()
                for key, _ in events:
                    if key.data == "cancel":
                        self.canceller.reset()
                        deadline = time.monotonic()
                        continue
                    if key.data == "exit":
                        if timed_out:
                            # Nothing in the call's group outlives a timeout.
                            self.cgroups.kill(procs_path)
                        output.drain(stdout_fd, protocol.STDOUT)
                        output.drain(stderr_fd, protocol.STDERR)
                        return timed_out
                    if not output.drain(key.fd, key.data):
                        selector.unregister(key.fd)
        finally:
            selector.close()
            os.close(pidfd)

    def _linger(self, stdout_fd, stderr_fd, output):
        """Keeps reading pipes that background processes still hold, and discards it, so
        that those processes do not block or die of SIGPIPE after the call returns."""

        def discard(fd):
            try:
                while True:
                    try:
                        if not os.read(fd, READ_CHUNK_BYTES):
                            break
                    except BlockingIOError:
                        time.sleep(0.2)
            finally:
                os.close(fd)

        for fd in (stdout_fd, stderr_fd):
            threading.Thread(target=discard, args=(fd,), daemon=True).start()

    def _load_state(self, state_path, call_env):
        try:
            with open(state_path, "rb") as state_file:
                fields = state_file.read().split(b"\0")
        except FileNotFoundError:
            return  # the shell ended without its EXIT trap, for example by exec or a kill
        cwd = fields[0].decode(errors="surrogateescape")
        exports = {}
        for field in fields[1:]:
            if b"=" not in field:
                continue
            key, value = field.decode(errors="surrogateescape").split("=", 1)
            if key not in self.SHELL_OWNED and not key.startswith("HEARTH_"):
                exports[key] = value
        for key in call_env:
            if key in self.exports:
                exports[key] = self.exports[key]
            else:
                exports.pop(key, None)
        self.cwd = cwd or self.cwd
        self.exports = exports
