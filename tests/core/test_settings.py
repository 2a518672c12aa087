"""One settings model: the flags, the IMGDEDUP_<FIELD> variables and the resources' config keys all
come from `core.settings.Settings`, and an invalid value from any of them is refused in its words."""

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from imgdedup_pipeline import cli
from imgdedup_pipeline.core.settings import FIELDS, Settings, SettingsError, choices, cli_flag, env_var
from imgdedup_pipeline.definitions import model_id_for, resources_for
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource

README = Path(__file__).resolve().parents[2] / "README.md"

# The command-line contract as published: names only ever get added.
FLAGS = {
    "run": {
        "--images",
        "--out",
        "--embedder",
        "--model",
        "--offline-pooling",
        "--lancedb-uri",
        "--duplicate-threshold",
        "--near-duplicate-threshold",
        "--keep-policy",
        "--near-duplicate-action",
        "--max-duplicate-fraction",
        "--hash-threshold-bits",
        "--batch-size",
        "--device",
        "--precision",
        "--runtime",
        "--neighbor-search",
        "--verbose",
    },
    "calibrate": {
        "--images",
        "--out",
        "--embedder",
        "--model",
        "--offline-pooling",
        "--sample",
        "--seed",
        "--target-precision",
        "--hash-threshold-bits",
        "--batch-size",
        "--precision",
        "--force",
    },
    "demo": {"--out", "--embedder", "--max-duplicate-fraction", "--sample-only"},
    "similar": {"--k", "--out"},
    "serve-reports": {"--host", "--port"},
}
# The launchpad keys of each resource that README.md documents or users set.
LAUNCHPAD_KEYS = {
    ImageStoreResource: {"image_root", "max_pixels", "decode_workers", "excluded_folders"},
    EmbeddingModelResource: {
        "backend",
        "model",
        "pooling",
        "offline_pooling",
        "device",
        "precision",
        "batch_size",
        "runtime",
        "export_dir",
    },
    OutputStoreResource: {"out_dir", "report_base_url"},
    DedupPolicyResource: {
        "duplicate_threshold",
        "near_duplicate_threshold",
        "keep_policy",
        "near_duplicate_action",
        "max_duplicate_fraction",
        "hash_threshold_bits",
        "thresholds_file",
        "model_id",
        "calibration_sample_size",
        "calibration_seed",
        "target_precision",
        "neighbor_search",
        "check_turned_copies",
    },
}
# Resource config fields that hold a setting under another name.
RENAMED = {(EmbeddingModelResource, "backend"): "embedder"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


@pytest.mark.parametrize("command", list(FLAGS), ids=list(FLAGS))
def test_every_published_flag_is_kept(command):
    assert FLAGS[command] <= set(options(subcommands()[command]))


@pytest.mark.parametrize(
    "command, names", [("run", cli.RUN_SETTINGS), ("calibrate", cli.CALIBRATE_SETTINGS)], ids=["run", "calibrate"]
)
def test_the_flags_are_generated_from_the_settings_fields(command, names):
    flags = options(subcommands()[command])
    for name in names:
        action = flags[cli_flag(name)]
        assert action.dest == name and action.default is None  # so that IMGDEDUP_<FIELD> applies unless given
        assert action.help.startswith(FIELDS[name].description) and env_var(name) in action.help
        if choices(name):
            assert action.metavar == "{" + ",".join(choices(name)) + "}"


def test_readme_lists_every_flag_and_the_settings_without_one():
    readme = README.read_text()
    synopsis = readme[readme.index("## Command line") : readme.index("`run` materializes")]
    for command, parser in subcommands().items():
        for flag in options(parser):
            assert re.search(rf"{re.escape(flag)}\b", synopsis), f"README's synopsis lacks `imgdedup {command} {flag}`"
    for name in FIELDS:
        if cli_flag(name) is None:
            assert env_var(name) in readme


SAMPLE_TEXT = {
    "device": "mps",
    "dedup_schedule_cron": "5 4 * * *",
    "near_duplicate_threshold": "0.07",
    "model": "a/model",
    "duplicate_threshold": "0.001",
    "shared_storage_uri": "s3://team-bucket/imgdedup",
}


def sample_text(name: str) -> str:
    """A valid value other than the default, as an environment variable would hold it."""
    field = FIELDS[name]
    if name in SAMPLE_TEXT:
        return SAMPLE_TEXT[name]
    if choices(name):
        return next(choice for choice in reversed(choices(name)) if choice != field.default)
    if isinstance(field.default, bool):
        return str(not field.default)
    if isinstance(field.default, int):
        return str(field.default + 1)
    if isinstance(field.default, float):
        return str(field.default / 2)
    return "/some/where"


@pytest.mark.parametrize("name", list(FIELDS), ids=list(FIELDS))
def test_every_setting_is_read_from_its_environment_variable(name):
    text = sample_text(name)
    settings = Settings.from_env({env_var(name): text})
    assert str(getattr(settings, name)) == text or getattr(settings, name) == type(getattr(settings, name))(text)
    assert getattr(settings, name) != FIELDS[name].default


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"IMGDEDUP_KEEP_POLICY": "biggest"},
            "unknown keep policy 'biggest': use one of resolution, first_seen, path (--keep-policy / IMGDEDUP_KEEP_POLICY)",
        ),
        ({"IMGDEDUP_BATCH_SIZE": "abc"}, "IMGDEDUP_BATCH_SIZE='abc' is not a whole number (--batch-size)"),
        (
            {"IMGDEDUP_MAX_DUPLICATE_FRACTION": "1.5"},
            "max_duplicate_fraction must be within [0, 1], got 1.5 (--max-duplicate-fraction / IMGDEDUP_MAX_DUPLICATE_FRACTION)",
        ),
        (
            {"IMGDEDUP_EXECUTOR": "dask"},
            "unknown executor 'dask': use one of in_process, multiprocess, celery (IMGDEDUP_EXECUTOR)",
        ),
        ({"IMGDEDUP_DEVICE": "gpu"}, "unknown device 'gpu': use cpu, cuda, cuda:N or mps (--device / IMGDEDUP_DEVICE)"),
        (
            {"IMGDEDUP_SHARED_STORAGE_URI": "/mnt/nfs/imgdedup"},
            "shared storage '/mnt/nfs/imgdedup' is not an object-storage URI such as s3://bucket/prefix (IMGDEDUP_SHARED_STORAGE_URI)",
        ),
    ],
    ids=["choice", "whole-number", "bounds", "choice-without-flag", "device", "shared-storage"],
)
def test_an_invalid_environment_variable_is_named_with_what_is_allowed(environment, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environment)
    assert raised.value.problems == [message]


