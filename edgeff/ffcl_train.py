"""FFCL training (--algo ffcl; the net and its formulas: edgeff/ffcl_model.py).

Per batch of B data rows: x^ (no label), p = x^ @ W_0 once, the true labels y and a wrong
label per row, then FFCLNet.settle: K + 1 steps of every layer. A hard negative is the wrong
label scored highest: with early labels by the first layer's goodness at step 0, from p and
L_0 alone (kernels/ff_loss.label_goodness), as the labels must be known before the forward;
with late labels, after the label-free forward, by the net's own score (every layer's goodness
at the last step, what the classifier ranks by). Each layer's local FF gradient is made at the
last step (early labels: right after its own forward), and every layer takes its optimiser
step once the forward is done:
    rows    2B goodness rows, B positives (label y) then B negatives (the wrong label)
    dz      FF's loss gradient of those rows' pre-activations (kernels/ff_loss.ff_loss_grad)
    dL_k[c] = sum of dz over rows of label c, db_k = sum of dz   (kernels/overlay.overlay_grad)
    dW_k    = h_{k-1}^T dz, dF_k = h_{k+1}^T dz with h_{k+1} of step K - 1
The inputs of a layer are constants to it: no gradient crosses layers or settling steps.
With late labels the feature path has B rows and a row's two goodness rows fold into one
before the products (as the first layer of plain FF does, kernels/overlay.py); with early
labels the activities of the 2B rows differ past the first layer. Every buffer is a view
into one arena laid out before the first batch; the loop allocates nothing.
"""

from dataclasses import dataclass

import numpy as np

from .fit_loop import Optimizer, Param, PhasedTrainer
from .ffcl_model import FFCLNet
from .kernels import batch, dense, ff_loss, norm, overlay
from .memory import Buffer, plan_greedy
from .model import EPS

F32 = "float32"


@dataclass(frozen=True)
class FFCLLayout:
    """Every buffer of an ffcl run. It trains all layers at once and the settling loop keeps
    every activity until the last step, so all buffers live through the run (steps 0..0)."""
    params: dict         # layer k -> {name: Buffer}: w, b, and l (labelled layers), f (feedback)
    grads: dict          # layer k -> {name: its gradient's Buffer}
    opt: dict            # layer k -> ({name: state Buffer} per slot: Adam's two moments or SGD's momentum)
    work: dict           # name -> Buffer: the batch's data and scratch
    acts: list           # per layer {name: Buffer}: z, h, and t (feedback product), zz, hh (late goodness rows)
    buffers: list

    def checkpoint_arrays(self, p):
        out = {}
        for k, params in self.params.items():
            out.update({buf.name: buf for buf in params.values()})
            for slot in self.opt[k]:
                out.update({buf.name: buf for buf in slot.values()})
        return out


