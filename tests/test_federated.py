"""Federated FF on Flower (edgeff/federated/): real simulations of a few clients on this machine, a
server killed and started again, bad clients left out of the aggregate; partitions; refused settings."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeff.data import load_dataset
from edgeff.federated.partition import partition
from edgeff.runs import load_run
from images import write_images_npz
from run_cli import edgeff, ok, one_line_error

pytest.importorskip("ray")     # Flower's simulation engine (edgeff[fed-sim])

HERE = os.path.dirname(os.path.abspath(__file__))
# a tiny net that learns in a few short rounds: 3 clients of 500 Fashion-MNIST rows, 2 rounds per layer
SMALL = dict(clients=3, rounds=2, model="784-64-64", limit_train=1500, batch_size=32, lr=0.03)


def _options(settings):
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def _federation(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["federation"]


def test_a_killed_server_resumes_and_the_federation_lowers_the_test_error(tmp_path):
    out = str(tmp_path / "fed")
    cmd = [sys.executable, "-m", "edgeff.cli", "federate", *_options(SMALL), "--out", out, "--json"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while server.poll() is None and not (os.path.exists(os.path.join(out, "metrics.json"))
                                             and _federation(out)["round"] >= 1):
            time.sleep(0.1)
    finally:
        os.killpg(server.pid, signal.SIGKILL)     # the server and its simulated clients, mid-federation
        server.communicate()
    killed_at = _federation(out)["round"]
    assert 1 <= killed_at < 4
    load_run(out)                                   # what it saved after round 1 is a whole run directory

    r = edgeff("federate", *_options(dict(SMALL, round_timeout=600)), "--out", out, "--json")  # how rounds run may change
    result = ok(r)
    assert f"holds round {killed_at} of 4; continuing" in r.stderr
    history = result["history"]
    assert [h["round"] for h in history] == [1, 2, 3, 4] and result["rounds"] == 4
    assert all(h["updates"] == 3 and h["rejected"] == 0 for h in history)
    # layerwise: the phase's first round ships the frozen layer 1 too; layer 2 (64x64) is far smaller
    assert history[2]["bytes_down"] > history[3]["bytes_down"] == history[3]["bytes_up"]
    assert result["bytes_sent"] == sum(h["bytes_down"] + h["bytes_up"] for h in history)
    assert result["test_error"] < 0.85           # a random net is at chance (0.9)
    net, cfg = load_run(out)
    assert cfg.model == "784-64-64" and all(np.isfinite(w).all() for w in net.weights)
    evaluated = ok(edgeff("eval", out, "--json"))
    assert evaluated["test_error"] == pytest.approx(result["test_error"])

    done = ok(edgeff("federate", *_options(SMALL), "--out", out, "--json"))   # nothing left: no round more
    assert done["rounds"] == 4 and done["test_error"] == result["test_error"]
    one_line_error(edgeff("federate", *_options(dict(SMALL, rounds=3)), "--out", out), "not this federation's")


def test_fedadam_steps_by_server_lr_and_a_federation_saved_before_that_still_resumes(tmp_path):
    out = str(tmp_path / "fed")
    adam = dict(SMALL, strategy="fedadam")
    result = ok(edgeff("federate", *_options(adam), "--out", out, "--json"))
    assert result["test_error"] < 0.85        # its step was SMALL's client lr 0.03 once: 0.90, chance
    assert _federation(out)["settings"]["server-lr"] == 0.1 and _federation(out)["format"] == 2
    history = _federation(out)["history"]        # the global layer goes down float32, as the clients send it up
    assert history[1]["bytes_down"] == history[1]["bytes_up"] and history[3]["bytes_down"] == history[3]["bytes_up"]
    # as edgeff saved a FedAdam federation before its step was --server-lr: the clients' --lr was its step
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    del metrics["federation"]["format"]
    metrics["federation"]["settings"]["server-lr"] = 1.0
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    one_line_error(edgeff("federate", *_options(adam), "--out", out), "not this federation's")
    assert ok(edgeff("federate", *_options(dict(adam, server_lr=0.03)), "--out", out, "--json"))["rounds"] == 4


def test_a_fraction_of_the_clients_trains_each_round(tmp_path):
    out = str(tmp_path / "fed")
    third = dict(SMALL, fraction_train=0.34)           # of 3 clients: one a round, drawn by Flower
    result = ok(edgeff("federate", *_options(third), "--out", out, "--json"))
    history = result["history"]
    assert [(h["round"], h["updates"], h["rejected"]) for h in history] == [(r, 1, 0) for r in (1, 2, 3, 4)]
    # one client's layer each way; the frozen layer 1 goes down once to each node that trains in phase 2
    assert history[1]["bytes_down"] == history[1]["bytes_up"] == history[0]["bytes_up"]
    # better than chance (0.9) by far more than the 10,000 test rows' noise (0.003): which client trains each
    # round is Flower's unseeded draw, and some draws of 500 rows end at 0.86 (< 0.85 failed 1 run in 5)
    assert result["test_error"] < 0.88 and _federation(out)["settings"]["fraction-train"] == 0.34
    one_line_error(edgeff("federate", *_options(SMALL), "--out", out), "not this federation's")


def test_an_ffcl_federation_ships_its_label_and_feedback_weights_and_evaluates_as_a_run(tmp_path):
    out = str(tmp_path / "fed")
    ffcl = dict(SMALL, algo="ffcl", schedule="simultaneous", limit_train=3000, rounds=3, local_epochs=2, lr=0.01,
                feedback_steps=1)
    result = ok(edgeff("federate", *_options(ffcl), "--separate-labels", "--late-labels", "--out", out, "--json"))
    assert [(h["updates"], h["rejected"]) for h in result["history"]] == [(3, 0)] * 3
    assert result["test_error"] < 0.7                     # chance is 0.9
    net, cfg = load_run(out)                              # an ordinary FFCL run directory
    assert (cfg.algo, cfg.separate_labels, cfg.late_labels, cfg.feedback_steps) == ("ffcl", True, True, 1)
    assert [lw.shape for lw in net.label_w] == [(10, 64), (10, 64)] and [f.shape for f in net.feedback_w] == [(64, 64)]
    # every round ships each layer's w, b, l and the first layer's f down and back, float32
    arrays = 784 * 64 + 64 + 10 * 64 + 64 * 64 + 64 * 64 + 64 + 10 * 64
    assert all(h["bytes_down"] == h["bytes_up"] >= 3 * 4 * arrays for h in result["history"])
    assert ok(edgeff("eval", out, "--json"))["test_error"] == pytest.approx(result["test_error"])


def test_a_federation_saved_before_fraction_train_and_algo_resumes_as_plain_ff_every_client_a_round():
    from edgeff.federated.server_app import _made_with
    from edgeff.federated.settings import FederationConfig
    settings = FederationConfig(out="x")
    added = ("fraction-train", "algo", "separate-labels", "late-labels", "feedback-steps")
    saved = {k: v for k, v in settings.identity().items() if k not in added}
    assert _made_with({"settings": saved, "format": 2}) == settings.identity()
    assert _made_with({"settings": saved, "format": 2}) != FederationConfig(fraction_train=0.5, out="x").identity()


@pytest.mark.parametrize("strategy, resumed_with", [("fedavg", {}), ("fedavgm", {}), ("fedavgm", {"server_lr": 1.0}),
                                                    ("fedadam", {"server_lr": 0.01})])
def test_federations_saved_with_the_old_server_lr_default_resume_with_the_settings_they_ran(strategy, resumed_with):
    from edgeff.federated.server_app import _made_with
    from edgeff.federated.settings import FederationConfig
    settings = FederationConfig(strategy=strategy, lr=0.01, out="x")
    saved = dict(settings.identity(), **{"server-lr": 1.0})          # the old default, saved for every strategy
    assert _made_with({"settings": saved}) == FederationConfig(**{**settings.__dict__, **resumed_with}).identity()
    assert _made_with({"settings": saved, "format": 2}) == saved


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A federation's run directory as its server saves it before the first round (no simulation), and
    the settings that resume it."""
    from edgeff.federated.server_app import GlobalModel
    from edgeff.federated.settings import FederationConfig
    root = tmp_path_factory.mktemp("saved")
    settings = dict(clients=2, rounds=1, model="64-20", dataset=str(write_images_npz(root / "data.npz", 200, 60)))
    GlobalModel(FederationConfig(out=str(root / "fed"), **settings).validate())
    return root / "fed", settings


