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
