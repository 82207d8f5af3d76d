"""One training run of a TrainConfig on a Dataset, as `edgeff train` and FFClassifier both make it:
every check of the config against the data and the memory plan before anything is allocated
(plan_run), then the trainer of the net's kind (make_trainer)."""

import dataclasses

from . import ffcl_train, tuning, uff_train, unsup_train
from .budget import CACHE_DTYPES, choose_frozen_input, fit_budget, planner
from .config import UNSUPERVISED
from .convnet import ConvNet, image_chw
from .errors import UsageError
from .model import FFNet
from .runs import load_run
from .sff_train import ConvTrainer, warm_up_conv
from .train import Trainer, warm_up


# algo -> the module of its own planner (and, for the unsupervised ones, of its check_data)
OWN_PLANNER = {"ff-unsup": unsup_train, "uff": uff_train, "ffcl": ffcl_train}


def _holds(ds):
    return "flat rows" if ds.image_shape is None else ds.image_shape


@dataclasses.dataclass(frozen=True)
class RunPlan:
    cfg: object                 # TrainConfig with its batch size settled
    plan: object                # the memory plan the trainer's arena is laid out by
    in_width: int | None        # dense: the first layer's input width with label inputs
    frozen_input: str | None    # layerwise: "cache", "cache-float16" or "stream" (budget.choose_frozen_input)
    cache_bytes: int            # what that cache takes, or would take


def load_init(run_dir):
    """(ConvNet, its config) of the conv run --init starts from, or one UsageError line."""
    net, cfg = load_run(run_dir)
    if not isinstance(net, ConvNet):
        raise UsageError(f"--init {run_dir}: holds a dense net; --init starts conv nets from a conv run")
    return net, cfg


def plan_run(cfg, ds, budget=None, auto=False, init_net=None, resumed_frozen_input=None, runtime=0):
    """The RunPlan of cfg's run on ds, or one UsageError line saying what does not fit: the net
    and the data (its input width, its image size), --shift and the data, --init's net and the
    data, the memory budget (budget: bytes or None; auto: the largest batch that fits it; runtime:
    the process's own resident memory, which the budget covers too). A dense net too big for the
    budget with positives and negatives together is planned with them in turn when that fits.
    resumed_frozen_input: the choice of the run a checkpoint continues, kept."""
    if init_net is not None and init_net.in_shape != image_chw(ds.image_shape):
        raise UsageError(f"--init {cfg.init}: its net takes {'x'.join(map(str, init_net.in_shape))} (CxHxW) images, "
                         f"{ds.name} holds {ds.image_shape}")
    in_width = None
    if cfg.is_conv:
        if image_chw(ds.image_shape) is None:
            raise UsageError(f"--model {cfg.model} takes images (H, W) or (H, W, C); {ds.name} holds "
                             f"{_holds(ds)}; use a dense --model")
        try:
            planner(cfg, ds)(1)
        except ValueError as exc:          # a layer does not fit the image size
            raise UsageError(f"--model {cfg.model} does not fit {ds.name}'s {ds.image_shape} images: {exc}") from None
    else:
        if cfg.sizes[0] != ds.x_train.shape[1]:
            raise UsageError(f"--model {cfg.model} takes {cfg.sizes[0]} inputs but {ds.name} has "
                             f"{ds.x_train.shape[1]} features per example; start the spec with {ds.x_train.shape[1]}")
        _, in_width = FFNet.label_layout(cfg.sizes[0], ds.num_classes, ds.image_shape is not None)
    if cfg.shift and image_chw(ds.image_shape) is None:
        raise UsageError(f"--shift moves images; {ds.name} holds {_holds(ds)}")
    if cfg.shift and not cfg.is_conv and len(ds.image_shape) != 2:
        raise UsageError(f"--shift moves 2-D images in a dense net; {ds.name} holds {ds.image_shape}")
    own = None if cfg.is_conv else OWN_PLANNER.get(cfg.algo)     # conv ffcl: the conv planner
    if cfg.algo in UNSUPERVISED:
        own.check_data(cfg, ds)
    plan_of = own.planner(cfg, ds) if own else planner(cfg, ds, in_width)
    try:
        plan, batch_size = fit_budget(plan_of, cfg.batch_size, ds, budget, auto, runtime)
    except UsageError as too_big:
        if budget is None or auto or cfg.is_conv or cfg.in_turn or own:
            raise
        in_turn = dataclasses.replace(cfg, in_turn=True)   # the budget is tight: half the activations, same result
        try:
            plan, batch_size = fit_budget(planner(in_turn, ds, in_width), cfg.batch_size, ds, budget, auto, runtime)
        except UsageError:
            raise too_big from None
        cfg = in_turn
    cfg = dataclasses.replace(cfg, batch_size=batch_size)
    if own:
        return RunPlan(cfg, plan, in_width, None, 0)
    plan, frozen_input, cache_bytes = choose_frozen_input(cfg, ds, in_width, plan, budget, resumed_frozen_input,
                                                         runtime)
    return RunPlan(cfg, plan, in_width, frozen_input, cache_bytes)


def make_trainer(run, ds, progress=None, init_net=None, blas_threads=None, dense=Trainer):
    """The trainer of a RunPlan's net on ds (dense FF: `dense`, train.Trainer or a subclass taking its
    arguments, conv: sff_train.ConvTrainer); progress(total, desc) makes an epoch's progress reporter
    or None (fit_loop.PhasedTrainer).
    This machine's tuning is applied first (edgeff/tuning.py; blas_threads: a resumed run's own count)."""
    tuning.apply(tuning.tuned()[0], blas_threads)
    if run.cfg.is_conv:
        return ConvTrainer(run.cfg, ds, progress, run.plan, init=init_net)
    if run.cfg.algo == "ff-unsup":
        return unsup_train.UnsupTrainer(run.cfg, ds, progress, run.plan)
    if run.cfg.algo == "uff":
        return uff_train.UffTrainer(run.cfg, ds, progress, run.plan)
    if run.cfg.algo == "ffcl":
        return ffcl_train.FFCLTrainer(run.cfg, ds, progress, run.plan)
    return dense(run.cfg, ds, progress, plan=run.plan, cache=CACHE_DTYPES[run.frozen_input])


def warm_up_for(cfg):
    """Compile, or load from Numba's cache, the kernels cfg's run uses; returns the seconds it took."""
    if cfg.is_conv:
        return warm_up_conv()
    extra = {"ff-unsup": unsup_train.warm_up_unsup, "uff": uff_train.warm_up_uff}.get(cfg.algo)
    return warm_up() + (extra() if extra else 0.0)
