"""The configuration of a training run, written as JSON beside its checkpoints."""

import dataclasses
import difflib
import json
import math
import numbers
import os
import pathlib
import typing


@dataclasses.dataclass(frozen=True)
class Variant:
    """What a model variant (`--model`) is, read wherever it matters.

    Attributes:
      name: the `--model` name.
      y_likelihood: Y's likelihood: "spherical" (one global scale),
        "diagonal" (a per-pixel scale head) or "structured" (the sparse
        precision factor `L(z)`, eq. 9).
      covariance_trunk: the covariance heads sit on a decoder trunk of
        their own (SUPN), not on the mean's.
      beta: the default weight of the KL term.
      phases: the schedule's phases (`svae.training.schedule`), in order;
        "pretrain" is `vae_sph`, "warmup" trains only the structured
        branch, the last phase runs to the end.
    """

    name: str
    y_likelihood: str
    covariance_trunk: bool = False
    beta: float = 1.0
    phases: tuple = ("train",)

    @property
    def structured(self) -> bool:
        """Whether Y has the sparse-precision likelihood."""
        return self.y_likelihood == "structured"


VARIANTS = {
    v.name: v
    for v in (
        Variant("vae_sph", "spherical"),
        Variant("vae_diag", "diagonal"),
        Variant("beta_vae_diag", "diagonal", beta=5.0),
        Variant(
            "supn",
            "structured",
            covariance_trunk=True,
            phases=("pretrain", "covariance"),
        ),
        Variant("structured", "structured", phases=("pretrain", "warmup", "joint")),
    )
}
MODELS = tuple(VARIANTS)
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# The precision factor's parameterisation (svae.layers.PrecisionHead).
FACTORS = ("product", "bounded", "free")
# How the global scales sigma_Y, sigma_CbCr are set (svae.training).
SCALES = ("calibrated", "learned")
# Eq. 12's variance term (svae.likelihoods.variance_term).
VARIANCE_TERMS = ("empirical", "sampled")
# How SUPN's covariance trunk starts its phase (svae.training): "mean_trunk",
# a copy of the trained mean trunk; "random", its own initialisation.
COVARIANCE_INITS = ("mean_trunk", "random")
CONFIG_FILE = "config.json"
# Largest --seed of train.py: its per-epoch, per-input-pipeline seeds
# ((seed * 100_003 + epoch) * 1_000_003 + pipeline, svae.training and
# svae.data.training_pipeline) must fit in int64.
MAX_SEED = 2**26 - 1
# Largest seed of evaluation and sampling: stateless int32 seeds.
MAX_INT32 = 2**31 - 1

# Named sets of field values; train.py's --preset applies one beneath the
# flags given explicitly. "paper": the paper taken literally: the width that
# matches its FLOPs column, its free factor, Adam-learned scales, the
# empirical variance term and the heads' scales as they are (docs/training.md,
# "The likelihood").
PRESETS = {
    "paper": {
        "filters": 6,
        "factor": "free",
        "scales": "learned",
        "variance_term": "empirical",
        "contrast_scale": False,
    },
}

# Fields that only the structured likelihood (structured, supn) uses.
STRUCTURE_FIELDS = frozenset(
    {
        "kernel_size",
        "dilation",
        "num_basis",
        "factor",
        "dominance",
        "max_scale",
        "covariance_init",
        "gamma",
    }
)

# Values of fields added after runs were first written: a config.json without
# the field was trained this way (the paper's), whatever today's default is.
LEGACY_VALUES = {
    "factor": "free",
    "scales": "learned",
    "variance_term": "empirical",
    "max_scale": None,
    "covariance_init": "random",
    "contrast_scale": False,
}

