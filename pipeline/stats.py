"""The ablation report's statistics: pure functions of numbers (numpy/scipy), no MLflow.

- `t_interval`: mean and 95% t-interval of a sample.
- `paired_contrast` / `one_sample_contrast` / `interaction_contrast`: a mean difference with its 95%
  t-interval and a two-sided t-test (scipy.stats.ttest_rel / ttest_1samp semantics).
- `holm`: Holm's step-down adjustment of a family of p-values.
- `tost_paired`: equivalence within ±margin, two one-sided t-tests (TOST) on paired differences.
- `probability_of_improvement`: P(a better than b) over paired units, with a bootstrap interval over seeds.
- `paired_t_power`, `min_detectable_difference`, `pairs_needed`, `seeds_needed`: exact power of the
  two-sided paired t-test (noncentral t).
- `seed_values`: the seed as the unit: one value per seed, the mean of its pairs.
- `holm_intervals`: intervals beside Holm verdicts, at the level Holm's step-down tested each contrast at,
  so that "the interval excludes 0" and "significant after Holm" always agree.
- `replication_interval`, `heterogeneity`: a second batch of seeds against the first (prediction interval
  for its mean; Welch's t-test of batch × contrast).
- `drift_tost`: has a contrast stopped moving over the end of training (per-seed drift, TOST in ±margin/2),
  and `tost_power`: the power that test had to call a drift of zero settled.
- `rank_per_budget`, `kendall_tau`: which cell is ahead at each training budget (a picture only: no verdict
  rests on it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


def t_interval(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t-interval, n); the half-width is nan below two values."""
    v = np.asarray(list(values), dtype=np.float64)
    n = len(v)
    if n < 2:
        return (float(v.mean()) if n else math.nan), math.nan, n
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)), n


@dataclass(frozen=True)
class Contrast:
    """A mean difference over n units: 95% t-interval, two-sided t-test p, SD of the differences."""
    mean: float
    half_width: float
    n: int
    p: float
    sd: float

    @property
    def ci95(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width


def _all_equal(d: np.ndarray) -> bool:
    # "identical" up to float rounding: 10.000000000000002 and 10.0 would otherwise give p ~ 0
    return float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.abs(d).max()))


def one_sample_contrast(diffs: Sequence[float]) -> Contrast:
    """Mean of `diffs`, its 95% t-interval, and the p-value of a two-sided one-sample t-test of
    mean 0 (scipy.stats.ttest_1samp). p is nan when n < 2 or all differences are identical, where
    the t statistic is undefined (0/0) or infinite."""
    d = np.asarray(diffs, dtype=np.float64)
    mean, half_width, n = t_interval(d)
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    p = math.nan if n < 2 or _all_equal(d) else float(stats.ttest_1samp(d, 0.0).pvalue)
    return Contrast(mean, half_width, n, p, sd)


def paired_contrast(a: Sequence[float], b: Sequence[float]) -> Contrast:
    """a - b over pairs (a[i], b[i]): mean difference, 95% interval, n pairs and the two-sided
    paired t-test p-value (scipy.stats.ttest_rel; nan when n < 2 or all differences identical)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    return one_sample_contrast(a - b)


def interaction_contrast(a_h: Sequence[float], b_h: Sequence[float],
                         a_c: Sequence[float], b_c: Sequence[float]) -> Contrast:
    """The difference of differences (a_h - b_h) - (a_c - b_c) per unit (e.g. per seed): how much
    the a - b effect changes between levels h and c of another axis. 0 means no interaction.
    Mean, 95% interval and a one-sample t-test against 0."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (a_h, b_h, a_c, b_c)]
    if len({x.shape for x in arrays}) != 1:
        raise ValueError("interaction arrays differ in length")
    a_h, b_h, a_c, b_c = arrays
    return one_sample_contrast((a_h - b_h) - (a_c - b_c))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. With the m non-nan p-values sorted
    ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)). nan stays nan and does
    not count in m. Rejecting where the adjusted p < alpha controls the family-wise error at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return [float(x) for x in out]


