"""The DVC graph cannot go stale: each stage depends on every file its code imports, and on
exactly the params that change its outputs."""
from __future__ import annotations

import ast
import json
import pathlib
import re

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("components", "pipeline")  # the repository's own code; everything else is an installed package


def module_path(module: str, root: pathlib.Path = REPO) -> pathlib.Path | None:
    """The file of ``module`` in the repository (a module or a package's ``__init__.py``), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: pathlib.Path, module: str) -> set[str]:
    """Every module ``path`` imports anywhere (top level or inside functions), as absolute names.

    ``from a.b import c`` yields ``a.b`` and, when ``c`` is a submodule, ``a.b.c`` too.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_closure(module: str, root: pathlib.Path = REPO) -> set[pathlib.Path]:
    """The repository files that importing ``module`` can execute, package ``__init__``s included."""
    seen: set[pathlib.Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name.split(".")[0] not in PACKAGES:
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:depth])
            path = module_path(prefix, root)
            if path is not None and path not in seen:
                seen.add(path)
                pending.extend(imported_modules(path, prefix))
    return seen


PIPELINES = ("dvc.yaml", "zoo/paper/dvc.yaml", "zoo/cpu/dvc.yaml")  # components.experiments.EXPERIMENT_SETS


def stages() -> dict[str, dict]:
    """The stages of every pipeline (``zoo/cpu/dvc.yaml:train``), ``foreach`` ones by their ``do`` body."""
    found = {}
    for pipeline in PIPELINES:
        document = yaml.safe_load((REPO / pipeline).read_text())
        prefix = "" if pipeline == "dvc.yaml" else f"{pipeline}:"
        found.update({prefix + name: stage.get("do", stage) for name, stage in document["stages"].items()})
    return found


def test_the_pipelines_are_the_experiment_sets():
    from components.experiments import EXPERIMENT_SETS

    assert PIPELINES == tuple(s.pipeline for s in EXPERIMENT_SETS)


def stage_module(stage: dict) -> str:
    match = re.match(r"python -m (pipeline\.\w+)\b", stage["cmd"])
    assert match, f"dvc.yaml: a stage command should be `python -m pipeline.<stage> ...`, got {stage['cmd']!r}"
    return match.group(1)


def code_deps(stage: dict) -> list[pathlib.Path]:
    deps = [next(iter(dep)) if isinstance(dep, dict) else dep for dep in stage.get("deps", [])]
    return [REPO / dep for dep in deps if dep.split("/")[0] in PACKAGES]


def test_every_stage_depends_on_every_file_its_code_imports():
    problems = []
    for name, stage in stages().items():
        deps = code_deps(stage)
        closure = import_closure(stage_module(stage))
        for path in sorted(closure):
            if not any(path == dep or dep in path.parents for dep in deps):
                problems.append(f"stage {name}: {path.relative_to(REPO)} is imported but not a dependency")
        for dep in deps:
            if not any(path == dep or dep in path.parents for path in closure):
                problems.append(f"stage {name}: dependency {dep.relative_to(REPO)} holds no imported file")
    assert not problems, "dvc.yaml is out of step with the code:\n" + "\n".join(problems)


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The oracle above is itself tested: a lazy import, a relative import, a package __init__."""
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "components" / "sub").mkdir(parents=True)
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "stage.py").write_text("def main():\n    from components.sub import leaf\n")
    (tmp_path / "components" / "__init__.py").write_text("")
    (tmp_path / "components" / "sub" / "__init__.py").write_text("from . import helper\n")
    (tmp_path / "components" / "sub" / "helper.py").write_text("import os\n")
    (tmp_path / "components" / "sub" / "leaf.py").write_text("x = 1\n")
    (tmp_path / "components" / "unused.py").write_text("x = 1\n")
    closure = {p.relative_to(tmp_path).as_posix() for p in import_closure("pipeline.stage", tmp_path)}
    assert closure == {"pipeline/__init__.py", "pipeline/stage.py", "components/__init__.py",
                       "components/sub/__init__.py", "components/sub/helper.py", "components/sub/leaf.py"}


@pytest.mark.slow
def test_prepare_reruns_for_the_params_that_change_the_shards_and_only_those(tmp_path):
    """The shards are the same bytes on any runner, worker count, read parts or block size
    (tests/test_prepare.py), so changing those must leave `dvc status` clean."""
    from tests.test_dvc_pipeline import make_repo_copy, sh

    copy = make_repo_copy(tmp_path / "repo")
    sh("dvc", "repro", "prepare", cwd=copy)
    original = (copy / "params.yaml").read_text()

    def stale_after(key: str, value) -> list[str]:
        params = yaml.safe_load(original)
        params["prepare"][key] = value
        (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        status = json.loads(sh("dvc", "status", "--json", "prepare", cwd=copy).stdout or "{}")
        (copy / "params.yaml").write_text(original)
        return sorted(status)

    for key, value in (("runner", "DaskRunner"), ("direct_num_workers", 2), ("block_size", 77),
                       ("direct_running_mode", "multi_processing"), ("read_parts", 3)):
        assert stale_after(key, value) == [], key
    everything = ["prepare@cifar10", "prepare@fashion_mnist"]
    for key, value in (("validation_fraction", 0.2), ("seed", 1), ("num_shards", {"train": 3, "validation": 1, "test": 1}),
                       ("source", "archive"), ("max_rejected", 5),
                       ("synthetic", {"train_examples": 321, "test_examples": 96, "seed": 0})):
        assert stale_after(key, value) == everything, key


def as_set(stage: dict, section: str, root: str) -> dict:
    """The default pipeline's ``stage`` (a foreach body or its ``foreach``) rewritten for set
    ``section`` with outputs under ``root``: what the zoo pipelines must declare."""
    text = json.dumps(stage).replace("${experiments}", "${%s}" % section).replace("experiments.${key}", f"{section}.${{key}}")
    text = text.replace('"${train.models_dir}/${key}', f'"{root}/${{train.models_dir}}/${{key}}')
    text = re.sub(r'"(metrics|plots)/\$\{key\}', lambda m: f'"{root}/{m.group(1)}/${{key}}', text)
    return json.loads(text)


@pytest.mark.parametrize("pipeline", PIPELINES[1:])
def test_the_zoo_pipelines_run_the_default_train_and_evaluate_stages(pipeline):
    """zoo/*/dvc.yaml repeat dvc.yaml's train and evaluate stages over their own params section,
    from the repository root, with their outputs under their own root: same deps, same params."""
    from components.experiments import EXPERIMENT_SETS

    chosen = next(s for s in EXPERIMENT_SETS if s.pipeline == pipeline)
    default = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    document = yaml.safe_load((REPO / pipeline).read_text())
    assert document["vars"] == ["../../params.yaml"]
    for name in ("train", "evaluate"):
        stage = dict(document["stages"][name])
        body = dict(stage.pop("do"))
        assert body.pop("wdir") == "../.."
        expected = as_set(default[name], chosen.section, chosen.root)
        assert stage["foreach"] == expected["foreach"]
        assert body == expected["do"], f"{pipeline}:{name} differs from dvc.yaml's {name} stage"
    report = document["stages"]["report"]
    assert report["cmd"] == f"python -m pipeline.zoo_report --set {chosen.section}" and report["wdir"] == "../.."
    assert f"{chosen.root}/reports/summary.md" in json.dumps(report["outs"])