def _finish(metrics, federation):
    """The record made to say its one round is done, as a finished federation's says."""
    line = dict(round=1, test_error=0.5, bytes_down=0, bytes_up=0, updates=2, rejected=0, seconds=1.0)
    federation.update(round=1, history=[line])
    metrics.update(rounds=1)


SAVED_RECORDS = [
    # (what, change(metrics, its federation record), fragment of the one line)
    ("round a string", lambda m, f: f.update(round="1"), "federation: 'round' is '1'"),
    ("round beyond the rounds", lambda m, f: (_finish(m, f), f.update(round=2)), "'round' is 2, not a whole number 0 to 1"),
    ("history not a list", lambda m, f: f.update(history={}), "'history' is {}"),
    ("a round without its history line", lambda m, f: (_finish(m, f), f.update(history=[])), "'history' is []"),
    ("history line test_error 2", lambda m, f: (_finish(m, f), f["history"][0].update(test_error=2)),
     "federation: history line 1: 'test_error' is 2"),
    ("bytes_down a string", lambda m, f: f.update(bytes_down="x"), "'bytes_down' is 'x'"),
    ("bytes_sent not the bytes down and up", lambda m, f: m.update(bytes_sent=5), "'bytes_sent' is 5"),
    ("finished without a test_error", lambda m, f: (_finish(m, f), m.pop("test_error")), "no 'test_error'"),
    ("finished with test_error a string", lambda m, f: (_finish(m, f), m.update(test_error="x")),
     "'test_error' is 'x'"),
]


