"""hearth's guest agent: PID 1 of the VM after init, standard library only.

It speaks the frame protocol in protocol.py over one channel to hearthd (a virtio-serial
port under QEMU, a vsock port under Firecracker) and runs user code in child processes,
never in its own: a persistent Python kernel (kernel.py) and one Bash process per call.
User processes live in the cgroup /sys/fs/cgroup/user, whose memory and pid limits keep a
fork bomb or an allocation storm away from the agent.
"""

import base64
import json
import queue
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import network  # noqa: E402
import protocol  # noqa: E402
from cgroups import UserCgroups  # noqa: E402
from files import FileService  # noqa: E402
from runners import BashRunner, CallError, Canceller, PythonRunner  # noqa: E402
from transport import open_channel  # noqa: E402


class Agent:
    def __init__(self, channel):
        self.channel = channel
        self.write_lock = threading.Lock()
        self.cgroups = UserCgroups()
        self.session_env = base_environment()
        self.canceller = Canceller()
        # One long-lived worker runs the calls, which is cheaper than a thread per call.
        self.calls = queue.Queue()
        threading.Thread(target=self.run_calls, daemon=True).start()
        self.current_call = None
        self.python = PythonRunner(self.cgroups, self.session_env, self.canceller)
        self.bash = BashRunner(self.cgroups, self.session_env, self.canceller)
        self.files = FileService(self.send, self.send_json)

    def send(self, frame_type, call_id, payload=b""):
        data = protocol.encode(frame_type, call_id, payload)
        with self.write_lock:
            self.channel.write_all(data)

    def send_json(self, frame_type, call_id, value):
        self.send(frame_type, call_id, json.dumps(value, separators=(",", ":")).encode())

    def serve(self):
        while True:
            header = self.channel.read_exact(protocol.HEADER.size)
            frame_type, call_id, length = protocol.HEADER.unpack(header)
            if length > protocol.MAX_PAYLOAD_BYTES:
                raise ValueError(f"frame of {length} bytes exceeds the protocol maximum")
            payload = self.channel.read_exact(length) if length else b""
            self.dispatch(frame_type, call_id, payload)

    def dispatch(self, frame_type, call_id, payload):
        if frame_type == protocol.PING:
            self.send(protocol.PONG, call_id, payload)
        elif frame_type == protocol.HELLO:
            try:
                self.hello(call_id, json.loads(payload))
            except Exception as error:  # reported to the host, the agent keeps serving
                self.send_json(
                    protocol.ERROR,
                    call_id,
                    {"code": "agent_error", "message": f"greeting: {type(error).__name__}: {error}"},
                )
        elif frame_type == protocol.EXEC:
            self.calls.put((call_id, json.loads(payload)))
        elif frame_type == protocol.FILE_WRITE_BEGIN:
            self.files.begin_upload(call_id, payload)
        elif frame_type == protocol.FILE_DATA:
            self.files.upload_data(call_id, payload)
        elif frame_type == protocol.FILE_WRITE_END:
            self.files.end_upload(call_id, payload)
        elif frame_type == protocol.FILE_READ:
            self.files.read(call_id, payload)
        elif frame_type == protocol.FILE_LIST:
            self.files.list(call_id, payload)
        elif frame_type == protocol.FILE_CREDIT:
            self.files.grant(call_id, payload)
        elif frame_type == protocol.CANCEL:
            # A cancel that arrives after its call ended, or before it started, does nothing.
            if self.current_call == call_id:
                self.canceller.request()
            else:
                self.files.cancel(call_id)
        elif frame_type == protocol.SHUTDOWN:
            power_off()
        else:
            self.send_json(
                protocol.ERROR,
                call_id,
                {"code": "unknown_frame", "message": f"unknown frame type {frame_type}"},
            )

    def hello(self, call_id, request):
        """Replies to the host's greeting. A VM from the warm pool or a snapshot is greeted
        again when a session claims it: the clock, the session's env and the random state
        are refreshed then, because they must not be the template's. A network field in
        the greeting reconfigures eth0 too. If that fails, the reply is an error frame with
        the code network_setup_failed, and the agent keeps serving."""
        wall_clock_ns = request.get("wall_clock_ns")
        if isinstance(wall_clock_ns, int):
            time.clock_settime_ns(time.CLOCK_REALTIME, wall_clock_ns)
        entropy = request.get("entropy")
        if entropy:
            reseed_kernel_random(base64.b64decode(entropy))
        if request.get("network") is not None:
            try:
                network.configure(request["network"])
            except network.NetworkSetupError as error:
                self.send_json(
                    protocol.ERROR,
                    call_id,
                    {"code": "network_setup_failed", "message": f"guest network setup: {error}"},
                )
                return
        env = {str(k): str(v) for k, v in request.get("env", {}).items()}
        self.session_env.update(env)
        self.bash.apply_session_env(env)
        if self.python.running():
            self.python.refresh(env)
        else:
            self.python.start()
        with open("/proc/uptime") as uptime:
            uptime_seconds = float(uptime.read().split()[0])
        self.send_json(
            protocol.READY,
            call_id,
            {
                "uptime_seconds": uptime_seconds,
                "kernel_release": os.uname().release,
                "cpu_count": os.cpu_count(),
            },
        )

    def run_calls(self):
        while True:
            self.execute(*self.calls.get())

    def execute(self, call_id, request):
        try:
            self.canceller.reset()
            self.current_call = call_id
            runner = self.bash if request.get("language") == "bash" else self.python
            result = runner.run(request, lambda t, data: self.send(t, call_id, data))
            reply = (protocol.RESULT, result)
        except CallError as error:
            reply = (protocol.ERROR, {"code": error.code, "message": str(error)})
        except Exception as error:  # reported to the host, the agent keeps serving
            reply = (
                protocol.ERROR,
                {"code": "agent_error", "message": f"{type(error).__name__}: {error}"},
            )
        finally:
            self.current_call = None
        self.send_json(reply[0], call_id, reply[1])


