"""The configuration of a training run, written as JSON beside its checkpoints.

`Config` holds what a run needs; `train.py` fills it from flags. The
likelihood's options are one value of their own, `svae.recipes.Likelihood`,
held whole in `Config.likelihood`; the model variants are
`svae.variants.VARIANTS`. `EvalConfig` and `SampleConfig` are what
`evaluate.py` and `sample.py` are asked.
"""

import dataclasses
import difflib
import json
import os
import pathlib
import warnings

from svae.fields import check_fields, ranged
from svae.recipes import DEFAULT, Likelihood
from svae.variants import MODELS, VARIANTS, Variant

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Keras dtype policies a run trains under: the encoder computes in 16 bits
# under the mixed ones, the trunks too under float16 (svae.models.trunk_policy),
# the variables and the likelihood stay float32 (svae.heads).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CONFIG_FILE = "config.json"
# The environment variable naming the prepared cache's folder (svae.data).
CACHE_DIR_ENV = "SVAE_CACHE_DIR"
# Largest --seed of train.py: its per-epoch, per-input-pipeline seeds
# ((seed * 100_003 + epoch) * 1_000_003 + pipeline, svae.training and
# svae.data.training_pipeline) must fit in int64.
MAX_SEED = 2**26 - 1
# Largest seed of evaluation and sampling: stateless int32 seeds.
MAX_INT32 = 2**31 - 1


def default_cache_dir() -> str:
    """Returns `$SVAE_CACHE_DIR`, else `~/.cache/svae`: the command lines' default."""
    return os.environ.get(CACHE_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "svae"
    )


# Fields that only the structured likelihood (structured, supn) reads.
STRUCTURE_FIELDS = frozenset({"kernel_size", "dilation", "num_basis", "gamma"})

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

# The likelihood's options that older builds wrote as top-level fields of
# config.json (`Config.from_json` gathers them into `likelihood`).
_LIKELIHOOD_FIELDS = ("factor", "dominance", "contrast_scale", "scales")
# Options that older builds had and this one does not, with the one value
# under which this build computes what they computed.
_REMOVED_FIELDS = {
    "max_scale": None,
    "covariance_init": "random",
    "variance_term": "empirical",
}


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
    precision: str = "float32"
    filters: int = ranged(6, ge=1)
    kernel_size: int = ranged(3, choices=(3, 5, 7))
    dilation: int = ranged(1, ge=1)
    num_basis: int = ranged(0, ge=0)
    # The likelihood's options (svae.recipes): a Likelihood, or the name of a
    # recipe ("default", "paper"), which __post_init__ turns into its value.
    likelihood: Likelihood = DEFAULT
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
        self.likelihood = Likelihood.of(self.likelihood)
        for name, valid in (
            ("model", MODELS),
            ("strategy", STRATEGIES),
            ("precision", PRECISIONS),
            ("color", ("ycbcr", "gray")),
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
    def structure(self):
        """The `svae.distributions.Structure` of `L`, which the likelihood takes.

        The neighbourhood of `L` is `kernel_size`'s, or larger where the
        likelihood's factor multiplies factors of that size
        (`svae.factors.structure_kernel`).
        """
        # Here, not at the top: reading a config needs no TensorFlow.
        from svae.distributions import Structure
        from svae.factors import structure_kernel

        kernel = structure_kernel(self.likelihood.factor, self.kernel_size)
        return Structure(kernel, self.dilation)

    def to_json(self) -> str:
        """Returns the config as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "the config") -> "Config":
        """Builds a config from `to_json`'s output, or an older build's.

        Older builds wrote the likelihood's options as top-level fields
        (`factor`, `dominance`, `contrast_scale`, `scales`), and older ones
        none of them: they are gathered into `likelihood`, whose missing
        fields take the `paper` recipe's values (`Likelihood.from_dict`).
        Fields of options this build no longer has are accepted at the one
        value under which it computes what they computed.

        Args:
          text: a JSON object of fields; missing ones take their defaults.
          source: names the text in error messages (`load`: the file).

        Raises:
          ValueError: invalid JSON, an unknown field, a field of the wrong
            type or out of range, or a removed option that was used; the
            message names `source` and the field.
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
        values = _upgraded(values, source)
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
            likelihood = Likelihood.from_dict(
                values.pop("likelihood", {}), source=f"{source}: likelihood"
            )
            return cls(likelihood=likelihood, **values)
        except ValueError as e:
            if str(e).startswith(source):
                raise
            raise ValueError(f"{source}: {e}") from e

    def _meaning(self) -> dict:
        """The values that decide what the checkpoint holds and means.

        What the model does not read counts as unset: the structure of `L`
        for the factorised baselines, and the likelihood's fields the model
        ignores (`Likelihood.read_by`), each field by its own name.
        """
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in RESUMABLE_FIELDS
        }
        if not self.structured_likelihood:
            values.update(dict.fromkeys(STRUCTURE_FIELDS))
        read = values.pop("likelihood").read_by(self.variant.y_likelihood)
        values.update({f"likelihood.{k}": v for k, v in read.to_dict().items()})
        return values

    def incompatible_fields(self, other: "Config") -> dict[str, tuple]:
        """Returns the fields that differ from `other` and forbid resuming.

        Fields the model does not read (the structure of `L` for the
        factorised baselines, the contrast scale for `vae_sph`) never forbid
        it; a likelihood field is named `likelihood.<field>`.

        Returns:
          `{name: (other's value, this config's value)}`, empty if none.
        """
        mine, theirs = self._meaning(), other._meaning()
        return {
            name: (theirs[name], mine[name])
            for name in mine
            if mine[name] != theirs[name]
        }


