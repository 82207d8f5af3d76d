"""UFF (--algo uff): finite-difference checks of a layer's whole step, bitwise resume in every
phase, ONNX export, the CLI end to end and its one-line refusals (the loss kernels: test_uff_kernels.py)."""

import numpy as np
import pytest

from edgeff import checkpoint
from edgeff.config import TrainConfig
from edgeff.data import load_dataset
from edgeff.uff_train import UffTrainer
from images import write_flat_npz, write_images_npz
from run_cli import edgeff, ok, one_line_error
from test_uff_kernels import finite_difference, mse, nt_xent
from crash_hook import Crash, CrashAt


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images_npz(tmp_path_factory.mktemp("data") / "images.npz", n_train=300, n_test=120)


def small_cfg(images, **kw):
    return TrainConfig(**dict(dict(dataset=str(images), model="64-40-30-20-10", algo="uff", learner="ae", epochs=2,
                                   head_epochs=2, batch_size=32, schedule="layerwise"), **kw)).validate()


def layer_loss(learner, src, x, w, b, aux_w, aux_b, tau):
    """A layer's loss in float64 from its (possibly corrupted) input src and target x."""
    c = np.maximum(src @ w + b, 0.0)
    return mse(c @ aux_w + aux_b, x) if learner != "contrastive" else nt_xent(c @ aux_w + aux_b, tau)


@pytest.mark.parametrize("learner", ["ae", "dae", "contrastive"])
@pytest.mark.parametrize("layer", [0, 1])
def test_a_layer_step_makes_its_loss_gradient(images, learner, layer):
    """The gradients a batch step leaves (layer and decoder or head), against finite differences of
    the layer's loss at the weights before the step: the whole chain, not just the loss kernel."""
    ds = load_dataset(str(images))
    t = UffTrainer(small_cfg(images, learner=learner, model="64-12-9"), ds)
    t._bind(layer)
    b = 8
    t.idx[:b] = t.order[:b]
    w, bias = (a.astype(np.float64) for a in (t.net.weights[layer], t.net.biases[layer]))
    aux = [a.w.astype(np.float64) for a in t.params[layer][2:]]
    t._step(b, [layer], np.zeros(1))
    rows = 2 * b if learner == "contrastive" else b
    x = (t.x if layer == 0 else t.hs[0])[:rows].astype(np.float64)
    src = t.work[layer]["inp"][:b].astype(np.float64) if learner == "dae" else x
    if learner == "dae":
        assert (src == 0).sum() > (x == 0).sum()                     # some inputs were masked
    loss = lambda: layer_loss(learner, src, x, w, bias, *aux, t.cfg.temperature)
    rng = np.random.default_rng(layer)
    for param, value in zip(t.params[layer], (w, bias, *aux)):
        at = rng.choice(value.size, 6, replace=False)
        want = finite_difference(loss, value, at)
        np.testing.assert_allclose(param.g.ravel()[at], want, rtol=2e-2, atol=2e-3 * np.abs(param.g).max() + 1e-9)


# ---- resume, the CLI, export ----

@pytest.mark.parametrize("learner,schedule", [("ae", "layerwise"), ("dae", "layerwise"), ("contrastive", "layerwise"),
                                              ("dae", "simultaneous")])
