"""The settings table against what users read: base/settings.env, docs/configuration.md, --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import rediswq
from rediswq.cli.options import SETTINGS, Setting, settings_of
from rediswq.cli.reference import regenerated

REPO = Path(__file__).resolve().parents[2]


def _settings_env() -> dict[str, str]:
    lines = (REPO / "base" / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_settings_env_sets_only_known_settings_to_their_defaults() -> None:
    by_env = {setting.env: setting for setting in SETTINGS}
    for env, value in _settings_env().items():
        assert env in by_env, f"base/settings.env sets {env}, which no command reads"
        assert value == by_env[env].default, f"{env}: {value!r} in settings.env"


def test_every_setting_of_a_deployed_command_is_in_settings_env_or_explained_there() -> None:
    text = (REPO / "base" / "settings.env").read_text()
    deployed = {s.env for s in SETTINGS if s.commands & {"worker", "seed"}}
    # Secrets, and what one Job's args set rather than every pod's environment.
    elsewhere = {"REDIS_PASSWORD", "RUN_ITEMS", "RUN_ID", "HANDLER_BYTES"}
    for env in sorted(deployed - elsewhere):
        assert re.search(rf"^(# )?{env}=", text, re.MULTILINE), f"{env} not in settings.env"


def test_the_configuration_page_is_what_make_docs_writes() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    assert regenerated(page) == page, "docs/configuration.md is stale: run make docs"


def test_the_configuration_page_has_a_row_per_setting_and_per_command() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        assert f"| `{setting.env}` |" in page, setting.env
    for command in ("worker", "seed", "digest", "status", "failed", "results", "local"):
        assert f"| `rediswq {command}` |" in page, command


@pytest.mark.parametrize("command", ["worker", "seed", "status", "failed", "results", "local"])
def test_each_command_lists_exactly_its_own_settings(command: str) -> None:
    shown = rediswq(command, "--help").stdout
    flags = set(re.findall(r"--[a-z0-9-]+", shown))
    own = {s.flag for s in settings_of(command) if s.flag}
    others = {s.flag for s in SETTINGS if s.flag} - own
    assert own <= flags
    assert not others & flags, f"{command} --help shows {sorted(others & flags)}"


def test_every_flag_is_named_once() -> None:
    flags = [s.flag for s in SETTINGS if s.flag]
    envs = [s.env for s in SETTINGS]
    assert len(set(flags)) == len(flags) and len(set(envs)) == len(envs)


def test_every_default_is_a_value_its_parser_takes() -> None:
    setting: Setting
    for setting in SETTINGS:
        for command in setting.commands:
            setting.parse(setting.default_for(command))
