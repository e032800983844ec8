"""cgroup v2 layout for user code.

/sys/fs/cgroup/user holds every process that runs user code, with a memory limit below the
VM's memory and a pid limit, so that the agent outlives a fork bomb or an out-of-memory kill.
Below it, "python" holds the Python kernel and one "call-N" group per Bash call holds that
call's whole process tree, which cgroup.kill ends at once, setsid escapes included.
"""

import itertools
import os

ROOT = "/sys/fs/cgroup"
USER = ROOT + "/user"

# Memory the agent, init and the guest kernel keep for themselves; user code gets the rest.
AGENT_RESERVE_MIB = 64
# A ceiling on user processes: high enough for real workloads, low enough to stop a fork
# bomb before it exhausts the guest's memory.
MAX_USER_PIDS = 1024


class UserCgroups:
    def __init__(self):
        self.available = os.path.isfile(ROOT + "/cgroup.controllers")
        self.call_numbers = itertools.count(1)
        if not self.available:
            return
        os.makedirs(USER, exist_ok=True)
        write(ROOT + "/cgroup.subtree_control", "+memory +pids +cpu")
        write(USER + "/cgroup.subtree_control", "+memory +pids +cpu")
        write(USER + "/memory.max", str(user_memory_limit_bytes()))
        write(USER + "/memory.swap.max", "0", missing_ok=True)
        write(USER + "/pids.max", str(MAX_USER_PIDS))

    def create(self, name):
        """Creates a child group of "user" and returns its cgroup.procs path, or None
        when cgroups are unavailable."""
        if not self.available:
            return None
        path = f"{USER}/{name}"
        os.makedirs(path, exist_ok=True)
        return path + "/cgroup.procs"

    def create_call_group(self):
        self.remove_empty_call_groups()
        return self.create(f"call-{next(self.call_numbers)}")

    def kill(self, procs_path):
        if procs_path:
            write(os.path.dirname(procs_path) + "/cgroup.kill", "1", missing_ok=True)

    def oom_kills(self):
        if not self.available:
            return 0
        with open(USER + "/memory.events") as events:
            for line in events:
                key, value = line.split()
                if key == "oom_kill":
                    return int(value)
        return 0

    def pid_limit_hits(self):
        """Returns how often a fork in user code failed on the pid limit."""
        if not self.available:
            return 0
        with open(USER + "/pids.events") as events:
            for line in events:
                key, value = line.split()
                if key == "max":
                    return int(value)
        return 0

    def kill_largest_group(self):
        """Kills the child group with the most processes, and returns its name."""
        largest, largest_count = None, 0
        for name in os.listdir(USER):
            path = f"{USER}/{name}"
            if not os.path.isdir(path):
                continue
            with open(path + "/pids.current") as current:
                count = int(current.read())
            if count > largest_count:
                largest, largest_count = name, count
        if largest:
            write(f"{USER}/{largest}/cgroup.kill", "1", missing_ok=True)
        return largest

    def memory_limit_mib(self):
        return user_memory_limit_bytes() // (1 << 20)

    def remove_empty_call_groups(self):
        for name in os.listdir(USER):
            if name.startswith("call-"):
                try:
                    os.rmdir(f"{USER}/{name}")
                except OSError:
                    pass  # background processes still live in it


def user_memory_limit_bytes():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                total_bytes = int(line.split()[1]) * 1024
                break
    return max(total_bytes - AGENT_RESERVE_MIB * (1 << 20), 32 << 20)


def write(path, value, missing_ok=False):
    try:
        with open(path, "w") as target:
            target.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