def test_resume_is_bitwise_in_every_phase(images, tmp_path, learner, schedule):
    """A run stopped in each phase (layerwise: two layers with their decoder or head, then the probe)
    and resumed from its last checkpoint ends with the uninterrupted run's weights, bit for bit."""
    ds = load_dataset(str(images))
    cfg = small_cfg(images, learner=learner, model="64-20-10", probe_labels=0.4, schedule=schedule)
    whole = UffTrainer(cfg, ds)
    whole.fit()
    batches = -(-len(ds.y_train) // cfg.batch_size)
    path = tmp_path / checkpoint.NAME
    for phase, keys in enumerate(whole.phases()):
        crashing = UffTrainer(cfg, ds)
        crashing.step_hook = CrashAt(phase * 2 * batches + batches + 3)     # epoch 2 of the phase, batch 4
        with pytest.raises(Crash):
            crashing.fit(path, 2, run_meta=dict(every=2, limit_train=None))
        arrays, meta = resume = checkpoint.load(path)
        assert meta["position"][0] == phase
        assert sorted(k for k in arrays if k.startswith("aux_w")) == [f"aux_w{k}" for k in keys if k != "head"]
        resumed = UffTrainer(cfg, ds)
        checkpoint.check_resume(path, *resume, resumed)
        resumed.fit(path, 2, resume, run_meta=dict(every=2, limit_train=None))
        for a, b in zip(whole.net.weights + whole.net.biases + [whole.net.head_w, whole.net.head_b],
                        resumed.net.weights + resumed.net.biases + [resumed.net.head_w, resumed.net.head_b]):
            np.testing.assert_array_equal(a, b)


def test_the_seed_decides_the_noise(images):
    ds = load_dataset(str(images))
    nets = []
    for seed in (0, 0, 1):
        t = UffTrainer(small_cfg(images, learner="dae", model="64-20", head_epochs=1, epochs=1, seed=seed), ds)
        t.fit()
        nets.append(t.net.weights[0])
    np.testing.assert_array_equal(nets[0], nets[1])
    assert not np.array_equal(nets[0], nets[2])


@pytest.mark.parametrize("learner", ["ae", "dae", "contrastive"])
def test_cli_train_eval_export_infer(images, tmp_path, learner):
    run, onnx_path = tmp_path / "run", tmp_path / "m.onnx"
    m = ok(edgeff("train", "--dataset", images, "--algo", "uff", "--learner", learner, "--model", "64-40-40",
                  "--schedule", "layerwise", "--epochs", "3", "--head-epochs", "4", "--batch-size", "32",
                  "--probe-labels", "0.5", "--out", run, "--json", "--quiet"))
    assert m["algo"] == "uff" and m["learner"] == learner and m["probe_labels"] == 0.5
    assert m["probe_label_rows"] == 150 and m["classifier"] == "linear" and m["test_error"] < 0.4, m
    assert len(m["epoch_losses"]) == 2 * 3 + 4
    assert ok(edgeff("eval", run, "--json"))["test_error"] == m["test_error"]
    with np.load(run / "model.npz") as saved:
        assert not [k for k in saved.files if k.startswith("aux")]             # decoders and heads are not kept
    rep = ok(edgeff("export", run, "-o", onnx_path, "--json"))
    assert rep["parity"]["ok"] and rep["head"] == "linear"
    rows = tmp_path / "rows.npy"
    np.save(rows, load_dataset(str(images)).x_test[:20])
    by_run, by_onnx = ok(edgeff("infer", run, rows, "--json")), ok(edgeff("infer", onnx_path, rows, "--json"))
    assert by_run["labels"] == by_onnx["labels"] and by_onnx["engine"] == "onnxruntime"


def test_cli_resume_after_a_checkpoint(images, tmp_path):
    args = ["train", "--dataset", images, "--algo", "uff", "--learner", "contrastive", "--model", "64-20-20",
            "--epochs", "2", "--head-epochs", "1", "--batch-size", "50", "--quiet", "--json"]
    whole = ok(edgeff(*args, "--out", tmp_path / "whole"))
    ok(edgeff(*args, "--out", tmp_path / "run", "--checkpoint-every", "5"))
    again = ok(edgeff("train", "--resume", tmp_path / "run", "--json"))     # from step 15 of 18: in the probe
    assert again["test_error"] == whole["test_error"] and again["learner"] == "contrastive"
    with np.load(tmp_path / "whole" / "model.npz") as a, np.load(tmp_path / "run" / "model.npz") as b:
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("args,fragments", [
    (["--algo", "ff", "--learner", "ae"], ["--learner is the layer learner of --algo uff", "add --algo uff"]),
    (["--algo", "ff-unsup", "--learner", "dae"], ["--learner", "(not ff-unsup)"]),
    (["--algo", "uff"], ["--algo uff needs --learner", "ae, dae, contrastive"]),
    (["--algo", "uff", "--learner", "vae"], ["--learner 'vae' is not one of: ae, dae, contrastive"]),
    (["--algo", "uff", "--learner", "dae", "--noise-rate", "1"], ["--noise-rate must be below 1"]),
    (["--algo", "uff", "--learner", "dae", "--noise-rate", "-0.1"], ["--noise-rate must be a number from 0 to 1"]),
    (["--algo", "uff", "--learner", "dae", "--noise-rate", "nan"], ["--noise-rate"]),
    (["--algo", "uff", "--learner", "ae", "--noise-rate", "0.5"], ["--noise-rate is the masking noise", "leave it out"]),
    (["--algo", "uff", "--learner", "contrastive", "--temperature", "0"], ["--temperature must be a number above 0"]),
    (["--algo", "uff", "--learner", "contrastive", "--temperature", "inf"], ["--temperature"]),
    (["--algo", "uff", "--learner", "ae", "--temperature", "0.3"], ["--temperature is NT-Xent's", "leave it out"]),
    (["--algo", "uff", "--learner", "ae", "--model", "conv-small"], ["--algo uff trains a dense --model"]),
    (["--algo", "uff", "--learner", "ae", "--head-epochs", "0"], ["--head-epochs 1 or more"]),
    (["--algo", "uff", "--learner", "ae", "--shift", "1"], ["--shift", "--algo uff does not use it"]),
])
def test_bad_options_are_one_line_errors(images, tmp_path, args, fragments):
    one_line_error(edgeff("train", "--dataset", images, "--model", "64-20", "--epochs", "1", "--out", tmp_path / "r",
                          *args), *fragments)
    assert not (tmp_path / "r").exists()


def test_contrastive_needs_2d_images_and_ae_takes_flat_rows(tmp_path):
    path = write_flat_npz(tmp_path / "flat.npz")
    base = ["train", "--dataset", path, "--algo", "uff", "--model", "12-8", "--epochs", "1", "--batch-size", "8"]
    one_line_error(edgeff(*base, "--learner", "contrastive", "--out", tmp_path / "r"), "shifting 2-D images",
                   "flat rows", "use --learner ae or dae")
    assert 0 <= ok(edgeff(*base, "--learner", "dae", "--out", tmp_path / "r", "--json"))["test_error"] <= 1


def test_plan_holds_the_decoders_heads_and_probe(images):
    plans = {learner: ok(edgeff("plan", "--dataset", images, "--algo", "uff", "--learner", learner, "--model",
                                "64-20-10", "--batch-size", "16", "--schedule", "layerwise", "--json"))
             for learner in ("ae", "contrastive")}
    ae = {b["name"]: tuple(b["shape"]) for b in plans["ae"]["buffers"]}
    assert ae["aux_w0"] == (20, 64) and ae["aux_w1"] == (10, 20) and ae["p0/x"] == (16, 64) and ae["head_w"] == (30, 3)
    views = {b["name"]: tuple(b["shape"]) for b in plans["contrastive"]["buffers"]}
    assert views["aux_w0"] == (20, 128) and views["p0/x"] == (32, 64) and views["p1/sim1"] == (32 * 32,)
    assert plans["ae"]["arena_bytes"] < plans["ae"]["naive_bytes"]     # the phases share bytes
