"""The paper's model variants (`--model`): what each one is."""

import dataclasses

__all__ = ["MODELS", "VARIANTS", "Variant"]


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
