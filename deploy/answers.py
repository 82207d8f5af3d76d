"""What a device answers, checked on the host before anything uses it.

A device is as untrusted as a file from disk (DESIGN.md, trust model): it may run an older
edgeff, be broken, or lie. Nothing it says may crash the host, steer it to files outside
the bundle, or reach the host's terminal as escape sequences. Each transport checks its own
framing (the last line an SSH command prints, a serial REPLY); this module checks what the
answers say, the same for every transport.
"""

import re

from ..errors import DeployError
from ..fields import is_count
from .trust import RELEASE_ID

MAX_SAID = 300                  # characters of a device's message shown
_MACHINE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")     # what `uname -m` prints
_PYTHON = re.compile(r"3\.\d{1,2}")


def printable(text):
    """A device's message as one line fit for a terminal: control characters (escape sequences
    included) shown as '?', cut to MAX_SAID characters."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:MAX_SAID])
    return clean + ("..." if len(text) > MAX_SAID else "")


def bad_answer(url, what, expected):
    return DeployError(f"{url}: the device's answer to {what} is not {expected}; the device is broken or is not "
                       "running what it should: check it, then deploy again")


def probe(url, found):
    """A transport's probe {machine, model, python} with each value checked: python is "X.Y", or
    None when the device has no python3."""
    machine, model, python = (found[k].strip() for k in ("machine", "model", "python"))
    if not _MACHINE.fullmatch(machine):
        raise bad_answer(url, "uname -m", f"an architecture name (it said {printable(machine)!r})")
    if python in ("", "none"):
        python = None
    elif not _PYTHON.fullmatch(python):
        raise bad_answer(url, "python3's version", f"3.X (it said {printable(python)!r})")
    return {"machine": machine, "model": printable(model), "python": python}


def adopted(url, result, files):
    """(linked, missing) from the installer's adopt: missing names files of this bundle, each once."""
    linked = result.get("linked") if isinstance(result, dict) else None
    missing = result.get("missing") if isinstance(result, dict) else None
    if not (is_count(linked) and isinstance(missing, list) and all(isinstance(p, str) and p in files for p in missing)
            and len(set(missing)) == len(missing) and linked + len(missing) <= len(files)):
        raise bad_answer(url, "adopt", "a count of files linked and a list of this bundle's files still missing")
    return linked, missing


def installed(url, result, release):
    """The installer's install report, which must name `release` as current."""
    if not (isinstance(result, dict) and result.get("current") == release):
        raise bad_answer(url, "install", f"a report with release {release} current")
    return result


def rolled_back(url, result):
    """The installer's rollback {previous, current}: current a release id, previous what `current`
    pointed at before (None if nothing)."""
    current = result.get("current") if isinstance(result, dict) else None
    previous = result.get("previous") if isinstance(result, dict) else None
    if not (isinstance(current, str) and RELEASE_ID.fullmatch(current) and (previous is None or isinstance(previous, str))):
        raise bad_answer(url, "rollback", "the release made current and the one before")
    return {"previous": None if previous is None else printable(previous), "current": current}