@pytest.mark.parametrize("what, change, fragment", SAVED_RECORDS, ids=[c[0] for c in SAVED_RECORDS])
def test_a_damaged_federation_record_is_one_line_before_any_round(saved, tmp_path, what, change, fragment):
    """metrics.json's federation record is checked field by field before a resume simulates anything (or a
    finished federation prints its summary): one line naming the file and the field, every file kept."""
    out = tmp_path / "fed"
    shutil.copytree(saved[0], out)
    metrics = json.loads((out / "metrics.json").read_text())
    change(metrics, metrics["federation"])
    (out / "metrics.json").write_text(json.dumps(metrics))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(edgeff("federate", *_options(saved[1]), "--out", out), "metrics.json", fragment,
                   "restore it, or federate afresh with another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_another_runs_model_in_a_federation_directory_is_one_line_before_any_round(saved, tmp_path):
    """A model.npz of other layers (another run's, copied in) made the clients fail and the server overwrite
    the directory with a run whose config disagreed with its weights."""
    out = tmp_path / "fed"
    shutil.copytree(saved[0], out)
    other = tmp_path / "other"
    ok(edgeff("train", "--dataset", saved[1]["dataset"], "--model", "64-40-30", "--epochs", "1", "--out", other,
              "--quiet", "--json"))
    shutil.copy(other / "model.npz", out / "model.npz")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(edgeff("federate", *_options(saved[1]), "--out", out), "model.npz", "layers 64-40-30",
                   "not this federation's 64-20")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_updates_with_nan_or_the_wrong_shape_are_left_out(tmp_path):
    out = str(tmp_path / "fed")
    settings = dict(SMALL, rounds=1, schedule="simultaneous")
    r = subprocess.run([sys.executable, os.path.join(HERE, "fed_bad_clients.py"), out,
                        *[f"{k}={v}" for k, v in settings.items()]], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    refused = [line for line in r.stderr.splitlines() if "is left out of the aggregate" in line]
    assert len(refused) == 2
    assert "holds NaN or Inf" in " ".join(refused) and "w2 is float32 (64, 63), not float32 (64, 64)" in " ".join(refused)
    assert [(h["updates"], h["rejected"]) for h in _federation(out)["history"]] == [(1, 2)]
    net, _ = load_run(out)
    assert all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in zip(net.weights, net.biases))


def test_an_update_counts_only_as_sent_finite_and_with_its_weight():
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from edgeff.federated.records import layers_record, update_problem
    sent = layers_record({1: dict(w=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32))})
    shapes = {name: a.numpy().shape for name, a in sent.items()}

    def problem(arrays=sent, metrics=None, **more):
        metrics = MetricRecord(metrics or {"num-examples": 5, "loss": 0.5})
        return update_problem(RecordDict({"arrays": arrays, "metrics": metrics, **more}), shapes)

    assert problem() is None
    garbled = ArrayRecord({"w2": Array(dtype="float32", shape=(3, 2), stype="numpy.ndarray", data=b"junk"),
                           "b2": sent["b2"]})
    nan = layers_record({1: dict(w=np.full((3, 2), np.nan, np.float32), b=np.zeros(2, np.float32))})
    for kind, found in [(problem(arrays=garbled), "w2 is not a NumPy array"),
                        (problem(arrays=nan), "w2 holds NaN or Inf"),
                        (problem(arrays=layers_record({1: dict(w=np.ones((3, 2)), b=np.zeros(2, np.float32))})),
                         "w2 is float64 (3, 2), not float32 (3, 2)"),
                        (problem(arrays=layers_record({0: dict(w=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32))})),
                         "its arrays are ['b1', 'w1'], not the ['b2', 'w2'] sent"),
                        (problem(arrays=layers_record({1: dict(w=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32),
                                                               l=np.ones((10, 2), np.float32))})),
                         "its arrays are ['b2', 'l2', 'w2'], not the ['b2', 'w2'] sent"),
                        (problem(extra=sent), "2 array records"),
                        (problem(metrics={"num-examples": 5, "loss": 0.5, "more": 1.0}), "metrics are not one record"),
                        (problem(metrics={"num-examples": 0, "loss": 0.5}), "num-examples is 0"),
                        (problem(metrics={"num-examples": 5, "loss": float("inf")}), "loss is inf")]:
        assert kind is not None and found in kind, (found, kind)


