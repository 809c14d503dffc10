"""`python -m svae.reproduce`: the paper's Tables 1-2 and Figures 3-6.

Trains every row of the table a data set belongs to (Table 1 for `celeb_a`,
in grayscale and YCbCr; Table 2 for `lsun_church`; `sample_photos` runs
Table 1's plan, for trying it out) with the paper's settings (section 5),
evaluates each run with K = 500 importance samples on the test split, and
writes `OUT/table1.md` (or `table2.md`) with the paper's values beside ours,
and the figures (reconstructions and prior samples of every model side by
side). Restartable: finished runs and evaluations are reused, an interrupted
run resumes from its newest good checkpoint (`svae.training.train`).
See docs/reproduce.md.

The modules:

    paper      the paper's tables: rows, colours, epochs, published values
    planning   the options (`ReproduceConfig`), the runs, their configs
    runner     trains and evaluates the plan, reusing what is finished
    tables     the tables in the paper's layout, the figures
    estimate   what the full plan processes (`totals`), `dry_run`
    command    the flags and `main` of `python -m svae.reproduce`
"""

from svae import lazy
from svae.reproduce.paper import (
    DATASET_TABLE,
    LABELS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    TABLES,
    Table,
    table_of,
)
from svae.reproduce.planning import (
    PRETRAINED,
    SCALES,
    ReproduceConfig,
    Run,
    eval_config,
    plan,
    run_config,
)

__all__ = [
    "DATASET_TABLE",
    "LABELS",
    "MARKER",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PRETRAINED",
    "SAMPLE_PHOTOS",
    "SCALES",
    "SPLIT_IMAGES",
    "TABLES",
    "ReproduceConfig",
    "Run",
    "Table",
    "dry_run",
    "eval_config",
    "evaluate_run",
    "plan",
    "reproduce",
    "run_config",
    "run_steps",
    "split_images",
    "table_markdown",
    "table_of",
    "totals",
    "train_run",
    "write_comparison_figures",
    "write_table",
]

# The modules that import TensorFlow: their names of `__all__` are imported on
# first use, so `python -m svae.reproduce --help` answers without TensorFlow
# (svae.cli).
__getattr__ = lazy.module_getattr(__name__, __all__, ("estimate", "runner", "tables"))
