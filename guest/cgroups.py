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
AGENT = ROOT + "/agent"

# Memory the agent, init and the guest kernel keep for themselves; user code gets the rest.
# The guest kernel's own use grows with the VM's size, hence the share on top of a floor.
AGENT_RESERVE_FLOOR_MIB = 96
AGENT_RESERVE_FRACTION = 0.10
# Memory the agent's own group is guaranteed, so that reclaim under user pressure never
# evicts the agent's pages and leaves it too slow to answer.
AGENT_PROTECTED_MIB = 48
# A ceiling on user processes: high enough for real workloads, low enough to stop a fork
# bomb before it exhausts the guest's memory.
MAX_USER_PIDS = 512


class UserCgroups:
    def __init__(self):
        self.available = os.path.isfile(ROOT + "/cgroup.controllers")
        self.seen_oom_kills = 0
        self.guard_kills = 0
        self.call_numbers = itertools.count(1)
        if not self.available:
            return
        os.makedirs(USER, exist_ok=True)
        write(ROOT + "/cgroup.subtree_control", "+memory +pids +cpu")
        write(USER + "/cgroup.subtree_control", "+memory +pids +cpu")
        write(USER + "/memory.max", str(user_memory_limit_bytes()))
        write(USER + "/memory.swap.max", "0", missing_ok=True)
        write(USER + "/pids.max", str(MAX_USER_PIDS))
        os.makedirs(AGENT, exist_ok=True)
        write(AGENT + "/memory.min", str(AGENT_PROTECTED_MIB << 20))
        write(AGENT + "/cgroup.procs", str(os.getpid()))

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
        """Counts user processes killed for memory: by the guest kernel's OOM killer, or by
        the agent's guard when user code thrashed at its limit."""
        if not self.available:
            return 0
        return read_counter(USER + "/memory.events", "oom_kill") + self.guard_kills

    def new_oom_kills(self):
        """Returns whether memory kills happened since the last call of this method.

        Runners ask only after a call failed, because reading the counter costs a few
        hundred microseconds under emulation; a kill of a background process between calls
        is therefore reported with the next failed call.
        """
        count = self.oom_kills()
        seen, self.seen_oom_kills = self.seen_oom_kills, count
        return count > seen

    def memory_limit_hits(self):
        """Counts how often user code's memory use reached its limit and forced reclaim."""
        return read_counter(USER + "/memory.events", "max") if self.available else 0

    def anonymous_memory_share(self):
        """Returns the user cgroup's anonymous memory as a fraction of its limit. Page
        cache is left out: it can always be dropped, so it never means thrashing."""
        if not self.available:
            return 0.0
        return read_counter(USER + "/memory.stat", "anon") / user_memory_limit_bytes()

    def pid_limit_hits(self):
        """Counts forks in user code that failed on the pid limit. The guest kernel counts a
        failed fork in the group of the process that forked, so every group is summed."""
        if not self.available:
            return 0
        total = read_counter(USER + "/pids.events", "max")
        for name in os.listdir(USER):
            try:
                total += read_counter(f"{USER}/{name}/pids.events", "max")
            except OSError:
                continue
        return total

    def kill_largest_group(self, resource):
        """Kills the child group that uses the most of a resource ("pids" or "memory"),
        and returns its name."""
        largest, largest_usage = None, 0
        for name in os.listdir(USER):
            path = f"{USER}/{name}"
            if not os.path.isdir(path):
                continue
            try:
                with open(f"{path}/{resource}.current") as current:
                    usage = int(current.read())
            except OSError:
                continue
            if usage > largest_usage:
                largest, largest_usage = name, usage
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
    reserve_bytes = max(AGENT_RESERVE_FLOOR_MIB << 20, int(total_bytes * AGENT_RESERVE_FRACTION))
    return max(total_bytes - reserve_bytes, 32 << 20)


def read_counter(path, key):
    with open(path) as counters:
        for line in counters:
            name, value = line.split()
            if name == key:
                return int(value)
    return 0


def write(path, value, missing_ok=False):
    try:
        with open(path, "w") as target:
            target.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