def _upgraded(values: dict, source: str) -> dict:
    """An older build's `config.json` fields in this build's form.

    Raises:
      ValueError: the run used an option this build no longer has.
    """
    values = dict(values)
    for name, kept in _REMOVED_FIELDS.items():
        value = values.pop(name, kept)
        if value != kept:
            raise ValueError(
                f"{source} was written with {name}={value!r}, an option this "
                "build no longer has (measurements rejected it: "
                "benchmarks/log/likelihood.md). Train the run again, or use the "
                "svae release that wrote it."
            )
    old = {name: values.pop(name) for name in _LIKELIHOOD_FIELDS if name in values}
    if old:
        if "likelihood" in values:
            raise ValueError(
                f"{source} has both a likelihood and the older top-level "
                f"field(s) {', '.join(old)}; keep one."
            )
        values["likelihood"] = old
    return values


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
# Most importance samples K per image: what the exported `log_prob` signature
# takes (svae.export.MAX_SERVED_SAMPLES), so evaluate.py and a served model
# accept the same K; it bounds evaluate's `[K, batch, latent]` noise.
MAX_NUM_SAMPLES = 5000
# evaluate.py's batch (its images times sample_chunk latents are decoded at
# once) and the sample health's sets (each decoded, and for the prior
# sampled, in one batch).
MAX_EVAL_BATCH = 256
MAX_HEALTH_IMAGES = 4096
# Most images in a row of sample.py's figures, and their largest
# magnification. The largest figure, inpainting.png, is 5 rows of `num`
# images of `scale * image_size` pixels a side, held by Pillow at 4 bytes a
# pixel (svae.drawing.save_grid): of 64x64 images, 64 at scale 64 make a
# 262,400 x 20,506 canvas of 20 GiB, which fits in 24 GiB beside TensorFlow
# and the model; scale 128 would need 80 GiB.
MAX_FIGURE_IMAGES = 64
MAX_SCALE = 64
# The masks of sample.py's --inpaint that are no file (svae.inference).
MASKS = ("center", "random")
# Most pixels of a mask image: it is decoded whole before it is resized to
# the run's images (a 4096 x 4096 image, 16 MiB in gray).
MAX_MASK_PIXELS = 4096 * 4096


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
    num_samples: int = ranged(
        500,
        ge=1,
        le=MAX_NUM_SAMPLES,
        note="the limit of the exported log_prob signature",
    )
    # A chunk larger than K decodes K samples at once.
    sample_chunk: int = ranged(100, ge=1, le=MAX_NUM_SAMPLES)
    # Images at once; each decodes `sample_chunk` latents at once.
    batch_size: int = ranged(
        8, ge=1, le=MAX_EVAL_BATCH, note="times sample_chunk decodes at once"
    )
    max_images: int | None = ranged(None, ge=1)
    dataset: str | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    seed: int = ranged(0, ge=0, le=MAX_INT32)
    output_dir: str | None = None
    progress: bool = True
    # The sample health decodes each set in one batch.
    health_images: int = ranged(HEALTH_IMAGES, ge=1, le=MAX_HEALTH_IMAGES)
    num_prior: int = ranged(HEALTH_PRIOR, ge=1, le=MAX_HEALTH_IMAGES)

    def __post_init__(self):
        """Checks the values that can be checked without the run."""
        check_fields(self)


