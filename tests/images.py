"""A small image data set the CLI tests train on in seconds: 8x8 uint8 images of three
classes (noisy copies of three random prototypes), saved as an edgeff .npz."""

import numpy as np


def write_images_npz(path, n_train=600, n_test=300, label_names=None, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (3, 8, 8))

    def x(y):
        return np.clip(protos[y] + rng.normal(0, 40, (len(y), 8, 8)), 0, 255).astype(np.uint8)
    y_train, y_test = rng.integers(0, 3, n_train), rng.integers(0, 3, n_test)
    extra = {"label_names": np.array(label_names)} if label_names else {}
    np.savez(path, x_train=x(y_train), y_train=y_train, x_test=x(y_test), y_test=y_test, **extra)
    return path


def write_rgb_npz(path, n_train, n_test, side, label_names=None, seed=0):
    """side x side RGB images (N, H, W, 3) of 3 classes: a bright square, in channel c, in one of
    three places down the image."""
    rng = np.random.default_rng(seed)

    def images(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, side, side, 3)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, (side // 3) * c:(side // 3) * c + 4, 2:6, c] = 250
        return x, y
    (xt, yt), (xs, ys) = images(n_train), images(n_test)
    extra = {"label_names": np.array(label_names)} if label_names else {}
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys, **extra)
    return path


def write_flat_npz(path, n_train=40, n_test=10, features=12, seed=0):
    """Rows of `features` floats, not images, of 3 classes (random: for refusals and plumbing)."""
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.random((n_train, features)).astype(np.float32), y_train=rng.integers(0, 3, n_train),
             x_test=rng.random((n_test, features)).astype(np.float32), y_test=rng.integers(0, 3, n_test))
    return path
