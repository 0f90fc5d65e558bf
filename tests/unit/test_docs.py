"""The reference docs stay in step with the code: every config field and pipeline parameter is
in docs/configuration.md with its current default, every subcommand is in docs/cli.md, and
the README links every page of docs/."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from rlhf import config as config_module
from rlhf.cli import build_parser
from rlhf.pipeline import cluster as cluster_module

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIG_DOC = DOCS / "configuration.md"
CLI_DOC = DOCS / "cli.md"

CONFIG_CLASSES = sorted(
    (
        obj
        for module in (config_module, cluster_module)
        for obj in vars(module).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == module.__name__
    ),
    key=lambda cls: cls.__name__,
)


def _sections(text: str) -> dict[str, dict[str, str]]:
    """Markdown heading -> {name in backticks in a table row's first cell: its second cell}."""
    sections: dict[str, dict[str, str]] = {}
    rows: dict[str, str] = {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code  # a "# comment" in a code block is no heading
        elif in_code:
            continue
        elif line.startswith("#"):
            rows = sections.setdefault(line.lstrip("#").strip(), {})
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            name = re.fullmatch(r"`([^`]+)`", cells[0])
            if name and len(cells) >= 2:
                rows[name.group(1)] = cells[1]
    return sections


def _rows_under(sections: dict[str, dict[str, str]], name: str) -> dict[str, str] | None:
    """The table rows of the sections whose headings name ``name`` in backticks, a later
    section's row winning (a shared table, then one pipeline's own defaults)."""
    found = [rows for heading, rows in sections.items() if f"`{name}`" in heading]
    return {k: v for rows in found for k, v in rows.items()} if found else None


def _matches(cell: str, default: object) -> bool:
    """Whether a table cell shows ``default``: YAML spelling (`true`, `null`, `"drop"`, `{}`),
    numbers compared by value (`3.0e-5` shows 3e-05)."""
    shown = cell.strip().strip("`").strip('"')
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(shown) == float(default)
        except ValueError:
            return False
    return shown == (default if isinstance(default, str) else json.dumps(default))


@pytest.fixture(scope="module")
def config_sections() -> dict[str, dict[str, str]]:
    return _sections(CONFIG_DOC.read_text(encoding="utf-8"))


def test_config_classes_found() -> None:
    names = {cls.__name__ for cls in CONFIG_CLASSES}
    assert {"DemoConfig", "PrepareConfig", "TrainConfig", "SFTConfig", "RewardConfig"} <= names
    assert {"ClusterConfig", "StageResources", "EnvSource"} <= names


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_every_config_field_documented_with_its_default(cls: type, config_sections) -> None:
    """A field is documented in its own class's table or, when inherited unchanged, in the
    table of the class that declares it (TrainConfig for the shared training fields)."""
    problems = []
    for field in dataclasses.fields(cls):
        row = None
        for owner in cls.__mro__:
            rows = _rows_under(config_sections, owner.__name__) or {}
            if field.name in rows:
                row = rows[field.name]
                break
        if row is None:
            problems.append(f"{cls.__name__}.{field.name}: no table row with `{field.name}`")
            continue
        default = field.default
        if default is dataclasses.MISSING:
            continue
        if not _matches(row, default):
            problems.append(
                f"{cls.__name__}.{field.name}: docs say {row}, config.py says {default!r}"
            )
    assert not problems, f"{CONFIG_DOC.name} is out of date:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ["ppo", "dpo", "grpo", "online_dpo", "collect", "kto"])
def test_every_pipeline_parameter_documented_with_its_default(name, config_sections) -> None:
    from rlhf.pipeline.pipelines import PIPELINES

    pipeline = PIPELINES[name]
    # @dsl.pipeline wraps the function; its own signature is (*args, **kwargs).
    fn = getattr(pipeline, "pipeline_func", pipeline)
    heading = f"{name}_pipeline"
    rows = _rows_under(config_sections, heading)
    assert rows is not None, f"{CONFIG_DOC.name}: no section heading with `{heading}`"
    problems = []
    for param_name, param in inspect.signature(fn).parameters.items():
        if param_name not in rows:
            problems.append(f"{param_name}: no table row with `{param_name}`")
        elif param.default is not inspect.Parameter.empty and not _matches(
            rows[param_name], param.default
        ):
            problems.append(
                f"{param_name}: docs say {rows[param_name]}, the pipeline says {param.default!r}"
            )
    assert not problems, f"{CONFIG_DOC.name} is out of date:\n" + "\n".join(problems)


def test_every_subcommand_in_cli_doc() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in sub.choices if f"rlhf {name}" not in text]
    assert not missing, f"{CLI_DOC.name} does not describe: {missing}"


def test_components_readme_lists_every_spec_with_its_image() -> None:
    """components/README.md's table names each generated spec once, with the image it runs in."""
    import yaml

    folder = DOCS.parent / "components"
    rows = re.findall(
        r"^\| `([a-z_]+\.yaml)` \|.*\| (CPU|CUDA) \|$", (folder / "README.md").read_text(), re.M
    )
    listed = dict(rows)
    assert sorted(listed) == sorted(p.name for p in folder.glob("*.yaml"))
    for name, image in listed.items():
        executors = yaml.safe_load((folder / name).read_text())["deploymentSpec"]["executors"]
        (executor,) = executors.values()
        assert executor["container"]["image"].endswith(f"-{image.lower()}"), name


def test_the_readme_links_every_doc() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md's Docs list lacks {unlinked}"
