"""The built-in projects shipped in the package (kept free of heavy imports: `sparc-cloud projects` is fast)."""

from __future__ import annotations

from importlib import resources


def builtin_projects() -> dict[str, str]:
    """Built-in project names -> their first comment line."""
    out: dict[str, str] = {}
    for entry in resources.files("sparc_cloud.projects").iterdir():
        if entry.name.endswith(".toml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            out[entry.name.removesuffix(".toml")] = first
    return dict(sorted(out.items()))


def builtin_text(name: str) -> str:
    """The TOML text of a built-in project."""
    return resources.files("sparc_cloud.projects").joinpath(f"{name}.toml").read_text(encoding="utf-8")
