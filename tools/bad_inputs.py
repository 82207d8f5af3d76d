"""Run a battery of bad inputs against the real `edgeff` command and count the clean refusals.

Each case is one subprocess. Clean means: exit code 2, exactly one stderr line starting with
'edgeff: error:', no traceback. Everything else (a traceback, a signal, exit 0 or 1, several
lines) is listed by name. The script trains its own tiny run in a temp dir first.

    python tools/bad_inputs.py [--only CATEGORY] [--keep]
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict

import numpy as np

from bad_input_cases import CATEGORIES, NO_META, SOURCES


def edgeff(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgeff.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def is_clean(r):
    lines = r.stderr.strip().splitlines()
    return r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgeff: error:")


def write_images_npz(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (3, 8, 8))

    def x(y):
        return np.clip(protos[y] + rng.normal(0, 40, (len(y), 8, 8)), 0, 255).astype(np.uint8)
    y_train, y_test = rng.integers(0, 3, n), rng.integers(0, 3, n // 2)
    np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test)


class Fixture:
    """A tiny trained run (with a checkpoint), its ONNX export and a bundle, in one temp dir."""

    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "images.npz")
        write_images_npz(self.data)
        self.run = os.path.join(root, "run")
        self._must("train", "--dataset", self.data, "--model", "64-16-16", "--epochs", "2", "--batch-size", "32",
                   "--head-epochs", "1", "--checkpoint-every", "13", "--limit-train", "200", "--out", self.run,
                   "--quiet")
        self.onnx = os.path.join(root, "model.onnx")
        self._must("export", self.run, "-o", self.onnx, "--parity-samples", "20", "--quiet")
        self.bundle = os.path.join(root, "bundle")
        self._must("bundle", self.run, "--target", "generic-x86_64", "-o", self.bundle, "--no-wheels", "--quiet")
        self.count, self.mounts = 0, []

    def _must(self, *args):
        r = edgeff(*args, cwd=self.root)
        if r.returncode:
            sys.exit(f"setup failed: edgeff {' '.join(args)}\n{r.stderr}")

    def mount(self, name, options):
        """A fresh tmpfs mounted with options (root only: the read-only and full-disk cases),
        or None where mount is not allowed."""
        path = os.path.join(self.root, name)
        os.makedirs(path)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True).returncode:
            os.rmdir(path)
            return None
        self.mounts.append(path)
        return path

    def path(self, name):
        self.count += 1
        return os.path.join(self.root, f"case{self.count}-{name}")

    # ---- tampered copies ----

    def run_copy(self, with_checkpoint=False):
        dst = self.path("run")
        shutil.copytree(self.run, dst)
        if not with_checkpoint:
            os.unlink(os.path.join(dst, "checkpoint.npz"))
        return dst

    def model_with(self, change):
        """A run dir whose model.npz is the trained one with change(arrays, meta) applied."""
        dst = self.run_copy()
        path = os.path.join(dst, "model.npz")
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        result = change(arrays, meta)
        meta = meta if result is None else result
        if meta is not NO_META:
            meta_bytes = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
            arrays["meta"] = np.frombuffer(meta_bytes, np.uint8)
        np.savez(path, **arrays)
        return dst

    def checkpoint_with(self, change):
        """A run dir whose checkpoint has change(arrays, meta) applied and a valid checksum."""
        from edgeff import checkpoint
        dst = self.run_copy(with_checkpoint=True)
        path = os.path.join(dst, checkpoint.NAME)
        arrays, meta = checkpoint.load(path)
        result = change(arrays, meta)
        checkpoint.save(path, arrays, meta if result is None else result)
        return dst

    def onnx_with(self, **props):
        import onnx
        model = onnx.load(self.onnx)
        for p in model.metadata_props:
            if p.key in props:
                p.value = props.pop(p.key)
        for k, v in props.items():
            model.metadata_props.add(key=k, value=v)
        dst = self.path("model.onnx")
        onnx.save(model, dst)
        return dst

    def file(self, name, data):
        dst = self.path(name)
        with open(dst, "wb") as f:
            f.write(data)
        return dst

    def npy(self, array, name="x.npy"):
        dst = self.path(name)
        np.save(dst, array, allow_pickle=True)
        return dst

    def bundle_with_manifest(self, change):
        from edgeff.deploy import trust
        dst = self.path("bundle")
        shutil.copytree(self.bundle, dst)
        path = os.path.join(dst, trust.MANIFEST)
        with open(path) as f:
            manifest = json.load(f)
        change(manifest)
        manifest["release"] = trust.release_id(manifest["files"])
        with open(path, "w") as f:
            json.dump(manifest, f)
        return dst

    def tar_of(self, directory, mode, name, extra=None):
        dst = self.path(name)
        with tarfile.open(dst, mode) as tar:
            for entry in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, entry), entry)
            for info, data in extra or []:
                tar.addfile(info, io.BytesIO(data))
        return dst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=CATEGORIES, help="run one category")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each 'other' case's stderr")
    args = parser.parse_args()
    root, fx = tempfile.mkdtemp(prefix="edgeff-bad-inputs-"), None
    try:
        fx = Fixture(root)
        results = defaultdict(list)
        for category in CATEGORIES:
            if args.only and category != args.only:
                continue
            for name, make in SOURCES[category](fx):
                try:
                    argv = make()
                except Exception as exc:
                    sys.exit(f"could not set up case {category}/{name}: {type(exc).__name__}: {exc}")
                r = edgeff(*argv, cwd=root)
                results[category].append((name, r))
                print(f"{'ok   ' if is_clean(r) else 'OTHER'} {category}: {name}", file=sys.stderr, flush=True)
        report(results, args.verbose)
    finally:
        for path in fx.mounts if fx else []:
            subprocess.run(["umount", path])
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(results, verbose):
    total = clean = 0
    print(f"\n{'category':<14} {'tried':>5} {'clean':>5} {'other':>5}")
    for category, rows in results.items():
        ok = sum(is_clean(r) for _, r in rows)
        total, clean = total + len(rows), clean + ok
        print(f"{category:<14} {len(rows):>5} {ok:>5} {len(rows) - ok:>5}")
    print(f"{'all':<14} {total:>5} {clean:>5} {total - clean:>5}")
    for category, rows in results.items():
        for name, r in rows:
            if not is_clean(r):
                last = (r.stderr.strip().splitlines() or ["(no stderr)"])[-1][:160]
                lines = len(r.stderr.strip().splitlines())
                print(f"  other: {category}: {name}: exit {r.returncode}, {lines} stderr lines: {last}")
                if verbose:
                    print("    " + r.stderr.replace("\n", "\n    "))


if __name__ == "__main__":
    main()
