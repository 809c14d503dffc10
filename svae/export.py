"""SavedModels for TF Serving: signatures that need neither svae nor Python.

Every signature takes and returns named tensors; the distributions are built
inside them from the model's tensors with `svae.likelihoods`, the one place
the formulas live. Layout: `export_dir/<version>/saved_model.pb`, numeric
versions, as TF Serving expects, and a description of every signature in
`<version>/assets.extra/README.md` (TF Serving's folder for extra files;
neither it nor `tf.saved_model.load` reads this one).

Each signature checks its inputs when it runs (TF Serving checks neither
static shapes nor values): shape, a batch of at least one, finite values,
images in [0, 1], latents in [-`MAX_LATENT`, `MAX_LATENT`], `num_samples` in
[1, `MAX_SERVED_SAMPLES`]. A bad input fails the request with a message that
names it and says what was wrong; so does an output that is not finite (a
model whose scales overflow), so no signature answers with NaN or inf.

A version is written aside and renamed into place: whole or not at all, the
next free number if another export took the one chosen meanwhile, and
nothing left behind on a full disk (`svae.files.NoSpaceError`).
"""

import dataclasses
import errno
import json
import numbers
import pathlib
import shutil

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from svae import data, evaluation, files, likelihoods, runs, xla

__all__ = [
    "EXPORT_INFO",
    "MAX_LATENT",
    "MAX_SERVED_SAMPLES",
    "README_PATH",
    "SERVED_SAMPLE_CHUNK",
    "export",
    "exported_step",
    "is_current",
    "newest_version",
    "next_version",
]

# The largest `num_samples` of the `log_prob` signature: 10x evaluate.py's
# K = 500; the bound's samples `[K, B, D]` are held at once.
MAX_SERVED_SAMPLES = 5000
# Samples that `log_prob` decodes at once, as evaluate.py's default: its
# memory is that of `SERVED_SAMPLE_CHUNK * B` decoded images for any K.
SERVED_SAMPLE_CHUNK = 100
# The largest |z| the latent inputs accept: 100 standard deviations of the
# prior N(0, I), which no draw from it reaches (|z| > 10 has probability
# 1e-23); far beyond, a model's scales overflow float32.
MAX_LATENT = 100.0
# The description of the signatures, inside the version folder.
README_PATH = "assets.extra/README.md"
# The run and checkpoint step a version was made from (JSON).
EXPORT_INFO = "assets.extra/svae.json"


def _versions(export_dir) -> list[pathlib.Path]:
    """The numeric version folders in `export_dir`."""
    return [p for p in pathlib.Path(export_dir).glob("*") if p.name.isdigit()]


def next_version(export_dir):
    """Returns 1 + the largest numeric version folder in `export_dir` (or 1)."""
    return max((int(p.name) for p in _versions(export_dir)), default=0) + 1


def newest_version(export_dir) -> pathlib.Path | None:
    """The highest numeric version folder holding a SavedModel, or None."""
    found = [p for p in _versions(export_dir) if (p / "saved_model.pb").exists()]
    return max(found, key=lambda p: int(p.name), default=None)


