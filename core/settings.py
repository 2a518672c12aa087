"""Deployment settings, read from the environment once and validated before any work starts."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from core.calibration import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    DEFAULT_TARGET_PRECISION,
    MIN_ORIGINALS,
    THRESHOLDS_FILE,
)
from core.embedders import DEFAULT_PRECISION, EMBEDDER_BACKENDS, PRECISIONS, model_problem
from core.grouping import KEEP_POLICIES, NEAR_DUPLICATE_ACTIONS
from core.inference_runtimes import DEFAULT_RUNTIME, RUNTIMES, resolve_runtime
from core.scoring import Thresholds
from core.search.choose import SEARCH_ENGINES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "IMGDEDUP_"
# Fields whose default is None: the type an environment value is parsed as.
_OPTIONAL_FIELD_TYPES = {
    "model": str, "lancedb_uri": str, "near_duplicate_threshold": float, "report_base_url": str,
    "celery_broker_url": str, "celery_backend_url": str,
}
# Where the steps of a run launched by Dagster (UI, daemon, `dagster job execute`) execute;
# `imgdedup run` always runs its steps in its own process.
EXECUTORS = ("in_process", "multiprocess", "celery")


class SettingsError(ValueError):
    """A setting from the environment cannot be parsed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything a deployment chooses. Environment variables are `IMGDEDUP_<FIELD>` upper-case.

    Attributes:
        image_root: folder of raw images.
        out_dir: exports and state (vector table, caches) unless `lancedb_uri` says otherwise.
        embedder: `hf` or `offline`.
        model: hub id / local directory for `hf`.
        lancedb_uri: vector store location; default `<out_dir>/state/lancedb`.
        duplicate_threshold, near_duplicate_threshold: label thresholds (uniqueness scale).
            near_duplicate_threshold None (default) = not pinned: the value calibrated for the
            model (stored in `<out_dir>/state/thresholds.json`), else 0.05. Setting it pins it.
        keep_policy: resolution / first_seen / path.
        near_duplicate_action: remove / review.
        max_duplicate_fraction: raw-data gate.
        hash_threshold_bits: pHash distance fused with the embedding distance (0 = off).
        max_pixels: decompression-bomb limit.
        batch_size: images per forward pass.
        device: torch device.
        precision: forward-pass precision, `fp32` (default) or `bf16`; bf16 is its own model id
            (`...@bf16`) and so its own vector table and calibrated threshold.
        runtime: what runs the model: `auto` (default: the fastest installed CPU runtime for fp32
            on the CPU, torch on other devices or at bf16), `torch`, `onnxruntime` or `openvino`.
            The vectors are the same (fp32), so the model id does not change with it.
        calibration_sample_size, calibration_seed, target_precision: how `embedding_thresholds`
            / `imgdedup calibrate` calibrate the near-duplicate threshold for the model.
        neighbor_search: the embedding search: `auto` (an index from 250k contents when faiss-cpu
            is installed), `exact` or `index`; pHash matches are always found exactly.
        report_base_url: where `imgdedup serve-reports` listens (e.g. `http://127.0.0.1:3001`),
            so that the UI's `report_url` opens the HTML report; None = no link, only the path.
        dedup_schedule_cron: when `nightly_dedup_schedule` (once switched on) catches up with the
            folder, as a 5-field cron string; 02:00 every night by default.
        executor: where a launched run's steps execute: `in_process` (default), `multiprocess`
            (a process per step) or `celery` (on dagster-celery workers, deploy/README.md).
        celery_broker_url, celery_backend_url: the Celery broker and result backend for
            `executor=celery`, e.g. `sqla+postgresql+psycopg2://user:pw@host/db` and
            `db+postgresql+psycopg2://user:pw@host/db` (the same URLs the workers read from
            deploy/celery.yaml).
    """

    image_root: str = str(PROJECT_ROOT / "demo-output" / "sample-images")
    out_dir: str = str(PROJECT_ROOT / "demo-output" / "results")
    embedder: str = "hf"
    model: str | None = None
    lancedb_uri: str | None = None
    duplicate_threshold: float = 1e-4
    near_duplicate_threshold: float | None = None
    keep_policy: str = "resolution"
    near_duplicate_action: str = "remove"
    max_duplicate_fraction: float = 0.5
    hash_threshold_bits: int = 10
    max_pixels: int = 100_000_000
    batch_size: int = 32
    device: str = "cpu"
    precision: str = DEFAULT_PRECISION
    runtime: str = DEFAULT_RUNTIME
    calibration_sample_size: int = DEFAULT_SAMPLE_SIZE
    calibration_seed: int = DEFAULT_SEED
    target_precision: float = DEFAULT_TARGET_PRECISION
    neighbor_search: str = "auto"
    report_base_url: str | None = None
    dedup_schedule_cron: str = "0 2 * * *"
    executor: str = "in_process"
    celery_broker_url: str | None = None
    celery_backend_url: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(field.default) if field.default is not None else _OPTIONAL_FIELD_TYPES.get(field.name, str)
            try:
                values[field.name] = _parse(kind, raw)
            except ValueError as exc:
                raise SettingsError(f"{ENV_PREFIX + field.name.upper()}={raw!r} is not {_KIND_NAMES.get(kind, kind.__name__)}") from exc
        return cls(**values)

    def with_overrides(self, **changes) -> "Settings":
        """A copy with the given non-None values replaced."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def vector_store_uri(self) -> str:
        return self.lancedb_uri or str(Path(self.out_dir) / "state" / "lancedb")

    @property
    def export_dir(self) -> str:
        """Models exported for a CPU runtime, once per model id (a disposable cache)."""
        return str(Path(self.out_dir) / "state" / "exported-models")

    @property
    def thresholds_file(self) -> str:
        """Where calibrated thresholds are stored, per model id."""
        return str(Path(self.out_dir) / "state" / THRESHOLDS_FILE)

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds as configured (an unpinned near-duplicate threshold shows as the default;
        the value in force may be a calibrated one, see `DedupPolicyResource.thresholds_in_force`)."""
        near = DEFAULT_NEAR_DUPLICATE_THRESHOLD if self.near_duplicate_threshold is None else self.near_duplicate_threshold
        return Thresholds(self.duplicate_threshold, near)

    def problems(self, check_paths: bool = True) -> list[str]:
        """What is wrong with these settings, each as a sentence saying what to fix (empty = fine)."""
        problems = []
        if check_paths and not Path(self.image_root).is_dir():
            problems.append(f"image root {self.image_root!r} does not exist or is not a folder: pass --images DIR / set IMGDEDUP_IMAGE_ROOT")
        if self.embedder not in EMBEDDER_BACKENDS:
            problems.append(f"unknown embedder {self.embedder!r}: use one of {', '.join(EMBEDDER_BACKENDS)}")
        if self.embedder == "offline" and self.model:
            problems.append("--model applies to the hf embedder only; drop it or use --embedder hf")
        if self.precision not in PRECISIONS:
            problems.append(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)} (--precision / IMGDEDUP_PRECISION)")
        if self.runtime not in RUNTIMES:
            problems.append(f"unknown runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)} (--runtime / IMGDEDUP_RUNTIME)")
        elif self.precision in PRECISIONS and _DEVICE_PATTERN.fullmatch(self.device):
            try:
                resolve_runtime(self.runtime, self.device, self.precision)
            except ValueError as exc:
                problems.append(f"{exc} (--runtime / IMGDEDUP_RUNTIME)")
        try:
            self.thresholds
        except ValueError as exc:
            problems.append(str(exc))
        if self.neighbor_search not in SEARCH_ENGINES:
            problems.append(f"unknown neighbor_search {self.neighbor_search!r}: use one of {', '.join(SEARCH_ENGINES)} (--neighbor-search / IMGDEDUP_NEIGHBOR_SEARCH)")
        if self.keep_policy not in KEEP_POLICIES:
            problems.append(f"unknown keep policy {self.keep_policy!r}: use one of {', '.join(KEEP_POLICIES)}")
        if self.near_duplicate_action not in NEAR_DUPLICATE_ACTIONS:
            problems.append(f"unknown near_duplicate_action {self.near_duplicate_action!r}: use one of {', '.join(NEAR_DUPLICATE_ACTIONS)}")
        if not 0.0 <= self.max_duplicate_fraction <= 1.0:
            problems.append(f"max_duplicate_fraction must be within [0, 1], got {self.max_duplicate_fraction}")
        if not 0 <= self.hash_threshold_bits <= 32:
            problems.append(f"hash_threshold_bits must be within [0, 32] (0 turns the hash signal off), got {self.hash_threshold_bits}")
        if not 0.0 < self.target_precision <= 1.0:
            problems.append(f"target_precision must be within (0, 1], got {self.target_precision}")
        if self.calibration_sample_size < MIN_ORIGINALS:
            problems.append(f"calibration_sample_size must be at least {MIN_ORIGINALS}, got {self.calibration_sample_size}")
        if self.max_pixels <= 0 or self.batch_size <= 0:
            problems.append("max_pixels and batch_size must be positive")
        if not _CRON_PATTERN.fullmatch(self.dedup_schedule_cron.strip()):
            problems.append(f"dedup_schedule_cron {self.dedup_schedule_cron!r} is not a 5-field cron string such as '0 2 * * *' (IMGDEDUP_DEDUP_SCHEDULE_CRON)")
        problems.extend(self.executor_problems())
        if (device_problem := _device_problem(self.device)) is not None:
            problems.append(device_problem)
        if check_paths:
            from core.output_folder import output_folder_problems

            problems.extend(_unwritable(self.out_dir) or output_folder_problems(self.out_dir))
        return problems

    def executor_problems(self) -> list[str]:
        """What keeps the configured executor from being built (empty = fine); connects nowhere."""
        if self.executor not in EXECUTORS:
            return [f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)} (IMGDEDUP_EXECUTOR)"]
        if self.executor != "celery":
            return []
        import importlib.util

        if importlib.util.find_spec("dagster_celery") is None:
            return ["executor celery needs dagster-celery: pip install 'imgdedup[distributed]'"]
        if not self.celery_broker_url:
            return ["executor celery needs a broker: set IMGDEDUP_CELERY_BROKER_URL (deploy/README.md)"]
        return []

    def model_problem(self) -> str | None:
        """Why the configured model cannot be loaded (None = fine); reads no weights."""
        if self.embedder not in EMBEDDER_BACKENDS:
            return None  # reported by `problems`
        return model_problem(self.embedder, self.model)


_KIND_NAMES = {int: "a whole number", float: "a number", str: "text"}
_CRON_PATTERN = re.compile(r"[\w*/,-]+(\s+[\w*/,-]+){4}")
_DEVICE_PATTERN = re.compile(r"(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)")


def _parse(kind: type, raw: str):
    """`raw` as `kind`; an int must be written as a whole number (`1e9` and `1.5` are refused)."""
    if kind is int and not re.fullmatch(r"[+-]?\d+", raw.strip().replace("_", "")):
        raise ValueError(raw)
    return kind(raw)


def _device_problem(device: str) -> str | None:
    """A problem when `device` is not a torch device name, or names an accelerator that is absent."""
    if not _DEVICE_PATTERN.fullmatch(device):
        return f"unknown device {device!r}: use cpu, cuda, cuda:N or mps (--device / IMGDEDUP_DEVICE)"
    if device == "cpu":
        return None
    import torch

    backend = device.split(":")[0]
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available, "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}[backend]()
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
