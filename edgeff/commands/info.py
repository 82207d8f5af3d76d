"""edgeff info: what this machine is and what edgeff runs on here.

One flat dict (collect()), printed as aligned "key: value" lines or, with --json, as one
JSON object. Heavy or optional packages (numba, onnxruntime) are imported only here.
"""

import json
import platform

from .. import __version__
from ..board import detect_board
from ..tuning import numba_cache_dir

HELP = ("show platform, board (Raspberry Pi / Jetson / generic), CPU, memory, NumPy BLAS, Numba, the per-machine "
        "tuning and onnxruntime")


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _platform():
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME") or platform.system()
    except OSError:  # no /etc/os-release
        os_name = platform.system()
    return dict(os=os_name, kernel=f"{platform.system()} {platform.release()}",
                python=platform.python_version(), python_implementation=platform.python_implementation())


def _numpy():
    import numpy as np
    out = dict(numpy=np.__version__, blas="unknown")
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # NumPy < 1.26 has no mode="dicts"
        return out
    out["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    if blas.get("openblas configuration"):
        out["blas_config"] = blas["openblas configuration"]
    return out


def _numba():
    import numba
    from numba import njit, prange

    import edgeff.kernels  # noqa: F401  it picks edgeff's threading layer: report that one

    @njit(parallel=True)
    def probe(n):  # the threading layer is chosen at the first parallel launch
        s = 0
        for i in prange(n):
            s += i
        return s

    try:
        probe(8)
        layer = numba.threading_layer()
    except ValueError:  # nothing was launched: NUMBA_DISABLE_JIT=1
        layer = "none (JIT disabled)" if numba.config.DISABLE_JIT else "not initialised"
    except Exception as exc:  # no usable threading layer on this machine
        layer = f"unavailable ({exc})"
    cache_dir, cache_source = numba_cache_dir()
    return dict(numba=numba.__version__, numba_threading_layer=layer,
                numba_threading_layer_requested=numba.config.THREADING_LAYER,
                numba_num_threads=numba.config.NUMBA_NUM_THREADS,
                numba_cache_dir=cache_dir, numba_cache_source=cache_source)


def _tuning():
    """The per-machine tuning (edgeff/tuning.py): measured now if there is no valid cached one."""
    from .. import tuning
    tuned, path, source = tuning.tuned()
    out = dict(tuning_file=path, tuning_source=source)
    if tuned is not None:
        out.update(tuning_parallel_from=tuned["parallel_from"], tuning_blas_threads=tuned["blas_threads"],
                   tuning_others_busy=tuned.get("others_busy"))
    return out


def _onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        return dict(onnxruntime="not installed")
    except Exception as exc:  # installed but broken (e.g. built against another NumPy)
        return dict(onnxruntime=f"not importable ({type(exc).__name__}: {exc})")
    return dict(onnxruntime=ort.__version__, onnxruntime_providers=ort.get_available_providers())


def collect(root="/"):
    """Everything `edgeff info` reports, as one flat JSON-serialisable dict."""
    info = _platform()
    info.update(detect_board(root))
    from ..deploy.targets import detect
    info["target"] = detect(info["arch"], info["board"]).name   # the profile 'edgeff bundle --target' takes
    info.update(_numpy())
    info.update(_numba())
    info.update(_tuning())
    info.update(_onnxruntime())
    info["edgeff"] = __version__
    return info


def _human(key, value):
    if key.endswith("_bytes"):
        return f"{value / 2**20:,.0f} MiB"
    if key == "cpu_features":
        text = " ".join(value) or "(none listed)"
        return text if len(text) <= 100 else f"{text[:96]}... ({len(value)} flags)"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def run(args):
    info = collect()
    if args.json:
        print(json.dumps(info, allow_nan=False))
        return 0
    width = max(map(len, info)) + 1
    for key, value in info.items():
        print(f"{key + ':':<{width}} {_human(key, value)}")
    return 0
