"""The configuration of a training run, written as JSON beside its checkpoints."""

import dataclasses
import json
import pathlib

MODELS = ("vae_sph", "vae_diag", "beta_vae_diag", "supn", "structured")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# The precision factor's parameterisation (svae.models.PrecisionHead).
FACTORS = ("product", "bounded", "free")
# How the global scales sigma_Y, sigma_CbCr are set (svae.training).
SCALES = ("calibrated", "learned")
# Eq. 12's variance term (svae.likelihoods.variance_term).
VARIANCE_TERMS = ("empirical", "sampled")
CONFIG_FILE = "config.json"

# Named sets of field values; train.py's --preset applies one beneath the
# flags given explicitly. "paper": the paper taken literally: the width that
# matches its FLOPs column, its free factor, Adam-learned scales and the
# empirical variance term (README, "Likelihood: what the paper's gives").
PRESETS = {
    "paper": {
        "filters": 6,
        "factor": "free",
        "scales": "learned",
        "variance_term": "empirical",
    },
}

# Fields that only the structured likelihood (structured, supn) uses.
STRUCTURE_FIELDS = frozenset(
    {"kernel_size", "dilation", "num_basis", "factor", "dominance", "gamma"}
)

# Values of fields added after runs were first written: a config.json without
# the field was trained this way (the paper's), whatever today's default is.
LEGACY_VALUES = {
    "factor": "free",
    "scales": "learned",
    "variance_term": "empirical",
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
    epochs: int = 110
    steps: int | None = None
    batch_size: int = 64
    learning_rate: float = 5e-4
    latent_dim: int = 100
    color: str = "ycbcr"
    image_size: int = 64
    chroma_factor: int = 4
    crops_per_photo: int = 512
    seed: int = 0
    flip: bool = True
    # Images in tf.data's shuffle buffer; 0 keeps the data set's order.
    shuffle_buffer: int = 10_000
    strategy: str = "default"
    filters: int = 6
    kernel_size: int = 3
    dilation: int = 1
    num_basis: int = 0
    # "bounded": the off-diagonals of each column of L sum (in absolute value)
    # to less than `dominance` times its diagonal, so L^T is diagonally
    # dominant and L^{-T} eps bounded; "product": L^T = D (I + R)(I + V),
    # both factors so, bounded too and able to hold smooth residuals;
    # "free": the paper's, unconstrained (svae.models.PrecisionHead).
    factor: str = "product"
    dominance: float = 0.99
    # "calibrated": after each step the global log scales take their analytic
    # optimum on the batch; "learned": Adam trains them (the paper's).
    scales: str = "calibrated"
    # Eq. 12's alpha term: "empirical", the paper's ||x - mu||^2; "sampled",
    # tr Sigma(z) as the model's variance, estimated by ||L^{-T} eps||^2.
    variance_term: str = "empirical"
    alpha: float | None = None
    gamma: float = 0.001
    beta: float | None = None
    init_from: str | None = None
    pretrain_epochs: int = 40
    structured_warmup_epochs: int = 5
    checkpoint_every: int = 500
    summary_every: int = 50
    image_summary_every: int = 1000
    max_checkpoints: int = 3
    progress: bool = True
    # Write a SavedModel (model_dir/export/<n>/) when training finishes;
    # train.py turns it on, library callers opt in.
    export: bool = False

    def __post_init__(self):
        """Checks the values that can be checked without data."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {STRATEGIES}, got {self.strategy!r}."
            )
        if self.color not in ("ycbcr", "gray"):
            raise ValueError(f"color must be 'ycbcr' or 'gray', got {self.color!r}.")
        size = self.image_size
        if size < 8 or size & (size - 1):
            raise ValueError(f"image_size must be a power of 2 >= 8, got {size}.")
        if self.color == "ycbcr" and size // self.chroma_factor < 4:
            raise ValueError(
                f"image_size / chroma_factor must be >= 4, got {size} / "
                f"{self.chroma_factor}."
            )
        if self.kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size must be 3, 5 or 7, got {self.kernel_size}.")
        if self.shuffle_buffer < 0:
            raise ValueError(
                f"shuffle_buffer must be >= 0 (0: no shuffling), got "
                f"{self.shuffle_buffer}."
            )
        for name, valid in (
            ("factor", FACTORS),
            ("scales", SCALES),
            ("variance_term", VARIANCE_TERMS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {valid}, got {getattr(self, name)!r}."
                )
        if not 0.0 < self.dominance < 1.0:
            raise ValueError(
                f"dominance must be in (0, 1), got {self.dominance}: L^T is "
                "diagonally dominant only below 1."
            )
        if self.dilation < 1 or self.num_basis < 0:
            raise ValueError("dilation must be >= 1 and num_basis >= 0.")
        if self.model != "beta_vae_diag" and self.beta not in (None, 1.0):
            raise ValueError("beta other than 1 is for --model=beta_vae_diag.")

    @property
    def structured_likelihood(self) -> bool:
        """Whether Y has the sparse-precision likelihood."""
        return self.model in ("structured", "supn")

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
        return 5.0 if self.model == "beta_vae_diag" else 1.0

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
    def structure(self) -> dict:
        """`kernel_size` and `dilation`: the keywords of `svae.likelihoods`."""
        return {"kernel_size": self.kernel_size, "dilation": self.dilation}

    def to_json(self) -> str:
        """Returns the config as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        """Builds a config from `to_json`'s output (older ones: `LEGACY_VALUES`)."""
        return cls(**(LEGACY_VALUES | json.loads(text)))

    def incompatible_fields(self, other: "Config") -> list[str]:
        """Returns the fields that differ from `other` and forbid resuming.

        Fields the model does not use (the structure of `L` for the
        factorised baselines) never forbid it.
        """
        inert = set()
        if not (self.structured_likelihood or other.structured_likelihood):
            inert = STRUCTURE_FIELDS
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
    """
    path = pathlib.Path(model_dir) / CONFIG_FILE
    return Config.from_json(path.read_text(encoding="utf-8"))
