"""edgeff info: what this machine is and what edgeff runs on here."""

import json
import platform

from .. import __version__
from ..board import detect_board

HELP = "show platform, CPU, board (Raspberry Pi / Jetson / generic), NumPy BLAS, Numba and onnxruntime"


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _blas():
    import numpy as np
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        return "unknown"


def _numba():
    import numba
    from numba import njit, prange

    @njit(parallel=True)
    def probe(n):
        s = 0
        for i in prange(n):
            s += i
        return s

    probe(4)
    cache = numba.config.CACHE_DIR or "next to each module (__pycache__), NUMBA_CACHE_DIR unset"
    return dict(numba=numba.__version__, numba_threading_layer=numba.threading_layer(),
                numba_num_threads=numba.config.NUMBA_NUM_THREADS, numba_cache_dir=cache)


def _onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        return dict(onnxruntime="not installed")
    return dict(onnxruntime=ort.__version__, onnxruntime_providers=ort.get_available_providers())


def collect():
    import numpy as np
    board = detect_board()
    info = dict(edgeff=__version__, os=f"{platform.system()} {platform.release()}",
                python=f"{platform.python_implementation()} {platform.python_version()}", **board,
                numpy=np.__version__, blas=_blas())
    info["cpu_features"] = " ".join(board["cpu_features"])
    info.update(_numba())
    info.update(_onnxruntime())
    return info


def run(args):
    info = collect()
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        if key == "cpu_features" and len(value) > 100:
            value = value[:97] + "..."
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if key.endswith("_bytes"):
            value = f"{value / 2**20:.0f} MiB"
        print(f"{key:<{width}}  {value}")
    return 0