# RNDRESEEDCRNG from <linux/random.h>: reseeds the kernel's CRNG from its input pool now.
RNDRESEEDCRNG = 0x5207


def reseed_kernel_random(seed):
    """Mixes host entropy into the guest kernel's pool and reseeds its CRNG at once, so VMs
    restored from one snapshot stop sharing random state."""
    import fcntl

    with open("/dev/urandom", "wb", buffering=0) as pool:
        pool.write(seed)
        fcntl.ioctl(pool.fileno(), RNDRESEEDCRNG)


def base_environment():
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONIOENCODING": "utf-8",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_BREAK_SYSTEM_PACKAGES": "1",
    }


def power_off():
    os.sync()
    # The VMM runs with reboot=t/-no-reboot (QEMU) or handles the reset itself
    # (Firecracker), so a reboot request ends the VM.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x01234567)


def reap_orphans():
    """Reap every child of PID 1 that the agent did not start itself.

    The agent's own children (the kernel, Bash calls) are waited on by pid. Orphans that
    the kernel re-parents to PID 1 are found by their parent pid in /proc and reaped
    one by one, so that no wait here steals an exit status a runner is waiting for.
    """
    own_pid = os.getpid()
    while True:
        time.sleep(1)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat_file:
                    fields = stat_file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            state, parent_pid = fields[0], int(fields[1])
            if state == "Z" and parent_pid == own_pid and int(entry) not in RUNNER_PIDS:
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass


RUNNER_PIDS = set()

# How often the resource guard looks at the user cgroup's counters.
GUARD_INTERVAL_SECONDS = 0.25
# Reclaim at the memory limit this many checks in a row, while anonymous memory fills
# nearly all of the limit, means user code is thrashing.
THRASHING_CHECKS = 8
THRASHING_ANONYMOUS_SHARE = 0.9


def guard_user_resources(cgroups):
    """Kills the process group behind a fork bomb or a memory thrash.

    A fork bomb that backgrounds itself outlives the call that started it, so a timeout
    alone cannot end it: every failed fork bumps pids.events, and then the group with the
    most processes is killed. Without swap, code that sits at its memory limit can make the
    kernel evict and reread program text for minutes before its OOM killer acts: reclaim at
    the limit in THRASHING_CHECKS checks in a row, with anonymous memory filling the limit,
    kills the group using the most memory. Reclaim of page cache alone, as when writing a
    large file, does not count.
    """
    pid_hits = cgroups.pid_limit_hits()
    memory_hits = cgroups.memory_limit_hits()
    thrashing_checks = 0
    while True:
        time.sleep(GUARD_INTERVAL_SECONDS)
        hits = cgroups.pid_limit_hits()
        if hits != pid_hits:
            name = cgroups.kill_largest_group("pids")
            print(f"hearth agent: pid limit reached, killed cgroup {name}", file=sys.stderr)
            pid_hits = cgroups.pid_limit_hits()

        hits = cgroups.memory_limit_hits()
        thrashing = (
            hits != memory_hits
            and cgroups.anonymous_memory_share() >= THRASHING_ANONYMOUS_SHARE
        )
        thrashing_checks = thrashing_checks + 1 if thrashing else 0
        memory_hits = hits
        if thrashing_checks >= THRASHING_CHECKS:
            name = cgroups.kill_largest_group("memory")
            cgroups.guard_kills += 1
            print(f"hearth agent: memory limit thrashing, killed cgroup {name}", file=sys.stderr)
            thrashing_checks = 0
            memory_hits = cgroups.memory_limit_hits()


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(base_environment())
    if os.getpid() == 1:
        import runners

        runners.TRACKED_PIDS = RUNNER_PIDS
        threading.Thread(target=reap_orphans, daemon=True).start()
    try:
        with open("/proc/self/oom_score_adj", "w") as oom:
            oom.write("-1000")
    except OSError:
        pass
    channel = open_channel()
    agent = Agent(channel)
    if agent.cgroups.available:
        threading.Thread(
            target=guard_user_resources, args=(agent.cgroups,), daemon=True
        ).start()
    agent.serve()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        print(f"hearth agent: stopped: {type(error).__name__}: {error}", file=sys.stderr)
        if os.getpid() == 1:
            time.sleep(0.5)
            power_off()
        raise