@pytest.mark.parametrize("name", ["w", "wx", "", "w0", "q1", "w1x", "b01", "l" + "9" * 40])
def test_a_crafted_array_name_is_one_line_not_a_crash(name):
    from flwr.app import Array, ArrayRecord
    from edgeff.errors import ModelError
    from edgeff.federated.records import record_layers
    with pytest.raises(ModelError, match="is not a layer's"):
        record_layers(ArrayRecord({name: Array(np.zeros(2, np.float32))}))


@pytest.mark.parametrize("layers", [{-1: {"w": np.zeros((4, 3), np.float32)}}, {1: {"w": np.zeros((4, 3), np.float32)}},
                                    {0: {"l": np.zeros((2, 3), np.float32)}},
                                    {0: {"w": np.ones((4, 3), np.float32), "b": np.zeros(4, np.float32)}}])
def test_layers_that_do_not_fit_the_net_are_one_line_and_change_nothing(layers):
    from edgeff.errors import UsageError
    from edgeff.federated.local import set_layers
    from edgeff.model import FFNet
    net = FFNet.create((4, 3), 2, 1.0, False, np.random.default_rng(0), image=False)
    before = [a.copy() for a in net.weights + net.biases]
    with pytest.raises(UsageError, match="rows like the federation's"):
        set_layers(net, layers, "this node")
    assert all(np.array_equal(a, b) for a, b in zip(before, net.weights + net.biases))


def test_partitions_are_deterministic_and_dirichlet_skews_the_labels():
    labels = np.repeat(np.arange(10), 300)
    iid = partition(labels, 5, "iid", 0)
    assert sorted(np.concatenate(iid).tolist()) == list(range(3000)) and {len(p) for p in iid} == {600}
    skewed = partition(labels, 5, "dirichlet:0.3", 0)
    assert [p.tolist() for p in skewed] == [p.tolist() for p in partition(labels, 5, "dirichlet:0.3", 0)]
    assert sorted(np.concatenate(skewed).tolist()) == list(range(3000)) and min(map(len, skewed)) >= 10
    share = lambda parts: np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    assert share(iid) < 0.15 < 0.3 < share(skewed)      # the largest class's share of a client's rows
    assert [p.tolist() for p in skewed] != [p.tolist() for p in partition(labels, 5, "dirichlet:0.3", 1)]