def test_every_invalid_value_is_reported_at_once():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"IMGDEDUP_KEEP_POLICY": "biggest", "IMGDEDUP_BATCH_SIZE": "0"})
    assert len(raised.value.problems) == 2


def test_a_flag_wins_over_the_environment(tmp_path):
    args = cli.build_parser().parse_args(["run", "--images", str(tmp_path), "--out", "out", "--batch-size", "4"])
    settings = Settings.load(
        {"IMGDEDUP_BATCH_SIZE": "abc", "IMGDEDUP_KEEP_POLICY": "path"},
        **{name: getattr(args, name) for name in args.settings_fields},
    )
    assert (settings.batch_size, settings.keep_policy, settings.out_dir) == (4, "path", str(Path("out").resolve()))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--keep-policy", "biggest"],
            "argument --keep-policy: invalid choice: 'biggest': unknown keep policy 'biggest': use one of resolution, first_seen, path",
        ),
        (["--batch-size", "1.5"], "argument --batch-size: '1.5' is not a whole number"),
        (
            ["--hash-threshold-bits", "33"],
            "argument --hash-threshold-bits: hash_threshold_bits must be within [0, 32], got 33",
        ),
    ],
    ids=["choice", "whole-number", "bounds"],
)
def test_an_invalid_flag_exits_2_before_any_work(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), *flags])
    assert exited.value.code == cli.EXIT_CONFIG == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_settings_that_contradict_each_other_exit_2_naming_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGDEDUP_EMBEDDER", "offline")
    assert cli.main(["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--model", "x/y"]) == 2
    assert (
        capsys.readouterr().err
        == "config error: --model applies to the hf embedder only; drop it or use --embedder hf\n"
    )


def test_a_copy_is_validated_too():
    with pytest.raises(SettingsError, match="unknown keep policy 'x'"):
        dataclasses.replace(Settings(), keep_policy="x")


