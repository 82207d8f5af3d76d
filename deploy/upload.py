"""What the transports share when they send a file: the block size, and the name of the partial
file the device grows while it receives one (named by its hash, so only the same file resumes it)."""

CHUNK = 1 << 20


def part_name(rel, sha256):
    """Where a file grows while it is sent: named by its hash, so only the same file resumes it."""
    return f"{rel}.{sha256[:16]}.part"
