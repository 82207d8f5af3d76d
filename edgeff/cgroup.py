"""This machine's memory, and the limit the kernel holds this process to: its cgroup's, read from
/proc/self/cgroup and the cgroup file system (v1: memory.limit_in_bytes, v2: memory.max), the lowest on
the way to the root."""

import os

NO_LIMIT = 1 << 62      # v1 writes "no limit" as a number near 2**63; anything this large is none
LIMIT_FILE = {"v1": "memory.limit_in_bytes", "v2": "memory.max"}


def memory_cgroup(proc="/proc/self"):
    """(this process's memory cgroup directory, its mount point, the limit file's name), or None."""
    try:
        with open(f"{proc}/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
        with open(f"{proc}/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    paths = {}
    for hierarchy in lines:
        if len(hierarchy) == 3 and "memory" in hierarchy[1].split(","):
            paths["v1"] = hierarchy[2]
        elif len(hierarchy) == 3 and hierarchy[0] == "0" and not hierarchy[1]:   # the v2 unified hierarchy
            paths["v2"] = hierarchy[2]
    for m in mounts:
        if "-" not in m[5:-2]:         # a line without its fields, its separator, fs type and options
            continue
        fstype, options = m[m.index("-", 5) + 1], m[-1].split(",")
        version = "v1" if fstype == "cgroup" and "memory" in options else "v2" if fstype == "cgroup2" else None
        if version not in paths:
            continue
        mount_root, mount_point = m[3], m[4]
        inside = os.path.relpath(paths[version], mount_root)
        if inside.startswith(".."):    # the mount shows our cgroup as its root (a container's own view)
            inside = "."
        directory = os.path.normpath(os.path.join(mount_point, inside))
        if os.path.exists(os.path.join(directory, LIMIT_FILE[version])):
            return directory, mount_point, LIMIT_FILE[version]
    return None


def cgroup_memory_limit(proc="/proc/self"):
    """(bytes, the file that sets it): the lowest memory limit on this process's cgroup and its
    parents, or None when none is set or there is no memory cgroup."""
    found = memory_cgroup(proc)
    if found is None:
        return None
    directory, mount_point, name = found
    lowest = None
    while True:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        if text.isdigit() and int(text) < NO_LIMIT and (lowest is None or int(text) < lowest[0]):
            lowest = (int(text), path)
        if os.path.normpath(directory) == os.path.normpath(mount_point):
            return lowest
        directory = os.path.dirname(directory)


def machine_memory():
    """This machine's physical memory in bytes, or None where the OS does not tell."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):   # no sysconf, or no such name here
        return None
    return total if total > 0 else None