@pytest.mark.parametrize("args, fragments", [
    (["--clients", "0"], ["--clients must be a whole number at least 1"]),
    (["--clients", "2", "--rounds", "0"], ["--rounds must be a whole number at least 1"]),
    (["--clients", "2", "--partition", "dirichlet:-1"], ["above 0"]),
    (["--clients", "2", "--partition", "dirichlet:x"], ["above 0"]),
    (["--clients", "2", "--partition", "shards"], ["not iid or dirichlet:ALPHA"]),
    (["--clients", "2", "--model", "100-10"], ["takes 100 inputs"]),
    (["--clients", "60", "--limit-train", "50"], ["60 clients need at least 60 training rows"]),
    (["--clients", "3", "--min-clients", "4"], ["--min-clients must be a whole number from 0 to 3"]),
    (["--clients", "3", "--round-timeout", "0"], ["--round-timeout must be a number above 0"]),
    (["--clients", "3", "--local-steps", "-1"], ["--local-steps must be a whole number at least 0"]),
    (["--clients", "3", "--algo", "ffcl"], ["--algo ffcl trains all layers at once", "--schedule simultaneous"]),
    (["--clients", "3", "--late-labels", "--schedule", "simultaneous"], ["--late-labels is an FFCL option"]),
    (["--clients", "3", "--algo", "ffcl", "--schedule", "simultaneous", "--classifier", "first"], ["--classifier"]),
    (["--clients", "3", "--fraction-train", "0"], ["--fraction-train must be a number above 0 and at most 1"]),
    (["--clients", "3", "--fraction-train", "1.5"], ["--fraction-train must be a number above 0 and at most 1"]),
    (["--clients", "3", "--fraction-train", "nan"], ["--fraction-train must be a number above 0 and at most 1"]),
])
def test_bad_settings_are_one_line(tmp_path, args, fragments):
    out = tmp_path / "fed"
    one_line_error(edgeff("federate", *args, "--out", out), *fragments)
    assert not out.exists()


def test_the_flower_app_carries_every_setting_and_the_rate_decays_over_each_phases_rounds(tmp_path):
    import tomllib
    from edgeff.federated.settings import FederationConfig, flower_app_toml
    settings = FederationConfig(clients=3, min_clients=2, round_timeout=7.5, rounds=4, local_steps=12, lr=0.01,
                                lr_decay=True, strategy="fedavgm", fraction_train=0.5,
                                out=str(tmp_path / "fed")).validate()
    app_config = tomllib.loads(flower_app_toml(settings))["tool"]["flwr"]["app"]["config"]
    assert FederationConfig.from_record(app_config) == settings
    ffcl = FederationConfig(algo="ffcl", schedule="simultaneous", separate_labels=True, late_labels=True,
                            feedback_steps=2, out="x").validate()
    assert FederationConfig.from_record(tomllib.loads(flower_app_toml(ffcl))["tool"]["flwr"]["app"]["config"]) == ffcl
    # layerwise, 2 layers of 4 rounds: full rate for the first half of each layer's rounds, then down to 2/4
    assert [settings.round_lr(r) for r in range(1, 9)] == pytest.approx([0.01, 0.01, 0.01, 0.005] * 2)
    assert {FederationConfig(lr=0.01, out="x").round_lr(r) for r in range(1, 9)} == {0.01}


def test_without_flower_the_error_names_the_extra(tmp_path):
    hide = "import sys; sys.modules['flwr'] = None; from edgeff.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", hide, "federate", "--clients", "2", "--out", str(tmp_path / "f")],
                       capture_output=True, text=True)
    one_line_error(r, 'pip install "edgeff[fed-sim]"')


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port, process):
    while process.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the SuperLink ended: {process.communicate()}")


class FlowerDeployment:
    """Flower's own deployment, as on real machines, here as processes on 127.0.0.1: a SuperLink,
    SuperNodes started (and killed) one by one, `flwr run` of an App. Every process ends with the test."""

    def __init__(self, tmp_path):
        bin_dir = os.path.dirname(sys.executable)     # Flower starts its own commands (flower-superexec) by PATH
        self.env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr-home"), FLWR_TELEMETRY_ENABLED="0",
                        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        self.cwd, self.port, self.started = tmp_path, _free_port(), []
        os.makedirs(self.env["FLWR_HOME"])
        with open(os.path.join(self.env["FLWR_HOME"], "config.toml"), "w") as f:
            f.write(f'[superlink]\ndefault = "here"\n\n[superlink.here]\naddress = "127.0.0.1:{self.port}"\n'
                    'insecure = true\n')
        _wait_for_port(self.port, self._start("flower-superlink", "--insecure", "--port", str(self.port)))

    def _start(self, command, *args, output=subprocess.DEVNULL):
        self.started.append(subprocess.Popen([os.path.join(os.path.dirname(sys.executable), command), *args],
                                             env=self.env, cwd=self.cwd, stdout=output, stderr=subprocess.STDOUT,
                                             start_new_session=True, text=True))
        return self.started[-1]

    def node(self, node_config):
        return self._start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}", "--port",
                           str(_free_port()), "--node-config", node_config)

    def run(self, app):
        """`flwr run` of the App in directory app, streaming its log; the process (stdout: the log)."""
        return self._start("flwr", "run", str(app), "here", "--stream", output=subprocess.PIPE)

    @staticmethod
    def kill(process):
        os.killpg(process.pid, signal.SIGKILL)     # the process and its children (a SuperNode's ClientApp)
        process.wait()

    def close(self):
        for process in self.started:
            if process.poll() is None:
                self.kill(process)