def ffcl_layout(cfg, in_width, num_classes, batch_size):
    """The FFCLLayout of cfg's net on rows of in_width features, batches of batch_size."""
    widths, b, c = list(cfg.sizes[1:]), batch_size, num_classes
    n, rows = len(widths), batch_size if cfg.late_labels else 2 * batch_size
    d_in = [in_width] + widths[:-1]
    buf = lambda name, shape, kind, k=None, dtype=F32: Buffer(name, shape, dtype, 0, 0, kind, k)
    shapes = {k: dict(w=(d_in[k], widths[k]), b=(widths[k],)) for k in range(n)}
    for k in range(n if cfg.separate_labels else 1):
        shapes[k]["l"] = (c, widths[k])
    for k in range(n - 1 if cfg.feedback_steps else 0):
        shapes[k]["f"] = (widths[k + 1], widths[k])
    params = {k: {p: buf(f"{p}{k}", s, "weights", k) for p, s in sh.items()} for k, sh in shapes.items()}
    grads = {k: {p: buf(f"grad/{p}{k}", s, "gradients", k) for p, s in sh.items()} for k, sh in shapes.items()}
    slots = 2 if cfg.optimizer == "adam" else 1
    opt = {k: tuple({p: buf(f"opt{s}_{p}{k}", sh, "optimizer", k) for p, sh in shapes[k].items()}
                    for s in range(slots)) for k in range(n)}
    work = dict(idx=buf("idx", (b,), "data", dtype="int64"), labels=buf("labels", (2 * b,), "data", dtype="int64"),
                ones=buf("ones", (2 * b,), "data"), x=buf("x", (b, in_width), "data"),
                p=buf("p", (b, widths[0]), "activations", 0),
                good=buf("good", (2 * b,), "activations"), loss=buf("loss", (2 * b,), "activations"))
    if cfg.negatives == "hard":
        work["scores"] = buf("hn_scores", (b, c), "activations", 0)
        if cfg.late_labels:
            work["layer_scores"] = buf("hn_layer_scores", (b, c), "activations")
    else:
        work["uniform"] = buf("uniform", (b,), "data", dtype="float64")
    acts = []
    for k, w in enumerate(widths):
        a = dict(z=buf(f"z{k}", (rows, w), "activations", k), h=buf(f"h{k}", (rows, w), "activations", k))
        if "f" in shapes[k]:
            a["t"] = buf(f"t{k}", (rows, w), "activations", k)
        if cfg.late_labels:
            a.update(zz=buf(f"zz{k}", (2 * b, w), "activations", k), hh=buf(f"hh{k}", (2 * b, w), "activations", k))
            if "t" in a:
                a["above"] = buf(f"above{k}", (b, widths[k + 1]), "activations", k)
        acts.append(a)
    buffers = [x for k in range(n) for x in (*params[k].values(), *grads[k].values(),
                                             *(s for slot in opt[k] for s in slot.values()))]
    buffers += list(work.values()) + [x for a in acts for x in a.values()]
    return FFCLLayout(params, grads, opt, work, acts, buffers)


def planner(cfg, ds):
    """plan_of(batch size) -> the memory plan of cfg's ffcl run on ds."""
    return lambda b: plan_greedy(ffcl_layout(cfg, ds.x_train.shape[1], ds.num_classes, b).buffers)