@dataclasses.dataclass
class SampleConfig:
    """What `write_figures` needs; `sample.py` fills it from flags.

    `mask` is one of `MASKS` or the path of an image (light pixels are
    missing); it is checked here, before any work, whether or not `inpaint`
    asks for it.
    """

    model_dir: str
    num: int = ranged(8, ge=1, le=MAX_FIGURE_IMAGES)
    seed: int = ranged(0, ge=0, le=MAX_INT32)
    temperature: float = ranged(1.0, ge=0)
    output_dir: str | None = None
    split: str = "test"
    dataset: str | None = None
    data_dir: str | None = None
    # None: the run's prepared-data folder; "": none (svae.data).
    cache_dir: str | None = None
    std_method: str = "exact"
    scale: int = ranged(
        2,
        ge=1,
        le=MAX_SCALE,
        note="figures of 64x64 images at a larger scale need over 24 GiB",
    )
    inpaint: bool = False
    mask: str = "center"

    def __post_init__(self):
        """Checks the values; a mask image is read whole (`mask_image`)."""
        check_fields(self)
        if self.std_method not in ("exact", "sample"):
            raise ValueError(
                f'std_method must be "exact" or "sample", got {self.std_method!r}.'
            )
        if self.mask not in MASKS:
            mask_image(self.mask)


def mask_image(path):
    """Reads the image of sample.py's `--mask=PATH`: its pixels in gray.

    Args:
      path: the image file: any format Pillow reads, at most
        `MAX_MASK_PIXELS` pixels.

    Returns:
      The decoded Pillow image in mode "L".

    Raises:
      ValueError: no such file, a folder, not an image, a corrupt or
        truncated one, or one too large; the message names `--mask`, the
        value and what it may be.
    """
    # Here, not at the top: only a mask file needs Pillow.
    from PIL import Image

    allowed = (
        f"must be {', '.join(MASKS)} or the path of an image file (light pixels "
        f"= missing) of at most {MAX_MASK_PIXELS / 1e6:.1f} million pixels"
    )
    file = pathlib.Path(path)
    problem = None
    if not str(path):
        problem = "it is empty"
    elif not file.exists():
        close = difflib.get_close_matches(str(path), MASKS, 1)
        problem = "there is no such file"
        problem += f" (did you mean {close[0]}?)" if close else ""
    elif file.is_dir():
        problem = "it is a folder"
    if problem:
        raise ValueError(f"--mask {allowed}, got {str(path)!r}: {problem}.")
    try:
        with warnings.catch_warnings():
            # The size is checked below, before the pixels are decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                if width * height > MAX_MASK_PIXELS:
                    problem = f"it is {width} x {height} pixels"
                else:
                    return image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        problem = f"it cannot be read as an image ({e})"
    raise ValueError(f"--mask {allowed}, got {str(path)!r}: {problem}.")