@pytest.fixture
def flower(tmp_path):
    deployment = FlowerDeployment(tmp_path)
    yield deployment
    deployment.close()


def _finished(run, timeout=600):
    log, _ = run.communicate(timeout=timeout)
    assert run.returncode == 0, log
    return log


def test_a_flower_deployment_on_127_0_0_1_runs_the_federation(tmp_path, flower):
    """A SuperLink, one SuperNode per device (here 3 processes on 127.0.0.1), and `flwr run` of the
    Flower App that `edgeff federate --flower-app` writes. Two nodes train on partitions of the shared
    set, the third on a data file of its own; the second round of each layer runs on the frozen layers
    the nodes kept from the first."""
    out, app = tmp_path / "fed", tmp_path / "app"
    own = tmp_path / "own.npz"
    fashion = load_dataset("fashion-mnist")
    np.savez(own, x_train=fashion.x_train[-500:].reshape(-1, 28, 28), y_train=fashion.y_train[-500:],
             x_test=fashion.x_test[:10].reshape(-1, 28, 28), y_test=fashion.y_test[:10])
    assert edgeff("federate", *_options(SMALL), "--out", out, "--flower-app", app).returncode == 0
    for node_config in ("partition-id=0 num-partitions=3", "partition-id=1 num-partitions=3", f'data-file="{own}"'):
        flower.node(node_config)
    log = _finished(flower.run(app))
    history = _federation(str(out))["history"]
    assert [(h["round"], h["updates"], h["rejected"]) for h in history] == [(r, 3, 0) for r in (1, 2, 3, 4)], log
    assert history[-1]["test_error"] < 0.85
    assert ok(edgeff("eval", out, "--json"))["test_error"] == pytest.approx(history[-1]["test_error"])


def _rounds_saved(out):
    return _federation(out)["round"] if os.path.exists(os.path.join(out, "metrics.json")) else 0


def test_a_supernode_killed_mid_round_leaves_the_round_to_the_others_and_rejoins(tmp_path, flower):
    """--min-clients 2 of 3: node 3 is killed (SIGKILL) while round 4 (layer 2's first) is under way.
    The SuperLink misses its heartbeats and answers for it with an error, so round 4 ends with the two
    others' updates and training goes on; node 3, started again, is sent the frozen layer 1 it lost and
    counts in round 5 or 6."""
    out, app = str(tmp_path / "fed"), tmp_path / "app"
    settings = dict(SMALL, rounds=3, min_clients=2, round_timeout=300)
    assert edgeff("federate", *_options(settings), "--out", out, "--flower-app", app).returncode == 0
    nodes = [flower.node(f"partition-id={i} num-partitions=3") for i in range(3)]
    run = flower.run(app)
    while run.poll() is None and _rounds_saved(out) < 3:
        time.sleep(0.1)
    flower.kill(nodes[2])
    while run.poll() is None and _rounds_saved(out) < 4:
        time.sleep(0.1)
    flower.node("partition-id=2 num-partitions=3")
    log = _finished(run)
    history = _federation(out)["history"]
    assert [h["round"] for h in history] == [1, 2, 3, 4, 5, 6], log
    assert [h["updates"] for h in history[:4]] == [3, 3, 3, 2], log   # round 4 went on without node 3
    back = [h for h in history[4:] if h["updates"] == 3]               # node 3 back, counted ...
    assert back and back[0]["bytes_down"] > back[0]["bytes_up"], log   # ... and sent layer 1 again
    assert all(h["rejected"] == 0 for h in history) and history[-1]["test_error"] < 0.85
