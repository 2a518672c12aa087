"""Deployment settings: one typed model from which the CLI flags, the `IMGDEDUP_<FIELD>` environment
variables and the Dagster resources' config are derived, validated in one place before any work.

Each field carries its type (`Literal` choices, bounds), default and description; its
`json_schema_extra` names its command-line flag where it differs from `--<field-with-dashes>`
(`flag`), the flag's `metavar` and whether the flag is `required`. `cli.py` builds its flags from
these, `resources/` take their field definitions from `setting()`, and `definitions.resources_for`
builds the resources from one `Settings`.

Over 400 lines: every setting's type, bounds and description, and the one validation that names flag and variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass, is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from imgdedup_pipeline.core.calibration import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    DEFAULT_TARGET_PRECISION,
    MIN_ORIGINALS,
    THRESHOLDS_FILE,
)
from imgdedup_pipeline.core.embedders import (
    DEFAULT_OFFLINE_POOLING,
    DEFAULT_PRECISION,
    EmbedderBackend,
    OfflinePooling,
    Pooling,
    Precision,
    model_problem,
)
from imgdedup_pipeline.core.grouping import KeepPolicy, NearDuplicateAction
from imgdedup_pipeline.core.images import DEFAULT_MAX_PIXELS
from imgdedup_pipeline.core.inference_runtimes import DEFAULT_RUNTIME, Runtime, resolve_runtime
from imgdedup_pipeline.core.scoring import Thresholds
from imgdedup_pipeline.core.search.choose import INDEX_MIN_CONTENTS, SearchEngineSetting

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "IMGDEDUP_"
# Where the steps of a run launched by Dagster (UI, daemon, `dagster job execute`) execute;
# `imgdedup run` always runs its steps in its own process.
Executor = Literal["in_process", "multiprocess", "celery"]
EXECUTORS: tuple[Executor, ...] = get_args(Executor)

_CRON_PATTERN = re.compile(r"[\w*/,-]+(\s+[\w*/,-]+){4}")
_DEVICE_PATTERN = re.compile(r"(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)")
# s3://bucket[/prefix]: bucket names as S3 allows them (3-63 lower-case letters, digits, dots, hyphens).
_OBJECT_STORAGE_PATTERN = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?")


class SettingsError(ValueError):
    """Invalid settings from any source (flag, environment, code); each problem names the setting,
    its flag and environment variable, and what is allowed.

    Attributes:
        problems: one sentence per invalid setting.
    """

    def __init__(self, problems: list[str] | str, validation_error: ValidationError | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.validation_error = validation_error
        super().__init__("; ".join(self.problems))


def _device_name(device: str) -> str:
    if not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps")
    return device


def _object_storage_uri(uri: str) -> str:
    if not _OBJECT_STORAGE_PATTERN.fullmatch(uri):
        raise ValueError(f"shared storage {uri!r} is not an object-storage URI such as s3://bucket/prefix")
    return uri.rstrip("/")


def _cron(expression: str) -> str:
    if not _CRON_PATTERN.fullmatch(expression.strip()):
        raise ValueError(f"dedup_schedule_cron {expression!r} is not a 5-field cron string such as '0 2 * * *'")
    return expression


# The choices live beside the code that implements them, as `Literal` types (their tuples are
# derived with `get_args`); Pooling, Precision, Runtime, KeepPolicy and NearDuplicateAction are
# imported under their own names.
Embedder = EmbedderBackend
NeighborSearch = SearchEngineSetting
Device = Annotated[str, AfterValidator(_device_name)]
CronString = Annotated[str, AfterValidator(_cron)]
ObjectStorageUri = Annotated[str, AfterValidator(_object_storage_uri)]


def _cli(flag: str | None = None, metavar: str | None = None, required: bool = False, path: bool = False) -> dict:
    """The `json_schema_extra` of a field whose command-line flag is not plain `--<field>`;
    `flag=""`: no command has a flag for it (set it in the environment); `required`: the flag is
    required where a command has it; `path`: the flag's value is made absolute."""
    given = {"flag": flag, "metavar": metavar, "required": required, "path": path}
    return {key: value for key, value in given.items() if value or value == ""}


