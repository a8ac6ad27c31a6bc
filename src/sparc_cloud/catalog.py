"""The built-in projects shipped in the package (kept free of heavy imports: `sparc-cloud projects` is fast)."""

from __future__ import annotations

from importlib import resources


def builtin_projects() -> dict[str, str]:
    """Built-in project names -> the first sentence of their opening comment, whole (it may span lines)."""
    out: dict[str, str] = {}
    for entry in resources.files("sparc_cloud.projects").iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name.removesuffix(".toml")] = summary(entry.read_text(encoding="utf-8"))
    return dict(sorted(out.items()))


def summary(text: str) -> str:
    """The first sentence of a TOML file's opening comment block (the comment itself when it has no full stop)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(part for part in lines if part)
    end = comment.find(". ")
    return comment[: end + 1] if end >= 0 else comment


def builtin_text(name: str) -> str:
    """The TOML text of a built-in project."""
    return resources.files("sparc_cloud.projects").joinpath(f"{name}.toml").read_text(encoding="utf-8")
