"""Running the `edgeff` command as a user does (a real subprocess) and checking what it says."""

import json
import subprocess
import sys


def edgeff(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgeff.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def ok(r):
    """The last stdout line of a successful --json run, parsed."""
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def one_line_error(r, *fragments):
    """A user mistake: exit 2 and one 'edgeff: error:' line holding every fragment."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeff: error:"), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