def exported_step(version_dir) -> int | None:
    """The checkpoint step a version was made from (`EXPORT_INFO`), or None.

    None for a version without the record (written by an older svae) or
    with an unreadable one.
    """
    try:
        text = (pathlib.Path(version_dir) / EXPORT_INFO).read_text(encoding="utf-8")
        step = json.loads(text)["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def is_current(model_dir, step) -> bool:
    """Whether the newest export in `model_dir/export` is of checkpoint `step`.

    What `train.py` asks before exporting a finished run again: a missing
    export, or one of an older checkpoint (or without its record), is not.
    """
    newest = newest_version(pathlib.Path(model_dir) / "export")
    made = None if newest is None else exported_step(newest)
    return made is not None and made >= step


@dataclasses.dataclass(frozen=True)
class _Input:
    """An input of the signatures and the checks it must pass when they run.

    `shape` has None for the batch, which must be at least 1; `what` names
    the input in errors; `value_range` is `(low, high)`, inclusive.
    """

    name: str
    dtype: tf.DType
    shape: tuple
    what: str
    value_range: tuple | None = None
    finite: bool = False
    hint: str = ""

    @property
    def spec(self):
        """The `tf.TensorSpec` of the signature."""
        return tf.TensorSpec(self.shape, self.dtype, name=self.name)

    def _rules(self):
        """Returns `[(message, test)]`: `test(tensor, dims) -> (ok, data)`."""
        shape = list(self.shape)
        fixed = [i for i, n in enumerate(shape) if n is not None]

        def has_shape(tensor, dims):
            # Padded to a fixed length, so that a wrong rank compares unequal
            # instead of failing on incompatible shapes.
            padded = tf.concat([dims, tf.zeros([len(shape)], tf.int32)], 0)
            ok = tf.logical_and(
                tf.equal(tf.size(dims), len(shape)),
                tf.reduce_all(
                    tf.equal(
                        tf.gather(padded, tf.constant(fixed, tf.int32)),
                        tf.constant([shape[i] for i in fixed], tf.int32),
                    )
                ),
            )
            return ok, ["got shape", dims]

        rules = [(f"{self.what} must have shape {shape}", has_shape)]
        if shape and shape[0] is None:
            rules.append(
                (
                    f"{self.what} must hold at least one item (batch size >= 1)",
                    lambda tensor, dims: (dims[0] >= 1, ["got shape", dims]),
                )
            )
        if self.finite:

            def finite(tensor, dims):
                bad = tf.logical_not(tf.math.is_finite(tensor))
                count = tf.reduce_sum(tf.cast(bad, tf.int32))
                return count == 0, ["got", count, "NaN or inf values"]

            rules.append((f"{self.what} must be finite (no NaN or inf)", finite))
        if self.value_range is not None:
            low, high = self.value_range

            def within(tensor, dims):
                ok = tf.reduce_all(
                    (tensor >= tf.cast(low, self.dtype))
                    & (tensor <= tf.cast(high, self.dtype))
                )
                if not shape:
                    return ok, ["got", tensor]
                return ok, [
                    "got min",
                    tf.reduce_min(tensor),
                    "max",
                    tf.reduce_max(tensor),
                ]

            rules.append(
                (f"{self.what} must be in [{low:g}, {high:g}]{self.hint}", within)
            )
        return rules

    def messages(self):
        """The error messages of the checks, in the order they run."""
        return [message for message, _ in self._rules()]

    def check(self, tensor):
        """Returns `tensor` once the checks passed; the first that fails fails the call.

        Each check runs after the previous one (so a NaN image reports NaN,
        not its range) and before anything that reads the returned tensor.
        """
        # The checks read a copy whose static shape is unknown: graph
        # optimisation would otherwise fold them using the declared shape,
        # which TF Serving does not enforce (`num_samples` of shape [2]
        # would pass the shape check).
        received = tf.io.parse_tensor(tf.io.serialize_tensor(tensor), self.dtype)
        dims = tf.shape(received, out_type=tf.int32)
        passed = []
        for message, test in self._rules():
            with tf.control_dependencies(passed):
                ok, values = test(received, dims)
                passed = [tf.debugging.Assert(ok, [message] + values, summarize=8)]
        with tf.control_dependencies(passed):
            return tf.identity(tensor)


def _inputs(config):
    """Returns `{key: _Input}`: every input of the signatures of a model."""
    size, latent_dim = config.image_size, config.latent_dim
    return {
        "images": _Input(
            "images",
            tf.float32,
            (None, size, size, 3),
            "images (float32 RGB in [0, 1])",
            value_range=(0.0, 1.0),
            finite=True,
            hint=(
                " (divide pixels in [0, 255] by 255, or send uint8 to "
                "reconstruct_uint8)"
            ),
        ),
        "images_uint8": _Input(
            "images", tf.uint8, (None, size, size, 3), "images (uint8 RGB in [0, 255])"
        ),
        "z": _Input(
            "z",
            tf.float32,
            (None, latent_dim),
            "z (float32 latents)",
            value_range=(-MAX_LATENT, MAX_LATENT),
            finite=True,
            hint=" (the prior is N(0, I))",
        ),
        "seed": _Input("seed", tf.int32, (2,), "seed (int32 [2])"),
        "num_samples": _Input(
            "num_samples",
            tf.int32,
            (),
            "num_samples (int32 scalar)",
            value_range=(1, MAX_SERVED_SAMPLES),
        ),
    }


# The message of an output that is not finite, `{}` the output's name.
OUTPUT_MESSAGE = "the model's {} is not finite (NaN or inf) for these inputs"
# Its hint in the signatures that take latents.
LATENT_HINT = " (its scales overflow: pass latents nearer the prior N(0, I))"


def _finite(outputs, hint=""):
    """Returns `outputs` once each is finite; the first that is not fails the call.

    The inputs passed their checks; a model may still overflow for some of
    them (a trained decoder's scales grow with |z|): an error, never a NaN
    answer.
    """
    checks = []
    for key, value in outputs.items():
        bad = tf.logical_not(tf.math.is_finite(value))
        count = tf.reduce_sum(tf.cast(bad, tf.int32))
        message = OUTPUT_MESSAGE.format(key) + hint
        checks.append(
            tf.debugging.Assert(count == 0, [message, "got", count, "such values"])
        )
    with tf.control_dependencies(checks):
        return {key: tf.identity(value) for key, value in outputs.items()}


def _endpoints(model, config):
    """Returns `{name: (function, [_Input])}` of the served model."""
    factor, structure = config.chroma_factor, config.structure
    spec = _inputs(config)

    def model_inputs(rgb):
        return data.to_model_inputs(rgb, config.color, factor)

    def mean_rgb(outputs):
        return likelihoods.to_rgb(likelihoods.means(outputs), factor)

    def encode(images):
        batch = model_inputs(spec["images"].check(images))
        z_mean, z_log_scale = model.encode(batch["y"], batch.get("cbcr"))
        return _finite({"z_mean": z_mean, "z_log_scale": z_log_scale})

    def decode(z):
        outputs = model.decode(spec["z"].check(z))
        # L whole is `off_diag` (`cbcr_off_diag`); its factors stay inside.
        outputs = {k: v for k, v in outputs.items() if "factor_" not in k}
        outputs["mean_rgb"] = mean_rgb(outputs)
        return _finite(outputs, LATENT_HINT)

    def sample(z, seed):
        outputs = model.decode(spec["z"].check(z))
        drawn = likelihoods.sample(outputs, spec["seed"].check(seed), structure)
        drawn_rgb = {
            "sample_rgb": likelihoods.to_rgb(drawn, factor),
            "sample_y": drawn["y"],
            "mean_rgb": mean_rgb(outputs),
        }
        return _finite(drawn_rgb, LATENT_HINT)

    def reconstructed(rgb):
        batch = model_inputs(rgb)
        z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
        outputs = model.decode(z_mean)
        drawn = likelihoods.sample(outputs, tf.constant([0, 0]), structure)
        return _finite(
            {
                "mean_rgb": mean_rgb(outputs),
                "z_mean": z_mean,
                "residual_y": drawn["y"] - outputs["y_mean"],
            }
        )

    def reconstruct(images):
        return reconstructed(spec["images"].check(images))

    def reconstruct_uint8(images):
        images = spec["images_uint8"].check(images)
        return reconstructed(tf.cast(images, tf.float32) / 255.0)

    def log_prob(images, num_samples):
        batch = model_inputs(spec["images"].check(images))
        num_samples = spec["num_samples"].check(num_samples)
        z_mean, z_log_scale = model.encode(batch["y"], batch.get("cbcr"))
        posterior = likelihoods.posterior(z_mean, z_log_scale)
        z = posterior.sample(num_samples, seed=tf.constant([0, 0]))
        result = evaluation.importance_weighted_bound(
            lambda z: evaluation.latent_log_likelihood(model, z, batch),
            posterior,
            likelihoods.prior(config.latent_dim),
            z,
            sample_chunk=SERVED_SAMPLE_CHUNK,
        )
        return _finite({"iw_bound": result["bound"]})

    return {
        "reconstruct": (reconstruct, [spec["images"]]),
        "reconstruct_uint8": (reconstruct_uint8, [spec["images_uint8"]]),
        "encode": (encode, [spec["images"]]),
        "decode": (decode, [spec["z"]]),
        "sample": (sample, [spec["z"], spec["seed"]]),
        "log_prob": (log_prob, [spec["images"], spec["num_samples"]]),
    }


_SIGNATURES = {
    "reconstruct": ("Encodes images and decodes the posterior mean."),
    "reconstruct_uint8": "`reconstruct` for uint8 images in [0, 255].",
    "encode": "The posterior `q(z|x)`, a diagonal Gaussian, of each image.",
    "decode": "The likelihood's parameters for latents `z`, and its mean in RGB.",
    "sample": (
        "Images drawn from the likelihood for latents `z`; the same seed gives "
        "the same output."
    ),
    "log_prob": (
        "The importance-weighted bound of `log p(x)` (nats per image) with "
        "`num_samples` posterior samples (seed 0), as `evaluate.py` computes "
        f"it. At most {MAX_SERVED_SAMPLES} samples; they are decoded "
        f"{SERVED_SAMPLE_CHUNK} at a time, so a call holds "
        f"{SERVED_SAMPLE_CHUNK} x B decoded images whatever `num_samples` is."
    ),
}
_OUTPUTS = {
    "mean_rgb": (
        "the likelihood's mean in RGB, Cb and Cr upsampled bilinearly, clipped "
        "to [0, 1]"
    ),
    "z_mean": "the posterior's mean",
    "z_log_scale": "the log of the posterior's standard deviations",
    "residual_y": "a residual sample of Y (seed 0)",
    "y_mean": "the mean of Y",
    "y_log_scale": "the log standard deviation of each pixel of Y",
    "log_diag": "the log diagonal of the precision factor L of Y",
    "off_diag": "the off-diagonal entries of L, one channel per neighbour",
    "cbcr_mean": "the mean of Cb and Cr, downsampled",
    "cbcr_log_scale": "the log standard deviation of Cb and Cr",
    "cbcr_log_diag": "the log diagonal of the precision factors of Cb and Cr",
    "cbcr_off_diag": "their off-diagonal entries, one channel per neighbour",
    "sample_rgb": (
        "the drawn images in RGB, Cb and Cr upsampled bilinearly, clipped to [0, 1]"
    ),
    "sample_y": "the drawn Y",
    "iw_bound": "the importance-weighted bound of `log p(x)`, nats per image",
}


def _shape_text(dims):
    """`[B, 16, 16, 3]` for a signature's dims, -1 (any size) being the batch."""
    return "[" + ", ".join("B" if n in (None, -1) else str(n) for n in dims) + "]"


def _readme(config, endpoints, saved_model_dir):
    """Returns the Markdown description of the signatures of a written export."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(
        (pathlib.Path(saved_model_dir) / "saved_model.pb").read_bytes()
    )
    signature_defs = proto.meta_graphs[0].signature_def
    colour = "colour (YCbCr)" if config.color == "ycbcr" else "gray"
    lines = [
        "# svae SavedModel",
        "",
        f"Model `{config.model}`, {colour}, {config.image_size}x"
        f"{config.image_size} RGB images, {config.latent_dim} latent dimensions. "
        "Written by `svae.export` for TF Serving; `B` is the batch size, at "
        "least 1, the same for all inputs of a call.",
        "",
        "## Signatures",
    ]
    for name, (_, inputs) in endpoints.items():
        title = f"`{name}`" + (
            " (also `serving_default`)" if name == "reconstruct" else ""
        )
        lines += ["", f"### {title}", "", _SIGNATURES[name], "", "Inputs:", ""]
        for item in inputs:
            needs = []
            if item.finite:
                needs.append("finite (no NaN or inf)")
            if item.value_range is not None:
                needs.append("in [{:g}, {:g}]".format(*item.value_range))
            lines.append(
                f"- `{item.name}` {item.dtype.name} `{_shape_text(item.shape)}`"
                + (": " + ", ".join(needs) if needs else "")
            )
        lines += ["", "Outputs:", ""]
        outputs = signature_defs[name].outputs
        for key in sorted(outputs):
            info = outputs[key]
            dims = [d.size for d in info.tensor_shape.dim]
            dtype = tf.dtypes.as_dtype(info.dtype).name
            lines.append(
                f"- `{key}` {dtype} `{_shape_text(dims)}`: {_OUTPUTS.get(key, '')}"
            )
    lines += [
        "",
        "## Errors",
        "",
        "Every input is checked when a signature runs. A bad one fails the "
        "request (gRPC status INVALID_ARGUMENT; the REST API answers "
        '`{"error": "..."}`) with the first of these messages that applies, '
        "followed by what was received:",
        "",
    ]
    seen = set()
    for _, inputs in endpoints.values():
        for item in inputs:
            for message in item.messages():
                if message not in seen:
                    seen.add(message)
                    lines.append(f"- `{message}`")
    lines += [
        f"- `{OUTPUT_MESSAGE.format('<output>')}` (in `decode` and `sample` "
        f"followed by `{LATENT_HINT.strip()}`): inputs that passed their checks "
        "but for which the model computes NaN or inf; no signature returns "
        "either.",
        "",
        "A wrong dtype fails before the graph runs (`... was expected to be a "
        "float tensor`, say).",
        "",
    ]
    return "\n".join(lines)


def _version(version):
    """Returns `version` as a positive int, or raises ValueError."""
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    if (
        isinstance(version, bool)
        or not isinstance(version, numbers.Integral)
        or version < 1
    ):
        raise ValueError(
            f"version must be a positive integer, got {version!r}: TF Serving "
            "loads only numeric version folders."
        )
    return int(version)


def _publish(scratch, base, version, fixed) -> pathlib.Path:
    """Renames the written `scratch` to `base/<version>`; returns that path.

    Two exports started together choose the same version: the rename of the
    second fails on the first's folder, and it takes the next free version
    (a `fixed` one, `--version`, is an error instead).
    """
    while True:
        target = base / str(version)
        try:
            scratch.rename(target)
            return target
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            if fixed:
                raise ValueError(
                    f"{target} exists (another export wrote it meanwhile): pick "
                    "another --version."
                ) from None
        version = max(version + 1, next_version(base))


def export(model_dir, export_dir=None, version=None):
    """Writes a run's latest checkpoint as a SavedModel for TF Serving.

    Signatures (`reconstruct` is also `serving_default`):

    - `reconstruct(images)`: float32 RGB `[B, H, W, 3]` in [0, 1] ->
      `mean_rgb`, `z_mean` and a residual sample `residual_y` (seed 0);
      `reconstruct_uint8` the same for uint8 images in [0, 255].
    - `encode(images)` -> `z_mean`, `z_log_scale` `[B, latent_dim]`.
    - `decode(z)`: float32 `[B, latent_dim]` in [-`MAX_LATENT`,
      `MAX_LATENT`] -> the likelihood's parameters (`y_mean`, then
      `log_diag` and `off_diag` or `y_log_scale`; `cbcr_mean`,
      `cbcr_log_scale` with colour) and `mean_rgb`.
    - `sample(z, seed)`: int32 `[2]` seed -> `sample_rgb`, `sample_y`,
      `mean_rgb`; the same seed gives the same output.
    - `log_prob(images, num_samples)` -> `iw_bound` `[B]`, the
      importance-weighted bound with `num_samples` samples (seed 0), in
      [1, `MAX_SERVED_SAMPLES`], decoded `SERVED_SAMPLE_CHUNK` at a time.

    The `*_rgb` outputs upsample Cb and Cr bilinearly
    (`svae.likelihoods.to_rgb`), as the figures do; the likelihood and
    `log_prob` keep the chroma at its modelled size.

    Inputs are checked when a signature runs: B >= 1, float images finite
    and in [0, 1], `z` finite and in [-`MAX_LATENT`, `MAX_LATENT`]; a bad
    one fails the call with a message, and so does an output that is not
    finite. The version folder holds this description, with the model's
    shapes and every error message, in `README_PATH`, and the checkpoint
    step it was made from in `EXPORT_INFO`.

    The version is written aside and renamed into place (`_publish`): TF
    Serving never sees half of one, a version another export took meanwhile
    moves this one to the next free number, and a full disk leaves nothing
    behind.

    Args:
      model_dir: a run directory of `train.py`.
      export_dir: base directory; default `model_dir/export`.
      version: numeric version, a positive integer; default one above the
        largest present.

    Returns:
      The `pathlib.Path` of the written version folder.

    Raises:
      ValueError: a bad version, an existing version folder, an export
        directory that cannot be created, or (`svae.evaluation.
        EvaluationError`) a run that cannot be loaded.
      svae.files.NoSpaceError: the disk filled up; nothing was exported.
    """
    fixed = version is not None
    if fixed:
        version = _version(version)
    base = runs.check_model_dir(
        export_dir or pathlib.Path(model_dir) / "export", "--export_dir"
    )
    version = version if fixed else next_version(base)
    target = base / str(version)
    if target.exists():
        raise ValueError(f"{target} exists: pick another --version.")
    config, model, step = runs.load_run(model_dir)
    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoints = _endpoints(model, config)
    # TF Serving's model server runs no XLA by default: trace the kernels
    # without it, and leave out the (training-only) gradient functions.
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    kept = "Nothing was exported (the partial version was removed). Free space "
    kept += "and run the command again."
    with xla.portable(), files.on_full_disk(f"a SavedModel in {base}", lambda: kept):
        for name, (function, inputs) in endpoints.items():
            archive.add_endpoint(
                name, tf.function(function), input_signature=[i.spec for i in inputs]
            )
        # Written aside and renamed into place (`_publish`).
        base.mkdir(parents=True, exist_ok=True)
        scratch = files.scratch_dir(base, f".{version}-")
        try:
            # Not verbose: Keras would list every endpoint and every captured
            # variable handle, ~30 lines per signature, at the end of each run.
            archive.write_out(str(scratch), options=options, verbose=False)
            readme = scratch / README_PATH
            readme.parent.mkdir(exist_ok=True)
            readme.write_text(_readme(config, endpoints, scratch), encoding="utf-8")
            info = {"model_dir": str(model_dir), "step": step}
            files.write_json(scratch / EXPORT_INFO, info)
            return _publish(scratch, base, version, fixed)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
