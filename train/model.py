"""The embedding network both branches of the twin share, and its training.

A small 1-D CNN maps a z-scored beat window (175 samples at 250 Hz) to a
unit-length embedding; L2 normalisation is inside the network
(``tf.math.l2_normalize``, which LiteRT runs as its int8
``L2_NORMALIZATION`` op). It is trained as a classifier over the training
identities with an additive angular margin (ArcFace, Deng et al. 2019,
optionally with sub-centres) and only the embedding is kept: unseen persons
are compared by cosine similarity of their embeddings.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python loggers (call before importing it)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes
    ----------
    embedding_dim : int
        Size of the unit embedding.
    width : int
        Channels of the first convolution (later ones scale from it).
    epochs : int
        Passes over the (capped) training set.
    batch_size : int
    lr : float
        Peak learning rate (Adam, cosine decay after a 2-epoch warm-up).
    margin : float
        ArcFace additive angular margin in radians.
    scale : float
        ArcFace logit scale.
    subcenters : int
        Sub-centres per identity (1 = plain ArcFace).
    mitdb_cap : int
        Beats drawn per MIT-BIH person (each epoch draws afresh).
    record_pairs : float
        Weight of the cross-session term (0: off). Batches are then drawn as
        32 persons x 2 of their recordings x 4 beats, and a supervised
        contrastive loss pulls each beat towards the same person's beats of
        the *other* recording only, so what tells two sittings apart costs
        the network (each recording is treated as a domain to be invariant to).
    dropout : float
    seed : int
    threads : int
        TensorFlow intra-op threads.
    """

    embedding_dim: int = 64
    width: int = 16
    epochs: int = 60
    batch_size: int = 256
    lr: float = 3e-3
    margin: float = 0.3
    scale: float = 30.0
    # One centre per person: with 3 sub-centres a person's recordings could
    # settle on different sub-centres, i.e. the loss let sessions stay apart;
    # one centre pulls all of a person's sittings together (5-fold CV: 10-beat
    # EER 5.5 -> 4.5 %, cross-day 9.4 -> 7.6 %; docs/model/report.md, ablation).
    subcenters: int = 1
    mitdb_cap: int = 150
    dropout: float = 0.2
    weight_decay: float = 1e-4
    record_pairs: float = 0.0
    #: Convolutions per stage (1: the 2026-12 shipped net; 2: twice as deep).
    depth: int = 1
    #: Epochs over which the ArcFace margin rises linearly from 0 to ``margin``
    #: (0: the full margin from the start). With ~19,000 PTB-XL identities of
    #: ~10 beats each, the full 0.3 margin from step one kept the loss at
    #: chance for three epochs (issue 15); a margin that grows once the
    #: embedding has structure is the usual remedy.
    margin_warmup: int = 0
    #: Class centres per step (0: all). With ~19,000 identities the full
    #: ArcFace head costs more than the network; each step then scores the
    #: batch's own identities plus random others, ``sampled_classes`` in all
    #: (partial FC, An et al. 2022).
    sampled_classes: int = 0
    seed: int = 1
    threads: int = 2
    aug: dict[str, float] = field(
        default_factory=lambda: {"shift": 3, "scale": 0.15, "drift": 0.3, "offset": 0.2, "noise": 0.08,
                                 "stretch": 0.08, "envelope": 0.0, "qt": 0.0, "mix": 0.0,
                                 "r_index": 62}
    )

    def to_dict(self) -> dict:
        return asdict(self)


@keras.saving.register_keras_serializable(package="ecgstream")
class L2Normalize(keras.layers.Layer):
    """``tf.math.l2_normalize`` over the last axis (an int8 op in LiteRT)."""

    def call(self, x):  # noqa: D102
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-6)


