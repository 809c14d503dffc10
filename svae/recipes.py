"""The likelihood's options as one value, and its named recipes.

The paper's likelihood taken literally trains to good NLLs and broken
samples: an unconstrained factor `L(z)` whose back-substitution can explode,
and global scales that Adam moves too slowly for the posterior to survive
(docs/training.md, "The likelihood"). `Likelihood` holds the options that
decide this, as one frozen value that the layers, the models, the Keras
head, training, the reproduction and the export all read; `RECIPES` names
the two a user chooses between (`train.py --likelihood=NAME`):

```none
recipe    factor        dominance  contrast_scale  scales      chroma      borders
default   full_product  0.99       true            calibrated  structured  true
paper     free          0.99       false           learned     factorised  false
```

A run's `config.json` holds the value's fields, not the recipe's name, so a
run keeps the likelihood it was trained with whatever the recipes become. A
field missing from a saved value was added after the run was written, and
every run written before a field existed was trained as the paper has it:
such a field takes the `paper` recipe's value (`Likelihood.from_dict`).
"""

import dataclasses
import difflib

from svae.fields import check_fields, ranged

__all__ = ["CHROMAS", "DEFAULT", "FACTORS", "RECIPES", "SCALES", "Likelihood"]

# The parameterisations of L's off-diagonals (svae.factors, svae.heads).
FACTORS = ("full_product", "product", "bounded", "free")
# How the global log scales of Y and CbCr are set (svae.objective).
SCALES = ("calibrated", "learned")
# How the structured models' Cb and Cr residuals are modelled (svae.models).
CHROMAS = ("structured", "factorised")


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """How the decoder's likelihood is parameterised and its scales are set.

    Attributes:
      factor: the precision factor's off-diagonals (`svae.factors`).
        "full_product": `L^T = D (I + A)(I + B)`, two diagonally dominant
        half-plane factors of the `kernel_size` neighbourhood (so `L` has
        the `2 kernel_size - 1` one), so a sample `L^{-T} eps` is bounded
        whatever `z` and its correlations can run in every direction;
        "product": `L^T = D (I + R)(I + V)`, `R` a row and `V` a column
        autoregression, bounded too but separable (its samples are woven
        along the axes); "bounded": one dominant factor `L^T = D (I + A)`,
        bounded but unable to hold the strong correlations of smooth
        residuals; "free": the paper's, unconstrained.
      dominance: the bound of each dominant factor's off-diagonal mass
        relative to its diagonal, in (0, 1); not read with "free".
      contrast_scale: offset each image's Y scales by a learned slope times
        the log gradient magnitude of its predicted mean
        (`svae.heads.ContrastScale`); not read by `vae_sph`, whose Y has
        one scale.
      scales: "calibrated": after each step the global log scales of Y and
        CbCr take their closed-form optimum on the batch
        (`svae.objective.calibrated_scales`); "learned": Adam trains them,
        as the paper does.
      chroma: how the structured models (`structured`, `supn`) model the
        residuals of Cb and Cr at the chroma size: "factorised": a scale
        per value (eq. 10-11), so a sample is white noise there;
        "structured": each of Cb and Cr with a precision factor of the same
        `factor` and neighbourhood as Y's, so a sample's colour varies as
        smoothly as the actual residuals' does. The baselines' chroma is
        factorised whatever this says.
      borders: Y's precision head learns offsets of its outputs on the
        rows and columns at each border of the image
        (`svae.heads.PrecisionHead`), which `L` treats differently at the
        first and the last; without them a sample's first row and column
        are speckle.
    """

    factor: str = "full_product"
    dominance: float = ranged(
        0.99, gt=0, lt=1, note="L^T is diagonally dominant only below 1"
    )
    contrast_scale: bool = True
    scales: str = "calibrated"
    chroma: str = "structured"
    borders: bool = True

    def __post_init__(self):
        """Checks each field; raises ValueError naming the field."""
        check_fields(self)
        for name, valid in (
            ("factor", FACTORS),
            ("scales", SCALES),
            ("chroma", CHROMAS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"likelihood {name} must be one of {', '.join(valid)}, got "
                    f"{getattr(self, name)!r}."
                )

    @classmethod
    def recipe(cls, name) -> "Likelihood":
        """Returns the recipe called `name`; ValueError names the recipes."""
        if name not in RECIPES:
            raise ValueError(
                f"likelihood must be one of the recipes {', '.join(RECIPES)}, "
                f"got {name!r}."
            )
        return RECIPES[name]

    @classmethod
    def of(cls, value) -> "Likelihood":
        """A `Likelihood` from itself, a recipe's name or a dict of fields."""
        if isinstance(value, Likelihood):
            return value
        if isinstance(value, str):
            return cls.recipe(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise ValueError(
            "likelihood must be a recipe's name "
            f"({', '.join(RECIPES)}) or an svae.recipes.Likelihood, got {value!r}."
        )

    @classmethod
    def from_dict(cls, values, source="the likelihood") -> "Likelihood":
        """Builds the value a run saved; missing fields take the paper's values.

        Raises:
          ValueError: an unknown field, or one of the wrong type or out of
            range; the message names `source` and the field.
        """
        if not isinstance(values, dict):
            raise ValueError(
                f"{source} must be a JSON object of svae.recipes.Likelihood "
                f"fields, got {values!r}."
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in values if name not in names]
        if unknown:
            hints = [difflib.get_close_matches(name, names, 1) for name in unknown]
            raise ValueError(
                f"{source} has unknown field(s) "
                + ", ".join(
                    repr(name) + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    for name, hint in zip(unknown, hints, strict=True)
                )
                + f". The fields of a likelihood: {', '.join(names)}."
            )
        try:
            return dataclasses.replace(RECIPES["paper"], **values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    def to_dict(self) -> dict:
        """The fields, as `config.json` holds them."""
        return dataclasses.asdict(self)

    @property
    def name(self) -> str | None:
        """The name of the recipe this value is, or None."""
        return next((name for name, v in RECIPES.items() if v == self), None)

    @property
    def scale_family(self) -> bool:
        """Whether the structured Y is a scale family in its global scale.

        With a dominant factor the off-diagonals scale with the diagonal, so
        scaling `L` by `e^-c` is the whole of a change of scale; with "free"
        the off-diagonals are predicted on their own.
        """
        return self.factor != "free"

    def read_by(self, y_likelihood) -> "Likelihood":
        """The value with the fields a model does not read set to the default's.

        Two runs whose values agree here train and evaluate alike: `vae_sph`
        (`y_likelihood="spherical"`) reads only `scales`, the diagonal
        models no factor and no chroma, and the free factor no `dominance`.

        Args:
          y_likelihood: "spherical", "diagonal" or "structured"
            (`svae.variants.Variant.y_likelihood`).
        """
        unread = {}
        if y_likelihood != "structured":
            unread.update(
                factor=DEFAULT.factor,
                dominance=DEFAULT.dominance,
                chroma=DEFAULT.chroma,
                borders=DEFAULT.borders,
            )
        elif self.factor == "free":
            unread.update(dominance=DEFAULT.dominance)
        if y_likelihood == "spherical":
            unread.update(contrast_scale=DEFAULT.contrast_scale)
        return dataclasses.replace(self, **unread)


RECIPES = {
    "default": Likelihood(),
    "paper": Likelihood(
        factor="free",
        contrast_scale=False,
        scales="learned",
        chroma="factorised",
        borders=False,
    ),
}
DEFAULT = RECIPES["default"]