# Fields that may change when a run is resumed: they do not change what the
# checkpoint holds or how its numbers are computed.
RESUMABLE_FIELDS = frozenset(
    {
        "data_dir",
        "cache_dir",
        "model_dir",
        "epochs",
        "steps",
        "strategy",
        "checkpoint_every",
        "summary_every",
        "image_summary_every",
        "max_checkpoints",
        "progress",
        "export",
    }
)


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: bounds, or a set of choices.

    `ge`, `le` are inclusive bounds, `gt`, `lt` exclusive ones; None leaves
    that side open. `note` says why, after the error message.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    note: str = ""

    def __contains__(self, value) -> bool:
        """Whether `value` is allowed."""
        if self.choices is not None:
            return value in self.choices
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        """Says what is allowed: ">= 1", "> 0", "in (0, 1)", "one of 3, 5, 7"."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = ("[", ">=", self.ge) if self.ge is not None else ("(", ">", self.gt)
        high = ("]", "<=", self.le) if self.le is not None else (")", "<", self.lt)
        if low[2] is not None and high[2] is not None:
            return f"in {low[0]}{low[2]}, {high[2]}{high[0]}"
        if low[2] is not None:
            return f"{low[1]} {low[2]}"
        if high[2] is not None:
            return f"{high[1]} {high[2]}"
        return "any value"

    def error(self, value) -> str:
        """The message for a value that is not allowed: "must be >= 1, got 0"."""
        note = f": {self.note}" if self.note else ""
        return f"must be {self}, got {value!r}{note}"


_RANGE = "svae.range"


def ranged(default, **allowed) -> typing.Any:
    """A dataclass field whose values must lie in `Range(**allowed)` (None too,
    if the field's type allows it); `check_fields` and `svae.cli.bound_flags`
    read it."""
    return dataclasses.field(default=default, metadata={_RANGE: Range(**allowed)})


def field_ranges(cls) -> dict[str, Range]:
    """Returns `{name: range}` of the `ranged` fields of a dataclass."""
    return {
        f.name: f.metadata[_RANGE]
        for f in dataclasses.fields(cls)
        if _RANGE in f.metadata
    }


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
}


def _typed(field: dataclasses.Field, value, error: type[Exception]):
    """Returns `value` as the builtin type of `field`, or raises `error`."""
    kinds = typing.get_args(field.type) or (field.type,)
    optional = type(None) in kinds
    kind = next((k for k in kinds if k is not type(None)), None)
    if kind not in _TYPE_NAMES or (value is None and optional):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if kind is int:
            return int(value)
    if kind is float and isinstance(value, numbers.Real):
        if not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    if kind is str and isinstance(value, str | os.PathLike):
        if isinstance(os.fspath(value), str):
            return os.fspath(value)
    expected = _TYPE_NAMES[kind] + (" or None" if optional else "")
    raise error(f"{field.name} must be {expected}, got {value!r}.")


def check_fields(instance, error: type[Exception] = ValueError) -> None:
    """Checks each field of a dataclass against its type and its `ranged` range.

    Numbers become the field's builtin type (an integer given for a float
    field becomes a float, numpy scalars Python numbers) and paths of string
    fields strings, so that the instance writes as JSON.

    Raises:
      error: a value of another type, or outside its field's range; the
        message names the field, what it must be and the value.
    """
    for field in dataclasses.fields(instance):
        value = _typed(field, getattr(instance, field.name), error)
        allowed = field.metadata.get(_RANGE)
        if allowed is not None and value is not None and value not in allowed:
            raise error(f"{field.name} {allowed.error(value)}.")
        object.__setattr__(instance, field.name, value)


@dataclasses.dataclass(frozen=True)
class Structure:
    """The sparsity pattern of a precision factor `L`, carried as one value.

    Each pixel is linked to the raster-later half of its `kernel_size x
    kernel_size` neighbourhood, dilated by `dilation` (`svae.linalg`). The
    model (`VAE.structure`), the config (`Config.structure`) and the
    likelihood helpers pass it whole, so that neither half can be forgotten.
    """

    kernel_size: int = 3
    dilation: int = 1

    @property
    def kwargs(self) -> dict:
        """`{"kernel_size", "dilation"}`: the keywords of `svae.linalg` and
        `svae.distributions.SparsePrecisionGaussian`."""
        return {"kernel_size": self.kernel_size, "dilation": self.dilation}


@dataclasses.dataclass
class Config:
    """Everything a run needs; `train.py` fills it from flags."""

    dataset: str = "sample_photos"
    data_dir: str | None = None
    # Folder of prepared caches of file-based data sets (svae.data.load's
    # cache_dir); None or "" decodes at every start. train.py defaults it to
    # $SVAE_CACHE_DIR or ~/.cache/svae, library callers opt in.
    cache_dir: str | None = None
    model: str = "structured"
    model_dir: str | None = None
    epochs: int = ranged(110, ge=1)
    steps: int | None = ranged(None, ge=1)
    batch_size: int = ranged(64, ge=1)
    learning_rate: float = ranged(5e-4, gt=0)
    latent_dim: int = ranged(100, ge=1)
    color: str = "ycbcr"
    # A power of 2 (checked in __post_init__).
    image_size: int = ranged(64, ge=8)
    chroma_factor: int = ranged(4, ge=1)
    crops_per_photo: int = ranged(512, ge=1)
    seed: int = ranged(0, ge=0, le=MAX_SEED)
    flip: bool = True
    # Images in tf.data's shuffle buffer; 0 keeps the data set's order.
    shuffle_buffer: int = ranged(10_000, ge=0, note="0 keeps the order")
    strategy: str = "default"
    filters: int = ranged(6, ge=1)
    kernel_size: int = ranged(3, choices=(3, 5, 7))
    dilation: int = ranged(1, ge=1)
    num_basis: int = ranged(0, ge=0)
    # "bounded": the off-diagonals of each column of L sum (in absolute value)
    # to less than `dominance` times its diagonal, so L^T is diagonally
    # dominant and L^{-T} eps bounded; "product": L^T = D (I + R)(I + V),
    # both factors so, bounded too and able to hold smooth residuals;
    # "free": the paper's, unconstrained (svae.layers.PrecisionHead).
    factor: str = "product"
    dominance: float = ranged(
        0.99, gt=0, lt=1, note="L^T is diagonally dominant only below 1"
    )
    # The bound of each Y pixel's conditional standard deviation 1 / L_pp
    # (svae.layers.capped_log_diag); None: unbounded (the paper's).
    max_scale: float | None = ranged(None, gt=0)
    # supn only: "mean_trunk" starts the covariance trunk as a copy of the
    # trained mean trunk when its phase begins; "random": as initialised.
    covariance_init: str = "random"
    # Offsets Y's predicted log scales per image by a learned slope times the
    # log of the mean's gradient magnitude (svae.models.ContrastScale); not
    # for vae_sph. False: the scales as the heads predict them (the paper's).
    contrast_scale: bool = True
    # "calibrated": after each step the global log scales take their analytic
    # optimum on the batch; "learned": Adam trains them (the paper's).
    scales: str = "calibrated"
    # Eq. 12's alpha term: "empirical", the paper's ||x - mu||^2; "sampled",
    # tr Sigma(z) as the model's variance, estimated by ||L^{-T} eps||^2.
    variance_term: str = "empirical"
    alpha: float | None = ranged(None, ge=0)
    gamma: float = ranged(0.001, ge=0)
    beta: float | None = ranged(None, ge=0)
    init_from: str | None = None
    pretrain_epochs: int = ranged(40, ge=0)
    structured_warmup_epochs: int = ranged(5, ge=0)
    checkpoint_every: int = ranged(500, ge=1)
    summary_every: int = ranged(50, ge=1)
    image_summary_every: int = ranged(1000, ge=1)
    max_checkpoints: int = ranged(3, ge=1)
    progress: bool = True
    # Write a SavedModel (model_dir/export/<n>/) when training finishes;
    # train.py turns it on, library callers opt in.
    export: bool = False

    def __post_init__(self):
        """Checks the values that can be checked without data."""
        check_fields(self)
        for name, valid in (
            ("model", MODELS),
            ("strategy", STRATEGIES),
            ("color", ("ycbcr", "gray")),
            ("factor", FACTORS),
            ("scales", SCALES),
            ("variance_term", VARIANCE_TERMS),
            ("covariance_init", COVARIANCE_INITS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {valid}, got {getattr(self, name)!r}."
                )
        size = self.image_size
        if size & (size - 1):
            raise ValueError(f"image_size must be a power of 2 >= 8, got {size}.")
        if self.color == "ycbcr" and (
            size % self.chroma_factor or size // self.chroma_factor < 4
        ):
            raise ValueError(
                f"chroma_factor must divide image_size, leaving >= 4 chroma "
                f"pixels a side, got {size} / {self.chroma_factor}."
            )
        if self.variant.beta == 1.0 and self.beta not in (None, 1.0):
            raise ValueError("beta other than 1 is for --model=beta_vae_diag.")

    @property
    def variant(self) -> Variant:
        """The model variant's description."""
        return VARIANTS[self.model]

    @property
    def structured_likelihood(self) -> bool:
        """Whether Y has the sparse-precision likelihood."""
        return self.variant.structured

    @property
    def unused_fields(self) -> frozenset[str]:
        """The fields this model does not read.

        The structure of `L` for the factorised baselines, the contrast scale
        for `vae_sph` (one scale for every image).
        """
        unused = set() if self.structured_likelihood else set(STRUCTURE_FIELDS)
        if self.variant.y_likelihood == "spherical":
            unused.add("contrast_scale")
        return frozenset(unused)

    @property
    def resolved_alpha(self) -> float:
        """`alpha` of eq. 12: 10 for the structured models, 0 for the baselines."""
        if self.alpha is not None:
            return self.alpha
        return 10.0 if self.structured_likelihood else 0.0

    @property
    def resolved_beta(self) -> float:
        """`beta` on the KL term: 5 for `beta_vae_diag` (the paper's value), else 1."""
        if self.beta is not None:
            return self.beta
        return self.variant.beta

    @property
    def resolved_gamma(self) -> float:
        """`gamma` of eq. 12; only the structured models have off-diagonals."""
        return self.gamma if self.structured_likelihood else 0.0

    @property
    def num_pretrain_epochs(self) -> int:
        """Epochs of `vae_sph` pretraining this run does itself."""
        if not self.structured_likelihood or self.init_from:
            return 0
        return self.pretrain_epochs

    @property
    def structure(self) -> "Structure":
        """The sparsity pattern of `L` (`svae.likelihoods` takes it whole)."""
        return Structure(self.kernel_size, self.dilation)

    def to_json(self) -> str:
        """Returns the config as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "the config") -> "Config":
        """Builds a config from `to_json`'s output (older ones: `LEGACY_VALUES`).

        Args:
          text: a JSON object of fields; missing ones take their
            `LEGACY_VALUES`, else their defaults.
          source: names the text in error messages (`load`: the file).

        Raises:
          ValueError: invalid JSON, an unknown field, or a field of the wrong
            type or out of range; the message names `source` and the field.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{source} is not valid JSON: {e.msg} at line {e.lineno}, "
                f"column {e.colno}."
            ) from e
        if not isinstance(values, dict):
            raise ValueError(
                f"{source} must hold a JSON object of svae.config.Config fields, "
                f"got {type(values).__name__}."
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in values if name not in names]
        if unknown:
            hints = [difflib.get_close_matches(name, names, 1) for name in unknown]
            message = f"{source} has unknown field(s) " + ", ".join(
                repr(name) + (f" (did you mean {hint[0]!r}?)" if hint else "")
                for name, hint in zip(unknown, hints, strict=True)
            )
            if not all(hints):
                message += f". The fields of svae.config.Config: {', '.join(names)}"
            raise ValueError(message + ".")
        try:
            return cls(**(LEGACY_VALUES | values))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def incompatible_fields(self, other: "Config") -> list[str]:
        """Returns the fields that differ from `other` and forbid resuming.

        Fields the model does not use (the structure of `L` for the
        factorised baselines, the contrast scale for `vae_sph`) never forbid
        it.
        """
        inert = self.unused_fields & other.unused_fields
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in RESUMABLE_FIELDS | inert
            and getattr(self, f.name) != getattr(other, f.name)
        ]


