"""The kernel tests once more with NUMBA_DISABLE_JIT=1, so the Python bodies of the
kernels (what Numba compiles) are run and covered too."""

import os
import subprocess
import sys


def test_kernel_suite_passes_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    here = os.path.dirname(__file__)
    files = [os.path.join(here, name) for name in ("test_kernels.py", "test_conv_kernels.py", "test_uff_kernels.py")]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
