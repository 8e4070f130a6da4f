"""The pictures of ``ecgstream plot``: matplotlib (the ``plot`` extra), Agg backend, PNG files.

Imported only by ``ecgstream plot`` (never by the daemon or the DSP). The
data come from :mod:`ecgstream.cli.plot_trace`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["draw_enrol", "draw_run"]

AUTH_COLOURS = {"unknown": "#9e9e9e", "authenticated": "#2e7d32", "rejected": "#c62828"}
GOOD = "#2e7d32"
FLAG_COLOURS = {  # the first of a beat's flags, in this order, picks its marker colour
    "edge": "#7b1fa2", "invalid": "#000000", "clipped": "#6d4c41", "rr": "#1565c0",
    "morphology": "#d84315", "amplitude": "#f9a825", "warmup": "#90a4ae",
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("ecgstream plot needs matplotlib: pip install 'ecgstream[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> None:
    """PNG with a 256-colour palette (Pillow comes with matplotlib): a third of the size, same look."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def _first_flag(flags: frozenset[str]) -> str:
    return next(f for f in FLAG_COLOURS if f in flags) if flags & FLAG_COLOURS.keys() else sorted(flags)[0]


def _signal_panel(ax: Any, t: np.ndarray, y: np.ndarray, beats: list, title: str,
                  matched: frozenset[int] = frozenset()) -> None:
    """The conditioned signal; above each R a marker: good beats green, flagged ones by their first flag.

    ``matched``: R samples of flagged beats that were matched all the same
    (warm-up beats, ``[decision] match_warmup_beats``); the legend says so.
    """
    ax.plot(t, y, lw=0.6, color="#37474f")
    pad = 0.5
    if y.size:
        lo, hi = np.percentile(y, [0.5, 99.5])
        pad = 0.12 * (hi - lo) or 0.5
        ax.set_ylim(lo - pad, hi + 3 * pad)
    fs = 1.0 / (t[1] - t[0]) if t.size > 1 else 250.0

    def above(tt: np.ndarray) -> np.ndarray:  # just above the highest sample within 60 ms of R
        if not t.size:
            return np.zeros_like(tt)
        i = np.clip(np.searchsorted(t, tt), 0, t.size - 1)
        k = max(1, round(0.06 * fs))
        return np.array([y[max(0, j - k):j + k + 1].max() for j in i]) + 0.6 * pad

    good = np.array([b.r_time_s for b in beats if b.good])
    if good.size:
        ax.plot(good, above(good), "v", color=GOOD, ms=5, label=f"good ({good.size})")
    by: dict[str, list] = {}
    for b in beats:
        if not b.good:
            by.setdefault(_first_flag(b.flags), []).append(b)
    for f, bs in by.items():
        tt = np.array([b.r_time_s for b in bs])
        n_m = sum(b.r_sample in matched for b in bs)
        label = f"{f} ({tt.size}{', matched' if n_m == tt.size else f', {n_m} matched' if n_m else ''})"
        ax.plot(tt, above(tt), "x", color=FLAG_COLOURS.get(f, "#e53935"), ms=7, mew=1.8, label=label)
    ax.set_ylabel("conditioned (mV)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="upper right", fontsize=7, ncol=min(6, 1 + len(by)), framealpha=0.9)
    ax.grid(alpha=0.25)


def _norm(w: np.ndarray) -> np.ndarray:
    from edge.preprocess import normalise_beats

    return normalise_beats(np.atleast_2d(w))


def _window_t(n: int, fs: float, before_s: float) -> np.ndarray:
    return (np.arange(n) / fs - before_s) * 1000.0


def draw_run(tr: Any, out: Path, template_windows: list[np.ndarray] | None, source: str, dsp: Any,
             who: str | None = None) -> dict:
    """The run picture: signal and beats, beats on the template, scores, states. Returns a summary."""
    from .plot_trace import conditioned

    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Patch

    t, y = conditioned(tr.chunks, dsp)
    fig = plt.figure(figsize=(12, 10.5), dpi=80)
    gs = fig.add_gridspec(4, 2, height_ratios=[2.2, 2.2, 2.2, 1.1], width_ratios=[1.15, 1], hspace=0.45, wspace=0.3)
    ax_sig = fig.add_subplot(gs[0, :])
    ax_ov = fig.add_subplot(gs[1, 0])
    ax_hist = fig.add_subplot(gs[1, 1])
    ax_sc = fig.add_subplot(gs[2, :], sharex=ax_sig)
    ax_st = fig.add_subplot(gs[3, :], sharex=ax_sig)
    beats = [r.beat for r in tr.rows]
    _signal_panel(ax_sig, t, y, beats, f"{source}: conditioned signal (band-pass, {dsp.fs_hz:g} Hz) "
                  "and the beats the detector cut",
                  frozenset(r.beat.r_sample for r in tr.rows if r.matched and not r.beat.good))

    # beats on the template, as the model sees them (z-scored windows)
    matched = [r for r in tr.rows if r.matched and r.score is not None]
    wt = _window_t(dsp.window_len, dsp.fs_hz, dsp.window_before_s)
    cmap = plt.get_cmap("RdYlGn")
    # red below the 1-beat threshold, yellow at it, green above
    th1 = tr.single_threshold
    cn = TwoSlopeNorm(th1, min([th1 - 0.3, *(r.score for r in matched)]), max([th1 + 0.3, *(r.score for r in matched)]))
    for r in matched:
        ax_ov.plot(wt, _norm(r.beat.window)[0], lw=0.7, alpha=0.6, color=cmap(cn(r.score)))
    if template_windows:
        tw = _norm(np.stack(template_windows))
        mu, sd = tw.mean(axis=0), tw.std(axis=0)
        ax_ov.fill_between(wt, mu - sd, mu + sd, color="k", alpha=0.12, lw=0, label="enrolment beats, mean ± SD")
        ax_ov.plot(wt, mu, color="k", lw=2.2, label=f"enrolment beats, mean of {len(template_windows)}")
        ov_title = "beats of this run (coloured by score) on the enrolment beats"
    else:
        if matched:
            ax_ov.plot(wt, _norm(np.stack([r.beat.window for r in matched])).mean(axis=0), color="k", lw=2.2,
                       label="mean of this run's beats")
        ov_title = "beats of this run, coloured by score (the store keeps no waveform)"
    ax_ov.set_title(ov_title, fontsize=9, loc="left")
    ax_ov.set_xlabel("ms from R")
    ax_ov.set_ylabel("z-scored (model input)")
    ax_ov.grid(alpha=0.25)
    if ax_ov.get_legend_handles_labels()[0]:
        ax_ov.legend(fontsize=7, loc="lower right")
    sm = plt.cm.ScalarMappable(norm=cn, cmap=cmap)
    fig.colorbar(sm, ax=ax_ov, pad=0.01, fraction=0.05).set_label("beat score", fontsize=8)

    # scores against the single-beat threshold: a histogram
    sc = np.array([r.score for r in matched])
    if sc.size:
        ax_hist.hist(sc, bins=min(30, max(5, sc.size // 2)), color="#546e7a", alpha=0.85)
    ax_hist.axvline(tr.single_threshold, color="#c62828", ls=":", lw=1.5,
                    label=f"1-beat threshold {tr.single_threshold:.3f}")
    fused = [r.threshold for r in matched if r.threshold is not None]
    if fused:
        ax_hist.axvline(fused[-1], color="#c62828", ls="--", lw=1.5, label=f"fused threshold {fused[-1]:.3f} "
                        f"({matched[-1].beats_used} beats)")
    who = who or repr(tr.subject)
    ax_hist.set_title(f"beat scores vs {who} ({tr.operating_point})", fontsize=9, loc="left")
    ax_hist.set_xlabel("score")
    ax_hist.set_ylabel("beats")
    ax_hist.legend(fontsize=7)
    ax_hist.grid(alpha=0.25)

    # per-beat and fused scores over time, against the thresholds
    if matched:
        tm = np.array([r.beat.r_time_s for r in matched])
        ax_sc.scatter(tm, sc, s=16, c=[cmap(cn(v)) for v in sc], edgecolors="#37474f", linewidths=0.4,
                      label="beat score", zorder=3)
        fz = np.array([np.nan if r.fused is None else r.fused for r in matched])
        th = np.array([np.nan if r.threshold is None else r.threshold for r in matched])
        ax_sc.step(tm, fz, where="post", color="#1565c0", lw=1.8, label="fused score (rolling)")
        ax_sc.step(tm, th, where="post", color="#c62828", ls="--", lw=1.4, label="card threshold for the beats fused")
    ax_sc.axhline(tr.single_threshold, color="#c62828", ls=":", lw=1.0, label="1-beat threshold")
    ax_sc.set_ylabel("score")
    ax_sc.set_title(f"scores against the model card's thresholds ({tr.operating_point})", fontsize=9, loc="left")
    ax_sc.legend(fontsize=7, loc="lower right", ncol=4)
    ax_sc.grid(alpha=0.25)

    # states over time: auth above, liveness below
    t_end = max(tr.end_s, t[-1] if t.size else 0.0)
    spans = list(zip(tr.auth, [*tr.auth[1:], (t_end, None, None, None, "")], strict=True))
    for (t0, state, *_), (t1, *_) in spans:
        ax_st.axvspan(t0, t1, ymin=0.55, ymax=0.95, color=AUTH_COLOURS.get(state, "#9e9e9e"), lw=0)
    lv = tr.live
    for (t0, live, on, _), (t1, *_) in zip(lv, [*lv[1:], (t_end, None, None, None)], strict=True):
        colour = "#2e7d32" if live else ("#9e9e9e" if not on else "#ef6c00")
        ax_st.axvspan(t0, t1, ymin=0.05, ymax=0.45, color=colour, lw=0)
    ax_st.set_yticks([0.25, 0.75], ["liveness", "auth"])
    ax_st.set_ylim(0, 1)
    ax_st.set_xlabel("stream time (s)")
    ax_st.set_xlim(t[0] if t.size else 0, t_end)
    ax_st.legend(handles=[Patch(color=c, label=s) for s, c in AUTH_COLOURS.items()]
                 + [Patch(color="#2e7d32", label="live"), Patch(color="#ef6c00", label="not live / warming up"),
                    Patch(color="#9e9e9e", label="leads off")],
                 fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.55), ncol=6, frameon=False)
    last = tr.auth[-1]
    fig.subplots_adjust(top=0.91)
    fig.suptitle(f"ecgstream plot run — against {who}, {tr.operating_point}\nlast state {last[1]} "
                 f"({last[4] or 'no reason'}); model {tr.model_id}", fontsize=10, y=0.965)
    _save(fig, out)
    plt.close(fig)
    n_auth = sum(1 for r in tr.rows if r.state == "authenticated")
    return {"beats": len(tr.rows), "good": sum(r.beat.good for r in tr.rows), "matched": len(matched),
            "flags": tr.flags, "last_state": last[1], "beats_while_authenticated": n_auth,
            "score_median": float(np.median(sc)) if sc.size else None,
            "single_threshold": tr.single_threshold}


def draw_enrol(tr: Any, out: Path, source: str, dsp: Any) -> dict:
    """The enrolment report: beats kept and refused (why), the kept beats and their mean, the weights."""
    from .plot_trace import conditioned

    plt = _pyplot()
    t, y = conditioned(tr.chunks, dsp)
    fig = plt.figure(figsize=(12, 9), dpi=80)
    gs = fig.add_gridspec(3, 2, height_ratios=[2.2, 2.4, 2.0], hspace=0.5, wspace=0.2)
    ax_sig = fig.add_subplot(gs[0, :])
    ax_kept = fig.add_subplot(gs[1, 0])
    ax_ref = fig.add_subplot(gs[1, 1], sharey=ax_kept)
    ax_why = fig.add_subplot(gs[2, 0])
    ax_w = fig.add_subplot(gs[2, 1])
    _signal_panel(ax_sig, t, y, tr.beats, f"{source}: the beats enrolment saw (kept: good; refused: by flag)")
    if t.size:
        ax_sig.set_xlim(t[0], max(t[-1], tr.seconds))
    ax_sig.set_xlabel("stream time (s)")
    wt = _window_t(dsp.window_len, dsp.fs_hz, dsp.window_before_s)
    kept = [b for b in tr.beats if b.good]
    refused = [b for b in tr.beats if not b.good]
    if kept:
        kw = _norm(np.stack([b.window for b in kept]))
        for w in kw:
            ax_kept.plot(wt, w, color=GOOD, lw=0.6, alpha=0.45)
        ax_kept.plot(wt, kw.mean(axis=0), color="k", lw=2.2, label="their mean")
        ax_kept.legend(fontsize=7, loc="lower right")
    ax_kept.set_title(f"kept: {len(kept)} good beats (the template is the weighted mean of their embeddings)",
                      fontsize=9, loc="left")
    for b in refused:
        ax_ref.plot(wt, _norm(b.window)[0], color=FLAG_COLOURS.get(_first_flag(b.flags), "#e53935"), lw=0.8,
                    alpha=0.7)
    ax_ref.set_title(f"refused: {len(refused)} beats, coloured by their first flag", fontsize=9, loc="left")
    for ax in (ax_kept, ax_ref):
        ax.set_xlabel("ms from R")
        ax.grid(alpha=0.25)
    ax_kept.set_ylabel("z-scored (model input)")
    why: dict[str, int] = {}
    for b in refused:
        for f in b.flags:
            why[f] = why.get(f, 0) + 1
    if why:
        names = sorted(why, key=lambda k: -why[k])
        ax_why.barh(names, [why[k] for k in names], height=0.5,
                    color=[FLAG_COLOURS.get(k, "#e53935") for k in names])
        ax_why.set_ylim(len(names) - 0.5 + 0.5 * (len(names) < 3), -0.5 - 0.5 * (len(names) < 3))
    else:
        ax_why.text(0.5, 0.5, "no beat refused", ha="center", va="center", transform=ax_why.transAxes)
    ax_why.set_title("why beats were refused (a beat may carry several flags)", fontsize=9, loc="left")
    ax_why.set_xlabel("beats")
    ax_why.grid(alpha=0.25, axis="x")
    if tr.scores.size:
        idx = np.arange(tr.scores.size)
        ax_w.bar(idx, tr.scores, color=GOOD, alpha=0.8)
        ax_w2 = ax_w.twinx()
        ax_w2.plot(idx, tr.weights, "o-", color="#1565c0", ms=3, lw=1)
        ax_w2.set_ylabel("weight in the centroid", color="#1565c0", fontsize=8)
        ax_w2.set_ylim(0, 1.05 * max(1.0, float(tr.weights.max())))
        ax_w.set_ylim(min(0.0, float(tr.scores.min()) - 0.05), 1.0)
    ax_w.set_ylabel("cosine with the centroid", color=GOOD, fontsize=8)
    ax_w.set_title("each kept beat: cosine with the sitting's centroid (bars), its weight (blue)",
                   fontsize=9, loc="left")
    ax_w.set_xlabel("kept beat (in order)")
    from matplotlib.ticker import MaxNLocator

    ax_w.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_w.grid(alpha=0.25)
    if tr.result is not None:
        r = tr.result
        head = (f"enrolment OK: {r.n_beats} good beats of {r.n_beats_seen} in {r.seconds:.1f} s; beat score mean "
                f"{r.quality['score_mean']:.3f}, p10 {r.quality['score_p10']:.3f}, min {r.quality['score_min']:.3f}")
    else:
        head = f"enrolment FAILED: {tr.error}"
    fig.subplots_adjust(top=0.91)
    fig.suptitle(f"ecgstream plot enroll — {source}\n{head}", fontsize=10, y=0.975,
                 color="k" if tr.result is not None else "#c62828")
    _save(fig, out)
    plt.close(fig)
    return {"beats": len(tr.beats), "kept": len(kept), "refused": len(refused), "why": why,
            "ok": tr.result is not None, "error": tr.error}