@pytest.mark.parametrize("resource", list(LAUNCHPAD_KEYS), ids=[r.__name__ for r in LAUNCHPAD_KEYS])
def test_resource_config_keys_take_the_settings_definitions(resource):
    assert LAUNCHPAD_KEYS[resource] <= set(resource.model_fields)
    config_fields = resource.to_config_schema().as_field().config_type.fields
    for key, field in resource.model_fields.items():
        name = RENAMED.get((resource, key), key)
        if name not in FIELDS:
            continue
        assert (
            field.description == FIELDS[name].description and config_fields[key].description == FIELDS[name].description
        )
        if field.is_required() or key == "report_base_url":  # a path the deployment must give; "" = no link
            continue
        assert field.default == FIELDS[name].default


@pytest.mark.parametrize(
    ("resource", "config", "message"),
    [
        (DedupPolicyResource, {"keep_policy": "biggest"}, "Input should be 'resolution', 'first_seen' or 'path'"),
        (DedupPolicyResource, {"max_duplicate_fraction": 1.5}, "less than or equal to 1"),
        (EmbeddingModelResource, {"pooling": "max"}, "Input should be 'cls' or 'mean'"),
        (EmbeddingModelResource, {"device": "gpu"}, "unknown device 'gpu'"),
        (ImageStoreResource, {"image_root": "/x", "max_pixels": 0}, "greater than 0"),
    ],
    ids=["choice", "bounds", "pooling", "device", "pixels"],
)
def test_invalid_resource_config_is_refused_by_the_same_rules(resource, config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resource(**config)


def test_pooling_is_a_setting_and_the_policy_fixes_no_model_id(tmp_path):
    args = cli.build_parser().parse_args(
        ["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--pooling", "mean"]
    )
    settings = cli.settings_from_args(args)
    resources = resources_for(settings)
    assert resources["embedding_model"].pooling == "mean" and model_id_for(settings).endswith("#mean")
    # The model id of a run is the vectors' one: a launchpad change of the embedding model's
    # config (pooling, precision, model) needs no matching change of the policy's.
    assert resources["policy"].model_id is None
    assert Settings.from_env({"IMGDEDUP_POOLING": "mean"}).pooling == "mean"


@pytest.mark.parametrize(
    "uri", ["s3://", "s3://Upper_Case/x", "s3:/bucket", "gs://bucket/x", "s3://bucket/with space", "file:///tmp/x"]
)
def test_shared_storage_must_be_an_s3_uri(uri):
    with pytest.raises(SettingsError, match="IMGDEDUP_SHARED_STORAGE_URI"):
        Settings(shared_storage_uri=uri)


def test_the_vector_table_follows_the_shared_storage_unless_lancedb_uri_names_another(tmp_path):
    local = Settings(out_dir=str(tmp_path))
    shared = local.with_overrides(shared_storage_uri="s3://team-bucket/imgdedup/")
    assert local.vector_store_uri == str(tmp_path / "state" / "lancedb")
    assert shared.shared_storage_uri == "s3://team-bucket/imgdedup"  # one spelling, no trailing slash
    assert shared.vector_store_uri == "s3://team-bucket/imgdedup/lancedb"
    assert shared.with_overrides(lancedb_uri="s3://vectors/t").vector_store_uri == "s3://vectors/t"
    assert local.thresholds_file == str(tmp_path / "state" / "thresholds.json")
    assert shared.thresholds_file == "s3://team-bucket/imgdedup/state/thresholds.json"  # every worker scores with it


def test_offline_pooling_is_a_setting_with_its_own_model_id(tmp_path):
    from imgdedup_pipeline.core.embedders import OFFLINE_BACKBONE_ID, OFFLINE_MODEL_ID

    base = ["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--embedder", "offline"]
    default = cli.settings_from_args(cli.build_parser().parse_args(base))
    assert default.offline_pooling == "max-luma" and model_id_for(default) == OFFLINE_MODEL_ID
    average = cli.settings_from_args(cli.build_parser().parse_args([*base, "--offline-pooling", "avg"]))
    assert resources_for(average)["embedding_model"].offline_pooling == "avg"
    assert model_id_for(average) == OFFLINE_BACKBONE_ID  # the id the offline vectors had before
    assert Settings.from_env({"IMGDEDUP_OFFLINE_POOLING": "avg"}).offline_pooling == "avg"
