"""The paper's Tables 1-2: their rows, colours, lengths and published values."""

import dataclasses

__all__ = [
    "DATASET_TABLE",
    "LABELS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "TABLES",
    "Table",
    "table_of",
]

# The paper's values, transcribed from its Table 1 (CelebA; NLL in nats per
# image as "mean ± std", KL, FLOPs per image; per colour, None where the
# paper has "-") and Table 2 (LSUN church outdoor, YCbCr; NLL, KL, and the
# MSE of RGB in [0, 255] as "mean ± std"). In the paper SUPN's and Ours'
# grayscale std (1455) and KL (269.76) are the same numbers.
PAPER_TABLE1 = {
    "vae_sph": {
        "nll": {"gray": (-3647, 1033), "ycbcr": (-4517, 1308)},
        "kl": {"gray": 326.31, "ycbcr": 322.94},
        "flops": {"gray": 6.67e6, "ycbcr": 6.68e6},
    },
    "vae_diag": {
        "nll": {"gray": (-4016, 813), "ycbcr": (-4598, 2747)},
        "kl": {"gray": 339.69, "ycbcr": 341.92},
        "flops": {"gray": 6.66e6, "ycbcr": 6.67e6},
    },
    "beta_vae_diag": {
        "nll": {"gray": (-3123, 998), "ycbcr": (-5574, 1083)},
        "kl": {"gray": 42.48, "ycbcr": 199.16},
        "flops": {"gray": 6.66e6, "ycbcr": 6.67e6},
    },
    "supn": {
        "nll": {"gray": (-8308, 1455), "ycbcr": None},
        "kl": {"gray": 269.76, "ycbcr": None},
        "flops": {"gray": 9.78e6, "ycbcr": None},
    },
    "structured": {
        "nll": {"gray": (-8297, 1455), "ycbcr": (-8669, 1424)},
        "kl": {"gray": 269.76, "ycbcr": 281.91},
        "flops": {"gray": 6.72e6, "ycbcr": 6.70e6},
    },
}
PAPER_TABLE2 = {
    "vae_sph": {"nll": (-2440, 1176), "kl": 303.83, "mse": (566, 285)},
    "vae_diag": {"nll": (-4464, 1924), "kl": 331.06, "mse": (728, 327)},
    "beta_vae_diag": {"nll": (-4213, 2055), "kl": 205.88, "mse": (800, 354)},
    "structured": {"nll": (-6918, 2423), "kl": 313.92, "mse": (614, 286)},
}
# The paper's names of the models, its tables' first column.
LABELS = {
    "vae_sph": "VAE (Sph)",
    "vae_diag": "VAE (Diag)",
    "beta_vae_diag": "β-VAE (Diag)",
    "supn": "SUPN",
    "structured": "Ours",
}


@dataclasses.dataclass(frozen=True)
class Table:
    """One of the paper's tables: its rows, colours, length and figures."""

    number: int
    models: tuple
    colors: tuple
    # Section 5.1 ("All the models are trained for 110 epochs") and 5.2
    # ("... for 150 epochs").
    epochs: int
    # The figure numbers of its reconstructions and prior samples.
    figures: tuple


TABLES = {
    1: Table(1, tuple(PAPER_TABLE1), ("gray", "ycbcr"), 110, (3, 4)),
    2: Table(2, tuple(PAPER_TABLE2), ("ycbcr",), 150, (5, 6)),
}
# sample_photos runs Table 1's plan, to try the command out without a download.
DATASET_TABLE = {"celeb_a": 1, "lsun_church": 2, "sample_photos": 1}


def table_of(dataset: str) -> Table:
    """Returns the paper's table a data set belongs to."""
    if dataset not in DATASET_TABLE:
        raise ValueError(
            f"--dataset must be one of {', '.join(DATASET_TABLE)}, got {dataset!r}."
        )
    return TABLES[DATASET_TABLE[dataset]]