def build_embedding(window_len: int, cfg: TrainConfig) -> keras.Model:
    """The embedding network: z-scored window (n, window_len) -> unit (n, dim)."""
    w = cfg.width
    inp = keras.Input((window_len,), name="beat")
    x = keras.layers.Reshape((window_len, 1))(inp)
    for i, (ch, k) in enumerate(((w, 7), (int(w * 1.5), 5), (2 * w, 5), (3 * w, 3))):
        for j in range(max(1, cfg.depth)):
            sfx = f"{i}" if j == 0 else f"{i}_{j}"
            x = keras.layers.Conv1D(ch, k, padding="same", use_bias=False, name=f"conv{sfx}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{sfx}")(x)
            x = keras.layers.ReLU(name=f"relu{sfx}")(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    x = keras.layers.Dense(cfg.embedding_dim, name="proj")(x)
    out = L2Normalize(name="l2norm")(x)
    return keras.Model(inp, out, name="ecg_embedding")


def _zscore_tf(x: tf.Tensor) -> tf.Tensor:
    mu = tf.reduce_mean(x, axis=-1, keepdims=True)
    sd = tf.math.reduce_std(x, axis=-1, keepdims=True)
    return (x - mu) / tf.maximum(sd, 1e-3)


def augment(x: tf.Tensor, rng: tf.random.Generator, aug: dict[str, float]) -> tf.Tensor:
    """Random shift, amplitude scale, baseline drift and noise, then z-score.

    Applied to z-scored windows; the re-normalisation makes the result what
    the runtime would feed for the same disturbance of the raw window.
    """
    n = tf.shape(x)[0]
    L = x.shape[1]
    if aug.get("stretch", 0) > 0:
        # Time-warp around the R peak (heart-rate changes stretch the ST-T part).
        f = rng.uniform([n, 1], 1 - aug["stretch"], 1 + aug["stretch"])
        r = float(aug["r_index"])
        pos = tf.clip_by_value(r + (tf.range(L, dtype=tf.float32)[None, :] - r) * f, 0.0, L - 1.001)
        lo = tf.cast(tf.floor(pos), tf.int32)
        frac = pos - tf.floor(pos)
        x = tf.gather(x, lo, batch_dims=1) * (1 - frac) + tf.gather(x, lo + 1, batch_dims=1) * frac
    if aug.get("envelope", 0) > 0:
        # A smooth random gain along the beat (P, QRS and T change size differently
        # between sessions): linear interpolation of 5 random control gains.
        ctrl = 1 + rng.uniform([n, 5], -aug["envelope"], aug["envelope"])
        pos = tf.linspace(0.0, 4.0, L)
        lo = tf.minimum(tf.cast(tf.floor(pos), tf.int32), 3)
        frac = (pos - tf.cast(lo, tf.float32))[None, :]
        g = tf.gather(ctrl, lo, axis=1) * (1 - frac) + tf.gather(ctrl, lo + 1, axis=1) * frac
        x = x * g
    if aug.get("qt", 0) > 0:
        # Heart-rate-dependent repolarisation: the ST-T part after R stretches
        # or shrinks on its own (QT follows RR, QRS hardly does), between sessions
        # at another resting rate. Warp only the samples after R + 20 ms.
        f = rng.uniform([n, 1], 1 - aug["qt"], 1 + aug["qt"])
        r = float(aug["r_index"]) + 5.0
        t = tf.range(L, dtype=tf.float32)[None, :]
        pos = tf.where(t > r, r + (t - r) * f, t)
        pos = tf.clip_by_value(pos, 0.0, L - 1.001)
        lo = tf.cast(tf.floor(pos), tf.int32)
        frac = pos - tf.floor(pos)
        x = tf.gather(x, lo, batch_dims=1) * (1 - frac) + tf.gather(x, lo + 1, batch_dims=1) * frac
    if aug.get("mix", 0) > 0:
        # Electrode placement: a lead a little off its place sees a slightly
        # rotated heart vector. With one lead the nearest stand-in is a small
        # mixing of the beat with its own time derivative and its smoothed
        # self (a first-order change of morphology), per beat a random mix.
        d = tf.concat([x[:, 1:2] - x[:, 0:1], (x[:, 2:] - x[:, :-2]) / 2, x[:, -1:] - x[:, -2:-1]], axis=1)
        d = d / tf.maximum(tf.math.reduce_std(d, axis=-1, keepdims=True), 1e-3)
        k = tf.ones([9, 1, 1]) / 9.0
        sm = tf.nn.conv1d(x[:, :, None], k, 1, "SAME")[:, :, 0]
        a = rng.uniform([n, 1], -aug["mix"], aug["mix"])
        b = rng.uniform([n, 1], 0, aug["mix"])
        x = x + a * d + b * (sm - x)
    s = rng.uniform([n, 1], -aug["shift"], aug["shift"] + 1, dtype=tf.int32)
    idx = tf.clip_by_value(tf.range(L)[None, :] - s, 0, L - 1)
    x = tf.gather(x, idx, batch_dims=1)
    x = x * rng.uniform([n, 1], 1 - aug["scale"], 1 + aug["scale"])
    ramp = tf.linspace(-1.0, 1.0, L)[None, :]
    x = x + rng.normal([n, 1], 0, aug["drift"]) * ramp + rng.normal([n, 1], 0, aug["offset"])
    x = x + rng.normal([n, L], 0, 1) * rng.uniform([n, 1], 0, aug["noise"])
    return _zscore_tf(x)


class ArcFace(keras.layers.Layer):
    """Additive angular margin logits over ``n_classes`` (x ``subcenters``)."""

    def __init__(self, n_classes: int, margin: float, scale: float, subcenters: int = 1, **kw):
        super().__init__(**kw)
        self.n, self.s, self.k = n_classes, scale, subcenters
        # A variable, so that a margin warm-up can change it between epochs
        # without retracing the training step.
        self.m = tf.Variable(float(margin), trainable=False, dtype=tf.float32, name="margin")

    def build(self, input_shape):  # noqa: D102
        self.w = self.add_weight(
            shape=(int(input_shape[-1]), self.n * self.k), initializer="glorot_uniform", name="centres"
        )

    def call(self, emb, labels=None, classes=None):  # noqa: D102
        """Logits; with ``classes`` (ids, sub-centres 1) only those centres, ``labels`` indexing into them."""
        w = self.w if classes is None else tf.gather(self.w, classes, axis=1)
        w = tf.math.l2_normalize(w, axis=0)
        cos = tf.matmul(emb, w)
        n = self.n if classes is None else tf.shape(classes)[0]
        if self.k > 1:
            cos = tf.reduce_max(tf.reshape(cos, (-1, n, self.k)), axis=-1)
        if labels is None:
            return self.s * cos
        cos = tf.clip_by_value(cos, -1 + 1e-6, 1 - 1e-6)
        theta = tf.acos(cos)
        target = tf.cos(tf.minimum(theta + self.m, math.pi))
        onehot = tf.one_hot(labels, n)
        return self.s * (onehot * target + (1 - onehot) * cos)


def cross_session_loss(emb: tf.Tensor, y: tf.Tensor, sess: tf.Tensor, tau: float = 0.1) -> tf.Tensor:
    """Supervised contrastive loss whose positives are the same person's beats of another session.

    ``emb`` are unit rows. For anchor ``i`` the positives are ``j`` with
    ``y_j == y_i`` and ``sess_j != sess_i``; the denominator runs over every
    other beat of the batch. Anchors without such a positive do not count.
    """
    sim = tf.matmul(emb, emb, transpose_b=True) / tau
    n = tf.shape(emb)[0]
    eye = tf.eye(n, dtype=tf.bool)
    same = tf.equal(y[:, None], y[None, :])
    other = tf.not_equal(sess[:, None], sess[None, :])
    pos = tf.cast(same & other & ~eye, tf.float32)
    logits = tf.where(eye, tf.fill(tf.shape(sim), -1e9), sim)
    logp = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    npos = tf.reduce_sum(pos, axis=1)
    per = -tf.reduce_sum(pos * logp, axis=1) / tf.maximum(npos, 1.0)
    has = tf.cast(npos > 0, tf.float32)
    return tf.reduce_sum(per * has) / tf.maximum(tf.reduce_sum(has), 1.0)


def pk_batches(rng: np.random.Generator, y: np.ndarray, sess: np.ndarray, steps: int,
               persons: int = 32, sessions: int = 2, beats: int = 4) -> list[np.ndarray]:
    """Batches of ``persons`` identities x ``sessions`` recordings x ``beats`` beats."""
    groups: dict[int, dict[int, np.ndarray]] = {}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        groups[int(c)] = {int(t): idx[sess[idx] == t] for t in np.unique(sess[idx])}
    multi = [c for c, g in groups.items() if len(g) >= sessions]
    out = []
    for _ in range(steps):
        chosen = rng.choice(multi, min(persons, len(multi)), replace=False)
        b = []
        for c in chosen:
            ss = rng.choice(sorted(groups[c]), sessions, replace=False)
            for t in ss:
                pool = groups[c][int(t)]
                b.append(rng.choice(pool, beats, replace=pool.size < beats))
        out.append(np.concatenate(b))
    return out


class _Progress:
    """One line per epoch on stderr: loss, accuracy, time, ETA."""

    def __init__(self, epochs: int, label: str) -> None:
        self.epochs, self.label, self.t0 = epochs, label, time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, epoch: int, loss: float, acc: float) -> None:
        el = time.monotonic() - self.t0
        eta = el / (epoch + 1) * (self.epochs - epoch - 1)
        bar_n = 20 * (epoch + 1) // self.epochs
        line = (f"{self.label} [{'#' * bar_n}{'.' * (20 - bar_n)}] epoch {epoch + 1:3d}/{self.epochs} "
                f"loss {loss:6.3f} acc {acc:5.3f} {el:5.0f}s eta {eta:4.0f}s")
        end = "\n" if (not self.tty or epoch + 1 == self.epochs) else "\r"
        print(line, end=end, file=sys.stderr, flush=True)


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads (both cores of the training machine)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass


def train_embedding(
    x: np.ndarray,
    person: np.ndarray,
    cfg: TrainConfig,
    capped: np.ndarray | None = None,
    label: str = "train",
    session: np.ndarray | None = None,
    views=None,
    checkpoint: str | None = None,
) -> tuple[keras.Model, dict]:
    """Train the embedding network with an ArcFace head.

    Parameters
    ----------
    x : ndarray (n, window_len) float32
        Normalised beat windows (``edge.preprocess.normalise_beats``).
    person : ndarray (n,)
        Identity of each beat (any integers).
    cfg : TrainConfig
    capped : ndarray (n,) bool, optional
        Beats of identities to subsample to ``cfg.mitdb_cap`` per identity and
        epoch (MIT-BIH's long records).
    label : str
        Prefix of the progress line.
    session : ndarray (n,), optional
        Recording (session) of each beat, for ``cfg.record_pairs``.
    views : callable, optional
        ``views(idx, rng) -> (len(idx), window_len) float32`` normalised
        windows of the beats ``idx`` as the network should see them this time
        (another lead, a mixed frontal lead: :mod:`train.views`). None: ``x``.
    checkpoint : str, optional
        Folder for a checkpoint after every epoch (model, head, optimizer,
        random state); a run given the folder of a stopped run resumes after
        its last finished epoch.

    Returns
    -------
    model : keras.Model
        The embedding network (float).
    history : dict
        Loss and training accuracy per epoch, seconds.
    """
    set_threads(cfg.threads)
    keras.utils.set_random_seed(cfg.seed)
    rng_np = np.random.default_rng(cfg.seed)
    ids, y = np.unique(person, return_inverse=True)
    y = y.astype(np.int32)
    capped = np.zeros(len(y), bool) if capped is None else capped
    free_idx = np.flatnonzero(~capped)
    cap_groups = [np.flatnonzero(capped & (y == c)) for c in np.unique(y[capped])]
    model = build_embedding(x.shape[1], cfg)
    head = ArcFace(len(ids), cfg.margin, cfg.scale, cfg.subcenters)
    head.build((None, cfg.embedding_dim))
    n_epoch = free_idx.size + sum(min(cfg.mitdb_cap, g.size) for g in cap_groups)
    steps = max(1, n_epoch // cfg.batch_size)
    total = steps * cfg.epochs
    warm = min(2 * steps, total // 4)
    sched = keras.optimizers.schedules.CosineDecay(
        cfg.lr / 10, max(1, total - warm), alpha=0.01, warmup_target=cfg.lr, warmup_steps=warm
    )
    opt = keras.optimizers.AdamW(sched, weight_decay=cfg.weight_decay)
    rng = tf.random.Generator.from_seed(cfg.seed)
    variables = model.trainable_variables + head.trainable_variables
    aug = {k: float(v) for k, v in cfg.aug.items()}
    aug["shift"] = int(aug["shift"])

    lam = float(cfg.record_pairs)
    if lam > 0 and session is None:
        raise ValueError("record_pairs needs the session of each beat")
    sess_np = np.zeros(len(y), np.int64) if session is None else np.asarray(session, np.int64)

    n_sampled = int(cfg.sampled_classes)
    if n_sampled and cfg.subcenters != 1:
        raise ValueError("sampled_classes needs subcenters=1")
    sampling = 0 < n_sampled < len(ids)

    def sample_classes(yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The batch's classes plus random others, ``n_sampled`` in all; labels into them."""
        own = np.unique(yb)
        extra = rng_np.choice(len(ids), min(len(ids), n_sampled + own.size), replace=False)
        extra = extra[~np.isin(extra, own)][: max(0, n_sampled - own.size)]
        cls = np.sort(np.concatenate([own, extra])).astype(np.int32)
        return cls, np.searchsorted(cls, yb).astype(np.int32)

    @tf.function(reduce_retracing=True)
    def step(xb, yb, sb, cls):
        xa = augment(xb, rng, aug)
        with tf.GradientTape() as tape:
            emb = model(xa, training=True)
            logits = head(emb, yb, cls if sampling else None)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
            )
            if lam > 0:
                loss = loss + lam * cross_session_loss(emb, yb, sb)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables, strict=True))
        acc = tf.reduce_mean(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == yb, tf.float32))
        return loss, acc

    progress = _Progress(cfg.epochs, label)
    hist: dict[str, list[float]] = {"loss": [], "acc": []}
    t0 = time.monotonic()
    xt = tf.constant(x) if views is None else None
    yt = tf.constant(y)
    st = tf.constant(sess_np)
    first = 0
    ckpt = mgr = None
    if checkpoint is not None:
        import json
        from pathlib import Path

        # Build the optimizer's slots before restoring into them.
        opt.build(variables)
        ckpt = tf.train.Checkpoint(model=model, head=head, opt=opt, rng=rng)
        mgr = tf.train.CheckpointManager(ckpt, checkpoint, max_to_keep=1)
        meta = Path(checkpoint) / "progress.json"
        if mgr.latest_checkpoint and meta.is_file():
            ckpt.restore(mgr.latest_checkpoint).expect_partial()
            m = json.loads(meta.read_text())
            first = int(m["epochs_done"])
            hist = m["history"]
            rng_np.bit_generator.state = m["rng_np"]
            log.info("%s: resumed from %s after epoch %d", label, mgr.latest_checkpoint, first)
    for ep in range(first, cfg.epochs):
        if cfg.margin_warmup > 0:
            head.m.assign(float(cfg.margin) * min(1.0, ep / cfg.margin_warmup))
        if lam > 0:
            batches = pk_batches(rng_np, y, sess_np, steps, persons=cfg.batch_size // 8)
        else:
            parts = [free_idx] + [rng_np.choice(g, min(cfg.mitdb_cap, g.size), replace=False) for g in cap_groups]
            order = rng_np.permutation(np.concatenate(parts))
            batches = [order[b * cfg.batch_size:(b + 1) * cfg.batch_size] for b in range(steps)]
        ls, acs = [], []
        for bsel in batches:
            sel = tf.constant(bsel)
            xb = tf.gather(xt, sel) if views is None else tf.constant(views(bsel, rng_np))
            if sampling:
                cls, yl = sample_classes(y[bsel])
                loss, acc = step(xb, tf.constant(yl), tf.gather(st, sel), tf.constant(cls))
            else:
                loss, acc = step(xb, tf.gather(yt, sel), tf.gather(st, sel), tf.zeros(0, tf.int32))
            ls.append(float(loss))
            acs.append(float(acc))
        hist["loss"].append(float(np.mean(ls)))
        hist["acc"].append(float(np.mean(acs)))
        progress(ep, hist["loss"][-1], hist["acc"][-1])
        if mgr is not None:
            import json
            from pathlib import Path

            mgr.save(checkpoint_number=ep + 1)
            (Path(checkpoint) / "progress.json").write_text(json.dumps(
                {"epochs_done": ep + 1, "history": hist, "rng_np": rng_np.bit_generator.state}))
    return model, {"history": hist, "seconds": time.monotonic() - t0, "n_identities": int(len(ids)),
                   "beats_per_epoch": int(steps * cfg.batch_size), "params": int(model.count_params())}


def embed_float(model: keras.Model, windows_normalised: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Float (Keras) embeddings of normalised windows, unit rows."""
    out = model.predict(windows_normalised, batch_size=batch, verbose=0).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)