_NO_FLAG = _cli(flag="")


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Settings:
    """Everything a deployment chooses: a frozen dataclass (`dataclasses.replace` gives a validated
    copy) whose construction validates every field; invalid values raise `SettingsError`.

    The environment variable of a field is `IMGDEDUP_<FIELD>` upper-case; the flag, where the
    command has one, is `--<field-with-dashes>` unless the field names another. `thresholds_file`,
    `vector_store_uri` and `export_dir` are derived from `out_dir` / `lancedb_uri` / `shared_storage_uri`.
    """

    image_root: str = Field(
        str(PROJECT_ROOT / "demo-output" / "sample-images"),
        description="folder of images (walked recursively)",
        json_schema_extra=_cli("--images", "DIR", required=True, path=True),
    )
    out_dir: str = Field(
        str(PROJECT_ROOT / "demo-output" / "results"),
        description="folder for exports and state (vector table, caches, the calibrated thresholds in OUT/state/thresholds.json)",
        json_schema_extra=_cli("--out", "DIR", required=True, path=True),
    )
    embedder: Embedder = Field("hf", description="hf (transformers model) or offline (pip-shipped EfficientNet-Lite0)")
    model: str | None = Field(
        None,
        description="hub id or local model directory for --embedder hf (default google/vit-base-patch16-224-in21k)",
        json_schema_extra=_cli(metavar="ID_OR_DIR"),
    )
    pooling: Pooling = Field(
        "cls",
        description="token pooling of hf models: cls (first token of the last hidden state) or mean; its own model id",
    )
    offline_pooling: OfflinePooling = Field(
        DEFAULT_OFFLINE_POOLING,
        description=(
            "pooling of the offline backbone's feature map: max-luma (global max beside a luminance histogram; "
            "separates texture crops and flat images better) or avg (global average, the model id used before); "
            "its own model id"
        ),
    )
    lancedb_uri: str | None = Field(
        None, description="vector store URI (default OUT/state/lancedb)", json_schema_extra=_cli(metavar="URI")
    )
    duplicate_threshold: float = Field(
        1e-4, description="uniqueness at or below which an image is a `duplicate`", json_schema_extra=_cli(metavar="U")
    )
    near_duplicate_threshold: float | None = Field(
        None,
        json_schema_extra=_cli(metavar="U"),
        description=(
            f"uniqueness at or below which an image is a `near_duplicate`; unset: the value calibrated for the model, "
            f"else {DEFAULT_NEAR_DUPLICATE_THRESHOLD:g} = cosine 0.9. Setting it pins it"
        ),
    )
    keep_policy: KeepPolicy = Field(
        "resolution", description="which image of a group is kept: resolution (most content pixels), first_seen or path"
    )
    near_duplicate_action: NearDuplicateAction = Field(
        "remove", description="remove near-duplicates, or review: keep them in the clean set and list them"
    )
    max_duplicate_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        json_schema_extra=_cli(metavar="F"),
        description="training gate: at most this share of the decodable images may be removed, else training_manifest is held back",
    )
    hash_threshold_bits: int = Field(
        10,
        ge=0,
        le=32,
        json_schema_extra=_cli(metavar="BITS"),
        description="pHash bits at the near-duplicate threshold, fused with the embedding distance (0 = embedding only)",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="decoded-size limit: larger images are rejected as decompression bombs",
        json_schema_extra=_cli(metavar="N"),
    )
    batch_size: int = Field(32, gt=0, description="images per forward pass", json_schema_extra=_cli(metavar="N"))
    device: Device = Field(
        "cpu", description="torch device: cpu, cuda, cuda:N or mps", json_schema_extra=_cli(metavar="DEVICE")
    )
    precision: Precision = Field(
        DEFAULT_PRECISION,
        description="forward-pass precision: fp32 or bf16 (faster on CPUs with AMX; its own model id (`...@bf16`) and vector table)",
    )
    runtime: Runtime = Field(
        DEFAULT_RUNTIME,
        description=(
            "what runs the model: auto (OpenVINO or ONNX Runtime for fp32 on the CPU, exported once per model id into "
            "OUT/state/exported-models; torch on CUDA or at bf16), torch, onnxruntime or openvino; the vectors (and model id) are the same"
        ),
    )
    calibration_sample_size: int = Field(
        DEFAULT_SAMPLE_SIZE,
        ge=MIN_ORIGINALS,
        description="distinct images sampled to calibrate the near-duplicate threshold",
        json_schema_extra=_cli("--sample", "N"),
    )
    calibration_seed: int = Field(
        DEFAULT_SEED,
        description="seed of the calibration sample and of its edits",
        json_schema_extra=_cli("--seed", "N"),
    )
    target_precision: float = Field(
        DEFAULT_TARGET_PRECISION,
        gt=0.0,
        le=1.0,
        description="estimated pair precision the calibrated threshold reaches",
        json_schema_extra=_cli(metavar="P"),
    )
    neighbor_search: NeighborSearch = Field(
        "auto",
        description=(
            "the embedding search: exact, index (the embeddings' IVF index, needs faiss-cpu: pip install 'imgdedup-pipeline[scale]') or auto "
            f"(the index from {INDEX_MIN_CONTENTS:,} contents); pHash matches, within the hash threshold only, are always found exactly"
        ),
    )
    # Settings of the Dagster deployment only: no command has a flag for them.
    report_base_url: str | None = Field(
        None,
        json_schema_extra=_NO_FLAG,
        description="where `imgdedup serve-reports` listens (e.g. http://127.0.0.1:3001), so that the UI's report links open; unset: no link",
    )
    dedup_schedule_cron: CronString = Field(
        "0 2 * * *",
        json_schema_extra=_NO_FLAG,
        description="when nightly_dedup_schedule (once switched on) catches up with the folder (5-field cron)",
    )
    executor: Executor = Field(
        "in_process",
        json_schema_extra=_NO_FLAG,
        description="where a launched run's steps execute: in_process, multiprocess (a process per step) or celery (deploy/README.md)",
    )
    celery_broker_url: str | None = Field(
        None,
        json_schema_extra=_NO_FLAG,
        description="the Celery broker for executor celery (the URL the workers read from deploy/celery.yaml)",
    )
    celery_backend_url: str | None = Field(
        None, json_schema_extra=_NO_FLAG, description="the Celery result backend for executor celery"
    )
    shared_storage_uri: ObjectStorageUri | None = Field(
        None,
        json_schema_extra=_NO_FLAG,
        description=(
            "object storage (s3://bucket/prefix) that every worker shares: intermediate tables, embedding checkpoints, "
            "exports and (without --lancedb-uri) the vector table; unset: all under --out (deploy/README.md)"
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.embedder == "offline" and self.model:
            raise ValueError("--model applies to the hf embedder only; drop it or use --embedder hf")
        self.thresholds  # noqa: B018  (the property raises for thresholds out of order)
        return self

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings from the environment (`IMGDEDUP_<FIELD>`; unset or empty = default) with
        the non-None `overrides` (flags) winning, validated once.

        Raises:
            SettingsError: naming each invalid value, where it came from and what is allowed.
        """
        source: Mapping[str, str] = os.environ if environ is None else environ
        from_env = {name: raw for name in FIELDS if (raw := source.get(env_var(name))) not in (None, "")}
        values = {**from_env, **{name: value for name, value in overrides.items() if value is not None}}
        try:
            return cls(**values)
        except SettingsError as exc:
            if exc.validation_error is None:  # raised without pydantic's details: nothing to explain
                raise
            sources = {
                name: f"{env_var(name)}={raw!r}"
                for name, raw in from_env.items()
                if name not in overrides or overrides[name] is None
            }
            raise SettingsError(explain(exc.validation_error, values, sources), exc.validation_error) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.load(environ)

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with the given non-None values replaced."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def vector_store_uri(self) -> str:
        if self.lancedb_uri:
            return self.lancedb_uri
        if self.shared_storage_uri:
            return f"{self.shared_storage_uri}/lancedb"
        return str(Path(self.out_dir) / "state" / "lancedb")

    @property
    def export_dir(self) -> str:
        """Models exported for a CPU runtime, once per model id (a disposable cache)."""
        return str(Path(self.out_dir) / "state" / "exported-models")

    @property
    def thresholds_file(self) -> str:
        """Where calibrated thresholds are stored, per model id: shared by every worker that scores."""
        if self.shared_storage_uri:
            return f"{self.shared_storage_uri}/state/{THRESHOLDS_FILE}"
        return str(Path(self.out_dir) / "state" / THRESHOLDS_FILE)

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds as configured (an unpinned near-duplicate threshold shows as the default;
        the value in force may be a calibrated one, see `DedupPolicyResource.thresholds_in_force`)."""
        near = (
            DEFAULT_NEAR_DUPLICATE_THRESHOLD if self.near_duplicate_threshold is None else self.near_duplicate_threshold
        )
        return Thresholds(self.duplicate_threshold, near)

    def problems(self, check_paths: bool = True) -> list[str]:
        """What keeps these (valid) settings from working on this machine, each as a sentence saying
        what to fix (empty = fine): missing folders, absent devices or runtimes, Celery's needs."""
        problems = []
        if check_paths and not Path(self.image_root).is_dir():
            problems.append(
                f"image root {self.image_root!r} does not exist or is not a folder: pass --images DIR / set IMGDEDUP_IMAGE_ROOT"
            )
        try:
            resolve_runtime(self.runtime, self.device, self.precision)
        except ValueError as exc:
            problems.append(f"{exc} (--runtime / IMGDEDUP_RUNTIME)")
        problems.extend(self.executor_problems())
        problems.extend(self.shared_storage_problems())
        if (device_problem := _device_problem(self.device)) is not None:
            problems.append(device_problem)
        if check_paths:
            from imgdedup_pipeline.core.output_folder import output_folder_problems

            problems.extend(_unwritable(self.out_dir) or output_folder_problems(self.out_dir))
        return problems

    def executor_problems(self) -> list[str]:
        """What keeps the configured executor from being built (empty = fine); connects nowhere."""
        if self.executor != "celery":
            return []
        import importlib.util

        if importlib.util.find_spec("dagster_celery") is None:
            return ["executor celery needs dagster-celery: pip install 'imgdedup-pipeline[distributed]'"]
        if not self.celery_broker_url:
            return ["executor celery needs a broker: set IMGDEDUP_CELERY_BROKER_URL (deploy/README.md)"]
        return []

    def shared_storage_problems(self) -> list[str]:
        """What keeps the configured shared storage from being used (empty = fine); connects nowhere."""
        import importlib.util

        if self.shared_storage_uri and importlib.util.find_spec("dagster_aws") is None:
            return ["shared storage on S3 needs dagster-aws: pip install 'imgdedup-pipeline[distributed]'"]
        return []

    def model_problem(self) -> str | None:
        """Why the configured model cannot be loaded (None = fine); reads no weights."""
        return model_problem(self.embedder, self.model)


# The fields as pydantic sees them: type, default, bounds, description and command-line details.
def _pydantic_fields(cls: type[Any]) -> dict[str, FieldInfo]:
    if not is_pydantic_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a pydantic dataclass")
    return cls.__pydantic_fields__


FIELDS = _pydantic_fields(Settings)
_validated_init = Settings.__init__


def _init_raising_settings_error(self, *args: Any, **values: Any) -> None:
    try:
        _validated_init(self, *args, **values)
    except ValidationError as exc:
        raise SettingsError(explain(exc, values), exc) from None


# Every construction (also `dataclasses.replace`) reports invalid values in our words.
Settings.__init__ = _init_raising_settings_error  # type: ignore[method-assign]  # deliberate: wraps pydantic's __init__


def env_var(name: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + name.upper()


def cli_flag(name: str) -> str | None:
    """The command-line flag of a settings field (None: set in the environment only)."""
    return field_extra(name).get("flag", "--" + name.replace("_", "-")) or None


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a `Literal` field, None for other fields."""
    annotation = FIELDS[name].annotation
    return getattr(annotation, "__args__", None) if getattr(annotation, "__origin__", None) is Literal else None


def setting(name: str, **overrides: Any) -> Any:
    """A field definition (default, description, bounds) copied from `Settings.<name>`, for a
    resource's config field of the same meaning: `keep_policy: KeepPolicy = setting("keep_policy")`.
    `overrides` are `Field` arguments that differ (e.g. `default=...` for another default)."""
    field = FIELDS[name]
    arguments = {"default": field.default, "description": field.description, **overrides}
    copy = Field(**arguments)
    # Bounds (ge/le/gt/lt) and validators travel as metadata.
    copy.metadata.extend(field.metadata)
    return copy


def parse_value(name: str, raw: Any) -> Any:
    """One setting's value (e.g. a flag's text) parsed and checked as `Settings` does, without the
    checks across settings.

    Raises:
        SettingsError: the value is invalid, with a sentence naming the setting and what is allowed.
    """
    field = FIELDS[name]
    try:
        return _adapter(field).validate_python(raw)
    except ValidationError as exc:
        sentences = [_explain_one(name, raw, error, repr(raw)) for error in exc.errors()]
        if choices(name) is not None:  # argparse's words for a bad choice, which scripts may look for
            sentences = [f"invalid choice: {raw!r}: {sentence}" for sentence in sentences]
        raise SettingsError(sentences) from None


def field_extra(name: str) -> dict:
    """The command-line details of a settings field (`flag`, `metavar`, `required`, `path`)."""
    extra = FIELDS[name].json_schema_extra
    if callable(extra):
        raise TypeError(f"settings field {name!r}: json_schema_extra must be a dict, not a function")
    return dict(extra or {})


def _adapter(field: FieldInfo) -> TypeAdapter:
    annotation = field.annotation
    if annotation is None:
        raise TypeError(f"settings field {field!r} has no type annotation")
    if not field.metadata:
        return TypeAdapter(annotation)
    # Built at run time, mypy types it as a "special form", which TypeAdapter's stub does not accept.
    annotated: Any = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotated)


def explain(exc: ValidationError, values: dict, sources: dict[str, str] | None = None) -> list[str]:
    """One sentence per error of a `Settings` validation; `sources` says how a value was given
    (e.g. `IMGDEDUP_BATCH_SIZE='abc'`)."""
    sources = sources or {}
    sentences = []
    for error in exc.errors():
        name = error["loc"][0] if error["loc"] else None
        if not isinstance(name, str) or name not in FIELDS:
            context_error = (error.get("ctx") or {}).get("error")
            sentences.append(str(context_error) if context_error is not None else error["msg"])
            continue
        value = values.get(name, error.get("input"))
        sentences.append(_explain_one(name, value, error, sources.get(name, f"{name}={value!r}")))
    return sentences


def _explain_one(name: str, value: Any, error: ErrorDetails, given: str) -> str:
    """One sentence for one pydantic error on field `name`, ending with the setting's flag and
    environment variable; `given` says how the value was given (e.g. `IMGDEDUP_BATCH_SIZE='abc'`)."""
    kind = error["type"]
    if kind == "literal_error":
        allowed = choices(name)
        if allowed is None:
            raise TypeError(f"settings field {name!r} got a literal_error but is not a Literal field")
        sentence = f"unknown {name.replace('_', ' ')} {value!r}: use one of {', '.join(allowed)}"
    elif kind.startswith("int_"):
        sentence = f"{given} is not a whole number"
    elif kind.startswith("float_"):
        sentence = f"{given} is not a number"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sentence = f"{name} must be {_bounds(name)}, got {value}"
    elif kind == "value_error":
        sentence = str(error["ctx"]["error"])
    else:
        sentence = f"{given}: {error['msg']}"
    names = [where for where in (cli_flag(name), env_var(name)) if where and where not in sentence]
    return f"{sentence} ({' / '.join(names)})" if names else sentence


def _bounds(name: str) -> str:
    """The bounds of a numeric field in words: `within [0, 1]`, `within (0, 1]`, `positive`, `at least 4`."""
    limits = {
        key: getattr(bound, key)
        for bound in FIELDS[name].metadata
        for key in ("ge", "gt", "le", "lt")
        if getattr(bound, key, None) is not None
    }
    low = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    high = ("]", limits["le"]) if "le" in limits else (")", limits["lt"]) if "lt" in limits else None
    if low and high:
        return f"within {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return (
            "positive" if low == ("(", 0) else f"at least {low[1]:g}" if low[0] == "[" else f"greater than {low[1]:g}"
        )
    if high is None:
        raise ValueError(f"settings field {name!r} has no bounds")
    return f"at most {high[1]:g}" if high[0] == "]" else f"less than {high[1]:g}"


def _device_problem(device: str) -> str | None:
    """A problem when `device` names an accelerator that is absent from this machine."""
    if device == "cpu":
        return None
    import torch

    backend = device.split(":")[0]
    is_available: dict[str, Callable[[], bool]] = {
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    available = is_available[backend]()
    return None if available else f"device {device!r} is not available on this machine: use cpu (IMGDEDUP_DEVICE)"


def _unwritable(folder: str) -> list[str]:
    """A problem when `folder` cannot be created or written. The nearest existing folder is probed
    by creating (and removing) a file in it: permission bits say nothing for root, a read-only
    mount or a pseudo file system such as /proc."""
    import tempfile

    path = Path(folder)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    problem = [f"output folder {folder!r} cannot be created or written: choose a writable --out"]
    if existing is None or not existing.is_dir():
        return [f"{problem[0]} ({existing} is not a folder)"] if existing is not None else problem
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".imgdedup-write-probe-"):
            pass
    except OSError as exc:
        return [f"{problem[0]} ({type(exc).__name__}: {exc.strerror or exc} in {existing})"]
    return []