def load(model_dir) -> Config:
    """Reads the config of the run in `model_dir`.

    Args:
      model_dir: a run directory written by `svae.training.train`.

    Returns:
      The run's `Config`.

    Raises:
      ValueError: the file cannot be read, is not valid JSON, or has an
        unknown field or a field of the wrong type or out of range; the
        message names the file and the field.
    """
    path = pathlib.Path(model_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read: {e}") from e
    return Config.from_json(text, source=str(path))


# Held-out images and prior samples of the sample health (svae.health).
HEALTH_IMAGES = 64
HEALTH_PRIOR = 64


@dataclasses.dataclass
class EvalConfig:
    """What `evaluate` needs; `evaluate.py` fills it from flags.

    `dataset`, `data_dir` and `cache_dir` default to the run's own (an
    empty `cache_dir` turns the prepared cache off); `max_images=None`
    evaluates the whole split. The sample health (`svae.health`) is measured
    on the first `health_images` evaluated images and `num_prior` prior
    samples.
    """

    model_dir: str
    split: str = "test"
    num_samples: int = ranged(500, ge=1)
    sample_chunk: int = ranged(100, ge=1)
    batch_size: int = ranged(8, ge=1)
    max_images: int | None = ranged(None, ge=1)
    dataset: str | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    seed: int = ranged(0, ge=0, le=MAX_INT32)
    output_dir: str | None = None
    progress: bool = True
    health_images: int = ranged(HEALTH_IMAGES, ge=1)
    num_prior: int = ranged(HEALTH_PRIOR, ge=1)

    def __post_init__(self):
        """Checks the values that can be checked without the run."""
        check_fields(self)


@dataclasses.dataclass
class SampleConfig:
    """What `write_figures` needs; `sample.py` fills it from flags."""

    model_dir: str
    num: int = ranged(8, ge=1)
    seed: int = ranged(0, ge=0, le=MAX_INT32)
    temperature: float = ranged(1.0, ge=0)
    output_dir: str | None = None
    split: str = "test"
    dataset: str | None = None
    data_dir: str | None = None
    # None: the run's prepared-data folder; "": none (svae.data).
    cache_dir: str | None = None
    std_method: str = "exact"
    scale: int = ranged(2, ge=1)
    inpaint: bool = False
    mask: str = "center"

    def __post_init__(self):
        """Checks the values."""
        check_fields(self)
        if self.std_method not in ("exact", "sample"):
            raise ValueError(
                f'std_method must be "exact" or "sample", got {self.std_method!r}.'
            )


@dataclasses.dataclass
class DemoConfig:
    """The demo's budget; the defaults fit in 10 minutes on 2 CPU cores."""

    output_dir: str = "demo_output"
    image_size: int = 64
    latent_dim: int = 100
    # train.py's default width: at the demo's length wider nets bought no
    # NLL (benchmarks/RESULTS.md, bench_remedies) for 3-6x the step time.
    filters: int = Config.filters
    crops_per_photo: int = 512
    batch_size: int = 64
    learning_rate: float = 5e-4
    # vae_sph and vae_diag; structured starts from the vae_sph run and
    # trains structured_steps more (one epoch of them the branch alone).
    vae_steps: int = 1500
    structured_steps: int = 1000
    num_images: int = 128
    num_samples: int = 500
    num_figure_images: int = 6
    seed: int = 0
    progress: bool = True


@dataclasses.dataclass
class ReproduceConfig:
    """What `python -m svae.reproduce` was asked; its `main` fills it."""

    dataset: str = "sample_photos"
    out: str = "paper"
    data_dir: str | None = None
    cache_dir: str | None = None
    scale: str = "paper"
    steps: int | None = None
    models: tuple | None = None
    colors: tuple | None = None
    strategy: str = "default"
    preset: str | None = None
    num_samples: int | None = None
    max_images: int | None = None
    seed: int = 0
    progress: bool = True
    dry_run_steps: int = 6
