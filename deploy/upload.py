"""What the transports share when they send a file: the block size, the name of the partial
file the device grows while it receives one (named by its hash, so only the same file resumes it),
and how a device's own words are shown on the host's terminal."""

CHUNK = 1 << 20
MAX_SAID = 300                  # characters of a device's message shown


def printable(text):
    """A device's message as one line fit for a terminal: control characters (escape sequences
    included) shown as '?', cut to MAX_SAID characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:MAX_SAID])
    return clean + ("..." if len(text) > MAX_SAID else "")


def part_name(rel, sha256):
    """Where a file grows while it is sent: named by its hash, so only the same file resumes it."""
    return f"{rel}.{sha256[:16]}.part"
