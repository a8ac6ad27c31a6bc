"""`sparc-cloud init NAME`: a commented project file to start from."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from sparc_cloud.errors import ConfigError
from sparc_cloud.safefs import Root


def template() -> str:
    """The commented project file (package data: it names the default models and backends, which are data)."""
    return resources.files("sparc_cloud.templates").joinpath("project.toml.in").read_text(encoding="utf-8")


MAX_NAME = 80  # the project file's own limit on `name` (it names the run folder)


def write_project(name: str, directory: Path) -> Path:
    """Write `<directory>/<name>.toml`; never overwrite (not even through a link left where it goes)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"Project name {name!r}: use letters, digits, '.', '_' and '-' only.")
    if len(name) > MAX_NAME:
        raise ConfigError(f"Project name {name[:20]}... is {len(name)} characters long; a project name has at most "
                          f"{MAX_NAME} (it names the run folder). Choose a shorter name.")
    path = directory / f"{name}.toml"
    try:
        Root(directory).create_new(path.name, template().format(name=name, path=path))
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror}. Check that {directory} is a folder you can write "
                          "to (--dir).") from None
    return path