class FFCLTrainer(PhasedTrainer):
    """Trains cfg's FFCL net on ds inside the arena of `plan` (made here when None)."""

    def __init__(self, cfg, ds, progress=None, plan=None):
        self._lay_out(cfg, ds, progress, ffcl_layout(cfg, ds.x_train.shape[1], ds.num_classes, cfg.batch_size), plan)
        v, lay = self.arena.view, self.layout

        def alloc(key):      # layer k's (w, b), or ("l", k) / ("f", k)'s array
            return (v(lay.params[key]["w"]), v(lay.params[key]["b"])) if isinstance(key, int) else \
                v(lay.params[key[1]][key[0]])
        self.net = FFCLNet.create(cfg.sizes, ds.num_classes, self.rng, alloc, cfg.separate_labels, cfg.late_labels,
                                  cfg.feedback_steps, cfg.goodness == "mean")
        self.order = np.arange(len(ds.y_train), dtype=np.int64)
        self.y_train = ds.y_train.astype(np.int64)
        self.work = {name: v(b) for name, b in lay.work.items()}
        self.work["ones"][...] = 1.0
        self.idx = self.work["idx"]
        self.acts = [{name: v(b) for name, b in a.items()} for a in lay.acts]
        # one bound method, made once: settle calls it per layer
        self._at_last = self._keep_last_step if cfg.late_labels else self._train_layer

    def phases(self):
        return [list(range(len(self.net.weights)))]

    def _bind(self, p):
        v, net = self.arena.view, self.net
        self.phase, self.params, self.opts, self.grads = p, {}, {}, {}
        for k in self.phases()[0]:
            tensors = net.layer_arrays(k)
            state = [{name: v(b) for name, b in slot.items()} for slot in self.layout.opt[k]]
            for slot in state:
                for a in slot.values():
                    a[...] = 0.0
            self.grads[k] = {name: v(self.layout.grads[k][name]) for name in tensors}
            self.params[k] = tuple(Param(a, self.grads[k][name], state[0][name], state[1][name] if len(state) > 1
                                         else None) for name, a in tensors.items())
            self.opts[k] = Optimizer(self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)

    def _phase_label(self, keys):
        return ""

    def _part(self, key):
        return f"layer {key + 1}/{len(self.net.weights)}"

    def _lr_option(self, key):
        return "--lr", self.cfg.lr

    # ---- one batch ----

    def _step(self, b, keys, totals):
        net, ds, w = self.net, self.ds, self.work
        idx, x, p, labels = w["idx"][:b], w["x"][:b], w["p"][:b], w["labels"][:2 * b]
        y, neg = labels[:b], labels[b:]
        np.take(self.y_train, idx, out=y, mode="clip")    # "clip": no hidden copy; idx is always in range
        batch.gather_scaled(ds.x_train, idx, ds.scale, x)
        norm.length_normalise(x, x, EPS)
        np.matmul(x, net.weights[0], out=p)
        hard = self.cfg.negatives == "hard"
        if hard and not net.late:
            ff_loss.label_goodness(p, net.label_w[0], w["ones"][:b], net.biases[0], w["scores"][:b], net.mean_goodness)
            ff_loss.hardest_wrong_label(w["scores"][:b], y, neg)
        elif not hard:
            self.rng.random(out=w["uniform"][:b])
            ff_loss.random_wrong_label(y, w["uniform"][:b], net.num_classes, neg)
        self.batch_rows, self.totals = b, totals
        rows = b if net.late else 2 * b
        a = self.acts
        net.settle(p, labels, w["ones"], [ak["z"][:rows] for ak in a], [ak["h"][:rows] for ak in a],
                   [ak["t"][:rows] if "t" in ak else None for ak in a], w["good"], self._at_last)
        if net.late:
            if hard:
                self._hardest_by_score(b, y, neg)
            for k in keys:
                self._train_layer(k)
        for k in keys:       # after the whole forward: every activity was made with the batch's starting weights
            self.opts[k].step(self.params[k])

    def _keep_last_step(self, k):
        """Late labels, layer k at the last step: keep u_k (in hh) and the activity fed back to it (step K - 1's)."""
        a, b = self.acts, self.batch_rows
        np.copyto(a[k]["hh"][:b], a[k]["z"][:b])
        if "above" in a[k]:
            np.copyto(a[k]["above"][:b], a[k + 1]["h"][:b])

    def _hardest_by_score(self, b, y, neg):
        """Late labels: the wrong label the net itself scores highest (its classifier's score: every layer's
        goodness over all labels at the last step, one product each from the kept u_k)."""
        net, w = self.net, self.work
        scores, part = w["scores"][:b], w["layer_scores"][:b]
        scores[...] = 0.0
        for k, ak in enumerate(self.acts):
            ff_loss.label_goodness(ak["hh"][:b], net.label_w[k], w["ones"][:b], net.biases[k], part, net.mean_goodness)
            scores += part
        ff_loss.hardest_wrong_label(scores, y, neg)

    def _train_layer(self, k):
        """Layer k's loss and gradient at the last settling step (module docstring); _step steps them."""
        net, w, a, b = self.net, self.work, self.acts, self.batch_rows
        rows = b if net.late else 2 * b
        labels, good, loss = w["labels"][:2 * b], w["good"][:2 * b], w["loss"][:2 * b]
        g = self.grads[k]
        if net.late:        # the goodness rows: u_k (kept) + L_k[label]
            dz = a[k]["zz"][:2 * b]
            overlay.overlay_pre(a[k]["hh"][:b], net.label_w[k], w["ones"][:b], labels, dz)
            ff_loss.ff_activate(dz, net.biases[k], a[k]["hh"][:2 * b], good, net.mean_goodness, EPS)
        else:
            dz = a[k]["z"][:rows]
        ff_loss.ff_loss_grad(dz, good, b, self.cfg.threshold, loss, net.mean_goodness)
        above = None if not net.feeds_back(k) else a[k]["above"][:b] if net.late else a[k + 1]["h"][:rows]
        if above is not None and not net.late:
            np.matmul(above.T, dz, out=g["f"])
        data_rows = b if net.late or k == 0 else 2 * b   # rows of distinct input: their goodness rows fold
        if "l" in g:
            overlay.overlay_grad(dz, w["ones"][:data_rows], labels, 1.0, g["l"], g["b"])
        else:
            dense.column_sum(dz, g["b"])
        below = w["x"][:b] if k == 0 else a[k - 1]["h"][:rows]
        np.matmul(below.T, dz[:data_rows], out=g["w"])
        if above is not None and net.late:
            np.matmul(above.T, dz[:b], out=g["f"])
        self.totals[k] += loss.mean()
