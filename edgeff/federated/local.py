"""One client round, without Flower: the layers the server shipped, trained on the client's partition
by edgeff's own trainer (dense FF's or FFCL's: its kernels, memory plan and loop), the frozen layers
below only run forward."""

import dataclasses
import functools

import numpy as np

from ..data import load_dataset
from ..errors import UsageError
from ..memory import parse_bytes
from ..process_memory import runtime_bytes
from ..train import Trainer
from ..training import make_trainer, plan_run
from .partition import partition


class PhaseTrainer(Trainer):
    """A dense Trainer that trains one phase of its layout (the shipped layers; frozen layers below run
    forward)."""

    def __init__(self, cfg, ds, progress=None, plan=None, cache=None, phase=0):
        super().__init__(cfg, ds, progress, plan=plan, cache=cache)
        self.trained_phase = phase

    def phases(self):
        return [self.layout.phases[self.trained_phase].layers]

    def _bind(self, p):
        self._bind_phase(self.trained_phase)


def set_layers(net, layers, source):
    """Copy layers {k: {letter: array}} into net's own arrays once every one fits; one UsageError line,
    nothing copied, when one does not (this node's data makes another net than the federation's)."""
    pairs = []
    for k, arrays in layers.items():
        own = net.layer_arrays(k) if 0 <= k < len(net.weights) else {}
        for letter, a in arrays.items():
            if letter not in own or own[letter].shape != a.shape:
                mine = "x".join(map(str, own[letter].shape)) if letter in own else "none"
                raise UsageError(f"the federation's {letter}{k + 1} is {'x'.join(map(str, a.shape))}, but {source} "
                                 f"makes it {mine}: give this node rows like the federation's (images of the same "
                                 "shape, or the same flat features)")
            pairs.append((own[letter], a))
    for mine, theirs in pairs:
        mine[...] = theirs


def train_phase(settings, ds, phase, layers, seed, lr):
    """Train phase `phase`'s layers at rate lr for settings.local_epochs on ds (or settings.local_steps
    batches of them) inside settings.memory_budget (the whole process), starting from `layers`
    {k: {letter: array}}: the global net's layers up to the phase's; returns ({k: {letter: array}} of
    the trained layers, their mean loss in the last epoch)."""
    cfg = dataclasses.replace(settings.train_config(), seed=seed, lr=lr)
    budget = parse_bytes(settings.memory_budget) if settings.memory_budget else None
    run = plan_run(cfg, ds, budget, runtime=runtime_bytes())
    trainer = make_trainer(run, ds, dense=functools.partial(PhaseTrainer, phase=phase))
    set_layers(trainer.net, layers, ds.name)
    history = trainer.fit(steps_per_phase=settings.local_steps or None)
    trained = {k: {letter: a.copy() for letter, a in trainer.net.layer_arrays(k).items()}
               for k in settings.phases[phase]}
    return trained, float(np.mean(history[-1]))


def round_seed(seed, server_round, partition_id):
    """The seed of one client's training in one round: its own data order and negatives every round."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


@functools.lru_cache(maxsize=1)
def training_set(dataset, data_dir, limit_train):
    """The data set, its training rows cut to the first limit_train (0: all); loaded once per process."""
    ds = load_dataset(dataset, data_dir or None)
    if limit_train:
        ds = dataclasses.replace(ds, x_train=ds.x_train[:limit_train].copy(), y_train=ds.y_train[:limit_train].copy())
    return ds


def client_data(settings, partition_id):
    """The data set with only client partition_id's share of the training rows (partition.py)."""
    if not 0 <= partition_id < settings.clients:
        raise UsageError(f"partition-id {partition_id} is not one of the federation's {settings.clients} "
                         f"partitions (0 to {settings.clients - 1}); set the SuperNode's --node-config")
    return _partitions(settings)[partition_id]


def check_clients(settings):
    """Plan every client's round as it will run (its rows against the net, the memory budget): one
    UsageError line for the first that would fail, before any client starts."""
    budget, runtime = parse_bytes(settings.memory_budget) if settings.memory_budget else None, runtime_bytes()
    for ds in _partitions(settings):
        plan_run(settings.train_config(), ds, budget, runtime=runtime)


def _partitions(settings):
    ds = training_set(settings.dataset, settings.data_dir, settings.limit_train)
    return [dataclasses.replace(ds, x_train=ds.x_train[rows], y_train=ds.y_train[rows])
            for rows in partition(ds.y_train, settings.clients, settings.partition, settings.seed)]