@dataclass(frozen=True)
class Equivalence:
    """TOST of a mean difference against ±margin: p_lower tests H0 mean <= -margin, p_upper tests
    H0 mean >= +margin; p = max of the two (equivalence is shown when both are rejected)."""
    margin: float
    p_lower: float
    p_upper: float

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper) if not math.isnan(self.p_lower + self.p_upper) else math.nan


def tost_paired(diffs: Sequence[float], margin: float) -> Equivalence:
    """Two one-sided t-tests (Schuirmann's TOST) that the mean of `diffs` lies within (-margin, +margin):
    scipy.stats.ttest_1samp(diffs, -margin, alternative="greater") and (diffs, +margin, alternative="less").
    Rejecting both at alpha is the same as the (1 - 2 alpha) t-interval lying inside ±margin. nan when
    n < 2, margin <= 0, or the differences do not vary (the t statistics are undefined)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2 or not margin > 0 or _all_equal(d):
        return Equivalence(float(margin), math.nan, math.nan)
    return Equivalence(float(margin), float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue),
                       float(stats.ttest_1samp(d, margin, alternative="less").pvalue))


def tost_power(margin: float, sd: float, n: int, true_diff: float = 0.0, alpha: float = ALPHA) -> float:
    """Power of `tost_paired` with n paired differences of standard deviation sd when their true mean is
    true_diff (default 0): P(both one-sided tests reject), exact (Owen's Q) by integrating over the
    sample SD: given s, both reject iff |mean − true_diff| bounds hold, the mean being normal and
    (n − 1)s²/sd² chi-square. nan when n < 2 or sd is not a positive finite number."""
    if n < 2 or not (math.isfinite(sd) and sd > 0) or not margin > 0:
        return math.nan
    df = n - 1
    se = sd / math.sqrt(n)
    t_crit = float(stats.t.ppf(1 - alpha, df))

    def given_s(s_ratio: float) -> float:  # s_ratio = s / sd; reject iff mean in (−m + t·s/√n, m − t·s/√n)
        half = margin - t_crit * s_ratio * se
        if half <= 0:
            return 0.0
        return float(stats.norm.cdf((half - true_diff) / se) - stats.norm.cdf((-half - true_diff) / se))

    # s_ratio² · df ~ chi2(df): integrate over its density (the integrand is 0 beyond s_ratio = margin / (t·se))
    top = margin / (t_crit * se)
    from scipy import integrate
    value, _ = integrate.quad(lambda r: given_s(r) * stats.chi2.pdf(r * r * df, df) * 2 * r * df, 0.0, top,
                              limit=200)
    return float(min(1.0, max(0.0, value)))


@dataclass(frozen=True)
class Improvement:
    """P(a better than b) over paired units and its 95% percentile bootstrap interval."""
    p: float
    lo: float
    hi: float
    n: int


def probability_of_improvement(a: Sequence[float], b: Sequence[float], lower_is_better: bool,
                               clusters: Sequence | None = None, n_boot: int = 2000,
                               seed: int = 0) -> Improvement:
    """The share of pairs (a[i], b[i]) in which a is better than b (a tie counts one half), as rliable's
    probability of improvement but over paired runs (the same seed and the same other axes), so it needs
    no t-test's normality. Its 95% interval is a percentile bootstrap that resamples whole `clusters`
    (e.g. the seed of each pair: a seed's pairs share its data order and start) with replacement,
    `n_boot` times from a fixed `seed`, so the report is reproducible. nan below two clusters."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    diff = (b - a) if lower_is_better else (a - b)
    wins = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
    if len(wins) == 0:
        return Improvement(math.nan, math.nan, math.nan, 0)
    groups = np.asarray(clusters if clusters is not None else np.arange(len(wins)))
    keys, index = np.unique(groups, return_inverse=True)
    point = float(wins.mean())
    if len(keys) < 2:
        return Improvement(point, math.nan, math.nan, len(wins))
    win_sum = np.bincount(index, weights=wins, minlength=len(keys))
    size = np.bincount(index, minlength=len(keys)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(keys), size=(n_boot, len(keys)))
    boot = win_sum[draws].sum(1) / size[draws].sum(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return Improvement(point, float(lo), float(hi), len(wins))


def paired_t_power(effect_size: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test with n pairs when the true mean difference
    is effect_size standard deviations of the differences: P(|T| > t_crit) with T noncentral t
    (df n - 1, noncentrality effect_size * sqrt(n))."""
    if n < 2 or math.isnan(effect_size):
        return math.nan
    df = n - 1
    nc = abs(effect_size) * math.sqrt(n)
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    upper = float(stats.nct.sf(t_crit, df, nc))
    lower = float(stats.nct.cdf(-t_crit, df, nc))
    if not math.isfinite(lower):  # scipy's nct gives nan deep in the far tail, where it is ~0
        lower = 0.0
    return min(1.0, upper + lower)


def min_detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true mean difference that a two-sided paired t-test with n pairs detects with
    the given power, when the differences have standard deviation sd (exact, noncentral t, solved
    with brentq). nan when n < 2 or sd is nan or 0 (the t-test is undefined without variation)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    hi = 1.0
    while paired_t_power(hi, n, alpha) < power:
        hi *= 2
    effect_size = optimize.brentq(lambda es: paired_t_power(es, n, alpha) - power, 0.0, hi, xtol=1e-10)
    return effect_size * sd


def pairs_needed(diff: float, sd: float, power: float = POWER, alpha: float = ALPHA,
                 max_pairs: int = 10**9) -> float:
    """The smallest number of pairs (>= 2) for which a two-sided paired t-test detects a true mean
    difference `diff` with the given power, when the differences have standard deviation sd.
    inf when diff is 0 (no number of pairs suffices) or more than max_pairs are needed; nan when
    diff or sd is nan, or sd is 0 (the t-test is undefined without variation)."""
    if not (math.isfinite(diff) and math.isfinite(sd)) or sd <= 0:
        return math.nan
    if diff == 0:
        return math.inf
    effect_size = abs(diff) / sd
    lo, hi = 1, 2  # power(lo) < target (or lo = 1, which cannot test), power(hi) >= target
    while paired_t_power(effect_size, hi, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > max_pairs:
            return math.inf
    while hi - lo > 1:  # power grows with n: bisect on the integers
        mid = (lo + hi) // 2
        if paired_t_power(effect_size, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return float(hi)


def seeds_needed(diff: float, sd: float, pairs_per_seed: int, power: float = POWER,
                 alpha: float = ALPHA) -> float:
    """Seeds per cell for `pairs_needed` pairs, when each seed contributes pairs_per_seed pairs
    (ceil). inf and nan as in pairs_needed."""
    pairs = pairs_needed(diff, sd, power, alpha)
    if not math.isfinite(pairs):
        return pairs
    return float(math.ceil(pairs / pairs_per_seed))


def rank_per_budget(curves: Mapping[str, Iterable[Mapping[int, float]]], lower_is_better: bool = True
                    ) -> tuple[dict[int, dict[str, float]], dict[int, list[str]]]:
    """From per-run curves {step: value} grouped by cell: (means, ranking) where means[step][cell] is
    the mean over the cell's runs that have that step, and ranking[step] lists those cells best first
    (ties broken by cell name, so the result is deterministic)."""
    values: dict[int, dict[str, list[float]]] = {}
    for cell, runs in curves.items():
        for curve in runs:
            for step, value in curve.items():
                values.setdefault(int(step), {}).setdefault(cell, []).append(float(value))
    means = {step: {cell: float(np.mean(v)) for cell, v in sorted(by_cell.items())}
             for step, by_cell in sorted(values.items())}
    sign = 1.0 if lower_is_better else -1.0
    ranking = {step: sorted(m, key=lambda c: (sign * m[c], c)) for step, m in means.items()}
    return means, ranking


def kendall_tau(order_a: Sequence[str], order_b: Sequence[str]) -> float:
    """Kendall's tau between two rankings (lists best first) over the items they share: 1 is the same
    order, -1 the reverse. nan below two shared items."""
    shared = [x for x in order_a if x in set(order_b)]
    if len(shared) < 2:
        return math.nan
    pos_b = {x: i for i, x in enumerate(order_b)}
    return float(stats.kendalltau(range(len(shared)), [pos_b[x] for x in shared]).statistic)


# ---------------------------------------------------------------- the seed as the unit


def seed_values(diffs: Sequence[float], seeds: Sequence) -> tuple[list, np.ndarray]:
    """(seeds, values): one value per seed (sorted), the mean of that seed's differences. The pairs of
    one seed share its data order, initialisation and sampling noise, so they are not independent: a
    t-test over them counts one seed several times (df too large, p too small). Over these values it has
    n = seeds and df = seeds - 1. A seed missing some pairs is the mean of those it has."""
    d = np.asarray(diffs, dtype=np.float64)
    keys = list(seeds)
    if len(keys) != len(d):
        raise ValueError(f"{len(d)} differences but {len(keys)} seeds")
    order = sorted(set(keys))
    return order, np.array([d[[k == s for k in keys]].mean() for s in order], dtype=np.float64)


# ---------------------------------------------------------------- Holm-consistent intervals


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    level: float  # the two-sided alpha of the t-interval (its confidence is 1 - level)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)


def t_interval_at(c: Contrast, alpha: float) -> Interval:
    """The (1 - alpha) t-interval of a Contrast (n - 1 df); nan below two units or without variation."""
    if c.n < 2 or not math.isfinite(c.sd) or not math.isfinite(alpha):
        return Interval(math.nan, math.nan, alpha)
    hw = float(stats.t.ppf(1 - alpha / 2, c.n - 1) * c.sd / math.sqrt(c.n))
    return Interval(c.mean - hw, c.mean + hw, alpha)


def holm_intervals(contrasts: Sequence[Contrast], alpha: float = ALPHA) -> list[Interval]:
    """Intervals to print beside Holm verdicts, in the input order. Holm's step-down sorts the m p-values
    ascending and tests the i-th (1-based) at alpha / (m - i + 1), stopping at the first it cannot reject.
    A rejected contrast gets the t-interval at the level it was rejected at, alpha / (m - i + 1); every
    contrast from the stop on gets the interval at the level of the step that stopped, alpha / (m - r + 1)
    (r the first unrejected rank): its p is at least that step's, so its interval contains 0. Hence
    "the interval excludes 0" <=> "significant after Holm" (the t-interval and the t-test are dual), which
    the unadjusted 95% intervals do not give. These are the levels of the step-down itself (compatible with
    Holm in the sense of Strassburger & Bretz 2008 for the unrejected contrasts, whose intervals hold
    simultaneously at 1 - alpha); a rejected contrast's interval is its step's, narrower than the
    Bonferroni alpha/m interval that would hold simultaneously for all (`t_interval_at(c, alpha / m)`).
    nan p-values (fewer than two units, no variation) are outside the family, as in `holm`, and get nan."""
    m = sum(not math.isnan(c.p) for c in contrasts)
    out: list[Interval] = [Interval(math.nan, math.nan, math.nan)] * len(contrasts)
    order = sorted((i for i, c in enumerate(contrasts) if not math.isnan(c.p)), key=lambda i: contrasts[i].p)
    stopped: float | None = None
    for rank, i in enumerate(order):  # rank 0-based: level alpha / (m - rank)
        level = alpha / (m - rank)
        if stopped is None and contrasts[i].p >= level:
            stopped = level
        out[i] = t_interval_at(contrasts[i], stopped if stopped is not None else level)
    return out


# ---------------------------------------------------------------- batches and replication


def replication_interval(primary: Sequence[float], n_new: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The (1 - alpha) prediction interval for the mean of n_new new per-seed values, from the primary's
    per-seed values: mean ± t(1 - alpha/2, n - 1) · sd · sqrt(1/n + 1/n_new) (Spence & Stanley 2016: where
    a replication's estimate should fall when the two differ only by seed-to-seed noise). A replication
    whose estimate is inside agrees with the primary, whatever its own verdict (an underpowered one is
    inconclusive by construction). nan below two primary values or n_new < 1."""
    v = np.asarray(primary, dtype=np.float64)
    if len(v) < 2 or n_new < 1:
        return math.nan, math.nan
    hw = float(stats.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) * math.sqrt(1 / len(v) + 1 / n_new))
    return float(v.mean()) - hw, float(v.mean()) + hw


def heterogeneity(first: Sequence[float], second: Sequence[float]) -> float:
    """Batch × contrast: Welch's two-sample t-test (scipy.stats.ttest_ind, equal_var=False) of the per-seed
    contrast values of two batches; a small p says the contrast differs between the batches, so they
    must not be pooled. nan below two values in either batch or without variation."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if len(a) < 2 or len(b) < 2 or (_all_equal(a) and _all_equal(b)):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


# ---------------------------------------------------------------- has the contrast stopped moving?

DRIFT_SHARE = 0.5  # the window: the last half of the training budget
DRIFT_MIN_POINTS = 3


@dataclass(frozen=True)
class Drift:
    """How much a contrast moved over the end of training, per seed, and the TOST of that drift
    against ±margin/2. `settled` is True (the drift is shown within ±margin/2), False (not shown:
    still moving, or too noisy to tell) or None (not measured: too few checkpoints or seeds).
    `power` is the chance this TOST had to call a contrast with no drift at all settled, at the
    seeds' observed drift SD: a False from a test with power below POWER says nothing (`status`)."""
    n_seeds: int
    steps: tuple[int, ...]  # the checkpoints in the window
    drift: Contrast | None  # per-seed drift (slope × window length), its mean and interval
    equivalence: Equivalence | None
    reason: str = ""

    @property
    def settled(self) -> bool | None:
        if self.equivalence is None or math.isnan(self.equivalence.p):
            return None
        return self.equivalence.p < ALPHA

    @property
    def power(self) -> float:
        """P(settled | true drift 0) at the observed per-seed drift SD (tost_power); nan unmeasured."""
        if self.equivalence is None or self.drift is None:
            return math.nan
        return tost_power(self.equivalence.margin, self.drift.sd, self.drift.n)

    @property
    def status(self) -> str | None:
        """"settled", "still moving" (not shown within the bound by a test with power >= POWER), "not
        testable at this noise" (not shown, and even a drift of zero would have passed with power
        < POWER), or None (not measured)."""
        if self.settled is None:
            return None
        if self.settled:
            return "settled"
        return "still moving" if self.power >= POWER else "not testable at this noise"


def drift_tost(per_seed: Mapping[object, Mapping[int, float]], budget: int, margin: float,
               share: float = DRIFT_SHARE, min_points: int = DRIFT_MIN_POINTS) -> Drift:
    """Whether a contrast had settled when training stopped. `per_seed[seed][step]` is the seed's contrast
    value (a − b, the mean of its pairs) from full-size metric evaluations at checkpoint `step`. Window:
    the checkpoints at or after (1 - share) · budget that every seed has; with at least `min_points` of
    them, each seed's drift is its least-squares slope × the window's length (last step − first), and
    the drifts are tested by TOST against ±margin/2 (`tost_paired`): equivalence = settled. A contrast
    that is still shrinking or growing fails (its drift is outside ±margin/2), and so does one whose
    drift is too noisy to bound. Fewer points: not measured; one seed: its drift, untested (settled None)."""
    seeds = sorted(per_seed, key=str)
    start = (1 - share) * budget
    common = set.intersection(*[{int(s) for s in per_seed[k] if int(s) >= start} for k in seeds]) if seeds else set()
    steps = tuple(sorted(common))
    if len(steps) < min_points:
        return Drift(len(seeds), steps, None, None,
                     f"fewer than {min_points} full-size checkpoint evaluations in the last {share:.0%} of the budget")
    x = np.array(steps, dtype=np.float64)
    length = x[-1] - x[0]
    drifts = [float(np.polyfit(x, [per_seed[k][s] for s in steps], 1)[0]) * length for k in seeds]
    if len(seeds) < 2:  # the drift is measured, its test is not
        return Drift(len(seeds), steps, one_sample_contrast(drifts), None, "fewer than two seeds")
    return Drift(len(seeds), steps, one_sample_contrast(drifts), tost_paired(drifts, margin / 2))
