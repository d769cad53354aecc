"""The GPU check: ``python -m pipeline.gpu_check {build,run,report}`` (``make gpu-check``: build, then a quick run here).

* ``build`` assembles ``build/gpu-check/`` (git-ignored), what a device call carries beside
  the working tree: the wheels the GPU machine lacks (Keras 3.15.1 for Python 3.12 and
  the packages it and our code import that are not there), the CIFAR-10 JPEG copy
  (Fashion-MNIST's too with ``--fashion-mnist``), ``manifest.json`` (sha256 of every
  carried file, and of the decoded pixels and labels as our canonical archive holds
  them) and ``run.sh``. It checks that everything that travels stays under the 64 MiB a
  call carries and prints the command to run there.
* ``run`` makes the carried wheels importable when the machine lacks them (``pip install
  --no-index --no-deps --target``), chooses Keras' JAX backend, and runs
  :func:`components.benchmarks.gpu_check.run_check`: ``<out>/gpu_check.json``, written
  after every section. ``--quick``: tiny budgets for this machine's CPU, marked
  ``"quick": true``. ``--as-gpu-machine``: hide every installed package the GPU machine
  does not have (nor the bundle carries), so a run here proves nothing else is needed.
* ``report`` prints the README's markdown table from a GPU run's JSON (refuses quick or
  CPU results).

Only the standard library is imported at the top: on the GPU machine ``run`` must start
before Keras is importable.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.abc
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLE = pathlib.Path("build/gpu-check")  # relative to the repository root, as `carry` names it
SHARED = REPO.parent / "shared" / "datasets"
CANONICAL_CIFAR10 = REPO / "data" / "raw" / "cifar10" / "cifar-10-binary.tar.gz"
CIFAR10_JPEG = pathlib.Path("cifar10-jpeg") / "cifar10-jpeg.tar.gz"  # under SHARED
FASHION_MNIST = pathlib.Path("fashion-mnist")  # under SHARED

LIMIT_BYTES = 64 * 2 ** 20  # a device call carries the working tree and carried paths up to 64 MiB
COMMAND_TIMEOUT_S = 480  # the GPU machine's 8 minutes a command

# The GPU machine's Python and the wheel tags it takes (x86-64, glibc 2.17 and later).
TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64", "manylinux1_x86_64")

# What travels as wheels: Keras and those of its requirements the GPU machine lacks (namex,
# optree; see `pip show keras`), and google-crc32c, which our code imports on every path
# (components.inputs -> shards -> components.data.schema). Versions: constraints.txt's pins.
CARRIED = ("keras", "namex", "optree", "google-crc32c")

# Python packages on the GPU machine (its 'cuda' image), as /work/.library/device/KINDS.md
# listed them on 2026-11-17: no TensorFlow, no Keras.
GPU_MACHINE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
PROJECT = "cnn-zoo-pipeline"  # this checkout, which travels as the working tree

# What `run` imports after the wheels are in place (the lazy imports of the library included),
# for `check-imports`.
RUNTIME_MODULES = ("keras", "jax", "PIL.Image", "components.backend", "components.benchmarks.gpu_check",
                   "components.config", "components.inputs.device", "components.inputs.normalization",
                   "components.models", "components.models.summary", "components.training.config",
                   "components.training.schedules")


class BuildError(RuntimeError):
    """The bundle cannot be built or would not travel; the message names the file and the problem."""


def normalize(name: str) -> str:
    """A distribution name in its canonical form (PEP 503: lower case, runs of -_. as -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def mib(count: int) -> str:
    return f"{count / 2 ** 20:.1f} MiB"


# =========================================================================== wheels
def read_pins(constraints: pathlib.Path, names=CARRIED) -> dict[str, str]:
    """``name -> version`` for ``names`` from a constraints file of ``name==version`` lines."""
    pins = {}
    for line in constraints.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    missing = [name for name in names if normalize(name) not in pins]
    if missing:
        raise BuildError(f"{constraints}: no name==version pin for {missing}")
    return {name: pins[normalize(name)] for name in names}


def wheel_name_matches(path: pathlib.Path, name: str, version: str) -> bool:
    """Whether ``path`` is a wheel of distribution ``name`` at ``version`` (wheel names use ``_`` for ``-``)."""
    parts = path.name.split("-")
    return path.suffix == ".whl" and len(parts) >= 5 and normalize(parts[0]) == normalize(name) \
        and parts[1] == version


def collect_wheels(directory: pathlib.Path, pins: dict[str, str], wheels_from: pathlib.Path | None = None,
                   log=print) -> list[pathlib.Path]:
    """One wheel per pinned distribution in ``directory``: kept when already there, copied from
    ``wheels_from`` when given, else fetched with ``pip download`` (binary only, for the GPU
    machine's Python 3.12 on manylinux x86-64, no dependencies: each needed one is pinned
    itself). Wheels of other versions are removed (two versions would stop the install)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name, version in pins.items():
        for stale in directory.glob("*.whl"):
            if normalize(stale.name.split("-")[0]) == normalize(name) and not wheel_name_matches(stale, name, version):
                stale.unlink()
        found = [p for p in directory.glob("*.whl") if wheel_name_matches(p, name, version)]
        if not found and wheels_from is not None:
            for source in pathlib.Path(wheels_from).glob("*.whl"):
                if wheel_name_matches(source, name, version):
                    shutil.copy2(source, directory / source.name)
            found = [p for p in directory.glob("*.whl") if wheel_name_matches(p, name, version)]
        if not found and wheels_from is None:
            pip_download(f"{name}=={version}", directory, log)
            found = [p for p in directory.glob("*.whl") if wheel_name_matches(p, name, version)]
        if len(found) != 1:
            raise BuildError(f"{directory}: expected one wheel of {name}=={version} for Python {TARGET_PYTHON} "
                             f"manylinux x86-64, found {[p.name for p in found] or 'none'}"
                             + (f" (looked in {wheels_from})" if wheels_from else ""))
        wheels.append(found[0])
    return wheels


def pip_download(requirement: str, directory: pathlib.Path, log=print) -> None:
    """``pip download`` one wheel for the GPU machine (this machine reaches the registry; that one does not)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", TARGET_PYTHON, "--implementation", "cp", "--dest", str(directory)]
    for tag in TARGET_PLATFORMS:
        command += ["--platform", tag]
    log(f"[gpu-check] pip download {requirement}")
    done = subprocess.run(command + [requirement], capture_output=True, text=True)
    if done.returncode:
        raise BuildError(f"pip download {requirement} failed (exit {done.returncode}):\n{done.stderr.strip()}")


def wheel_requirements(wheel: pathlib.Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(metadata) != 1:
            raise BuildError(f"{wheel}: expected one .dist-info/METADATA, found {metadata}")
        text = archive.read(metadata[0]).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def unmet_requirements(wheels: list[pathlib.Path], available: set[str]) -> list[str]:
    """Requirements of ``wheels`` (extras skipped, markers evaluated for Python 3.12 on Linux) that neither
    the GPU machine nor the bundle provides, as ``"wheel: requirement"``. Versions are not compared:
    the machine's are newer than any lower bound Keras sets."""
    from packaging.requirements import Requirement

    environment = {"python_version": TARGET_PYTHON, "python_full_version": f"{TARGET_PYTHON}.3",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                   "implementation_name": "cpython", "os_name": "posix", "extra": ""}
    unmet = []
    for wheel in wheels:
        for line in wheel_requirements(wheel):
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if normalize(requirement.name) not in available:
                unmet.append(f"{wheel.name}: {line}")
    return unmet


# =========================================================================== sizes
def git_files(repo: pathlib.Path, *flags: str) -> list[str]:
    """``git ls-files -z`` with ``flags`` in ``repo``: paths relative to it."""
    done = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *flags], capture_output=True)
    if done.returncode:
        raise BuildError(f"{repo}: git ls-files failed: {done.stderr.decode().strip()} (is it a git checkout?)")
    return [path for path in done.stdout.decode().split("\0") if path]


def tree_bytes(repo: pathlib.Path) -> dict[str, int]:
    """Bytes of what a device call sends besides carried paths: tracked files (as they are on disk;
    deleted ones send nothing), untracked files git does not ignore, and a ``shared/`` folder in the
    checkout. Links count as links."""
    def size(relative: str) -> int:
        try:
            return os.lstat(repo / relative).st_size
        except FileNotFoundError:
            return 0

    sizes = {"tracked": sum(size(p) for p in git_files(repo)),
             "untracked": sum(size(p) for p in git_files(repo, "--others", "--exclude-standard"))}
    if (repo / "shared").is_dir():  # travels even where git ignores it; its other files are counted above
        sizes["shared"] = sum(size(p) for p in git_files(repo, "--others", "--ignored", "--exclude-standard",
                                                         "--", "shared"))
    return sizes


def check_size(parts: dict[str, int], limit: int = LIMIT_BYTES) -> int:
    """The total of ``parts`` (name -> bytes); BuildError listing them when it is over ``limit``."""
    total = sum(parts.values())
    if total > limit:
        detail = ", ".join(f"{name} {mib(count)}" for name, count in sorted(parts.items(), key=lambda kv: -kv[1]))
        raise BuildError(f"what a device call would carry is {mib(total)}, over its {mib(limit)} limit ({detail}); "
                         "build without --fashion-mnist, or ignore or remove large untracked files")
    return total


# =========================================================================== build
RUN_SH = """#!/usr/bin/env bash
# The GPU check on the device machine (python -m pipeline.gpu_check build wrote this).
# usage: bash build/gpu-check/run.sh [run options]   -> $OUT/gpu_check.json, $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-build/gpu-check-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pipeline.gpu_check run --bundle build/gpu-check --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
"""


def copy_data(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copy a data file into the bundle (writable there, whatever its mode in ../shared)."""
    if not source.is_file():
        raise BuildError(f"{source}: missing (see ../shared/datasets/README.md)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def cifar10_decoded_digests(canonical: pathlib.Path, jpeg: pathlib.Path, log=print) -> tuple[dict, str]:
    """The decoded CIFAR-10 digests the GPU side must reproduce, and where they came from: our canonical
    archive when it exists (the pixels our runs train on), else the JPEGs decoded here."""
    from components.benchmarks import gpu_check as check

    if canonical.is_file():
        return check.canonical_archive_digests(canonical), str(canonical.relative_to(REPO)
                                                               if canonical.is_relative_to(REPO) else canonical)
    log(f"[gpu-check] {canonical} not found: digests from decoding {jpeg}")
    return check.cifar10_digests(check.decode_cifar10_jpeg(jpeg)), f"decoded {jpeg.name}"


def bundle_data(out: pathlib.Path, shared: pathlib.Path, canonical: pathlib.Path, fashion_mnist: bool,
                log=print) -> dict:
    """Copy the data sets into ``out/data`` and return the manifest's ``datasets`` entry: where each is
    and the digests of its decoded pixels and labels."""
    from components.benchmarks import gpu_check as check

    jpeg = out / "data" / "cifar10-jpeg.tar.gz"
    copy_data(shared / CIFAR10_JPEG, jpeg)
    digests, source = cifar10_decoded_digests(canonical, jpeg, log)
    datasets = {"cifar10": {"archive": "data/cifar10-jpeg.tar.gz", "decoded": digests, "digest_source": source}}
    if fashion_mnist:
        directory = out / "data" / "fashion-mnist"
        for images, labels in check.FASHION_MNIST_FILES.values():
            for name in (images, labels):
                copy_data(shared / FASHION_MNIST / name, directory / name)
        datasets["fashion_mnist"] = {"directory": "data/fashion-mnist",
                                     "decoded": check.fashion_mnist_digests(directory)}
    return datasets


def git_state(repo: pathlib.Path) -> dict:
    """The commit the bundle was built from and whether the working tree differed from it."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    return {"commit": head.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}


def build(*, repo: pathlib.Path = REPO, out: pathlib.Path | None = None, shared: pathlib.Path = SHARED,
          canonical: pathlib.Path = CANONICAL_CIFAR10, fashion_mnist: bool = False,
          wheels_from: pathlib.Path | None = None, check_imports: bool = True, limit: int = LIMIT_BYTES,
          log=print) -> dict:
    """Assemble the bundle in ``out`` (default ``<repo>/build/gpu-check``) and return its manifest."""
    from components.benchmarks import gpu_check as check

    out = out or repo / BUNDLE
    out.mkdir(parents=True, exist_ok=True)
    # A fresh bundle, but for the wheels: they stay as a cache, so a rebuild needs no registry.
    shutil.rmtree(out / "data", ignore_errors=True)
    (out / check.MANIFEST_FILE).unlink(missing_ok=True)
    pins = read_pins(repo / "constraints.txt")
    wheels = collect_wheels(out / "wheels", pins, wheels_from, log)
    unmet = unmet_requirements(wheels, set(GPU_MACHINE_PACKAGES) | {normalize(n) for n in pins})
    if unmet:
        raise BuildError("the GPU machine lacks what these carried wheels require; add them to CARRIED "
                         "(and constraints.txt):\n  " + "\n  ".join(unmet))

    datasets = bundle_data(out, shared, canonical, fashion_mnist, log)
    (out / "run.sh").write_text(RUN_SH)
    (out / "run.sh").chmod(0o755)

    files = {path.relative_to(out).as_posix(): {"bytes": path.stat().st_size, "sha256": check.sha256_file(path)}
             for path in sorted(out.rglob("*")) if path.is_file() and path.name != check.MANIFEST_FILE}
    manifest = {"schema": check.SCHEMA, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git": git_state(repo), "target": {"python": TARGET_PYTHON, "platforms": list(TARGET_PLATFORMS)},
                "carried": {name: version for name, version in pins.items()},
                "wheels": [f"wheels/{wheel.name}" for wheel in wheels], "files": files, "datasets": datasets}
    text = json.dumps(manifest, indent=2) + "\n"
    parts = {**{f"working tree ({name})": count for name, count in tree_bytes(repo).items()},
             "bundle": sum(entry["bytes"] for entry in files.values()) + len(text) + 200}  # + the size entry
    total = check_size(parts, limit)
    manifest["size"] = {"parts_bytes": parts, "total_bytes": total, "limit_bytes": limit}
    (out / check.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if check_imports:
        check_gpu_machine_imports(repo, log)
    return manifest


def check_gpu_machine_imports(repo: pathlib.Path = REPO, log=print) -> list[str]:
    """Import what ``run`` imports in a fresh interpreter that sees only the GPU machine's packages
    and the carried ones; BuildError naming the module when something else is needed."""
    done = subprocess.run([sys.executable, "-m", "pipeline.gpu_check", "check-imports"], cwd=repo,
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"})
    if done.returncode:
        raise BuildError("run would import a package the GPU machine lacks (or TensorFlow):\n"
                         + (done.stderr.strip().splitlines() or ["(no output)"])[-1])
    modules = json.loads(done.stdout.strip().splitlines()[-1])["third_party"]
    log(f"[gpu-check] imports checked as on the GPU machine: {', '.join(modules)}")
    return modules


def print_instructions(manifest: dict, out: pathlib.Path, log=print) -> None:
    """The bundle's size and the exact device call to make."""
    size = manifest["size"]
    parts = ", ".join(f"{name} {mib(count)}" for name, count in size["parts_bytes"].items())
    log(f"[gpu-check] bundle {out}: {len(manifest['files'])} files; carried with the working tree: "
        f"{mib(size['total_bytes'])} of {mib(size['limit_bytes'])} ({parts})")
    log("[gpu-check] on the GPU machine, one device `run` call:")
    log(json.dumps({"command": "bash build/gpu-check/run.sh", "carry": [BUNDLE.as_posix()],
                    "timeout_s": COMMAND_TIMEOUT_S}))
    log("[gpu-check] (the same as: python3 -m pipeline.gpu_check run --bundle build/gpu-check --out \"$OUT\"); "
        "then here: python -m pipeline.gpu_check report <files_at>/gpu_check.json")


# =========================================================================== run
class _HiddenPackages(importlib.abc.MetaPathFinder):
    """Makes the import of the listed top-level modules fail, as it would where they are not installed."""

    def __init__(self, modules: set[str]):
        self.modules = modules

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.modules:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not on the GPU machine)", name=name)
        return None


def hide_packages_missing_on_gpu_machine(carried=CARRIED) -> set[str]:
    """Hide every installed distribution's modules that neither the GPU machine, the bundle nor this
    project provides (call before importing anything else); returns the hidden top-level names."""
    allowed = set(GPU_MACHINE_PACKAGES) | {normalize(name) for name in carried} | {PROJECT}
    hidden = {module for module, dists in importlib.metadata.packages_distributions().items()
              if not any(normalize(dist) in allowed for dist in dists)}
    hidden -= set(sys.stdlib_module_names)
    already = sorted(m for m in hidden if m in sys.modules)
    if already:
        raise BuildError(f"cannot hide {already}: already imported")
    sys.meta_path.insert(0, _HiddenPackages(hidden))
    return hidden


def carried_versions_present(manifest: dict) -> bool:
    """Whether every carried distribution is importable here at the manifest's version."""
    for name, version in manifest.get("carried", {}).items():
        try:
            if importlib.metadata.version(name) != version:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


def install_wheels(bundle: pathlib.Path, manifest: dict, site: pathlib.Path | None = None, log=print) -> pathlib.Path:
    """``pip install --no-index --no-deps`` the bundle's wheels into ``site`` (default: a folder under the
    temp dir named after their digests, reused when complete) and put it first on ``sys.path``."""
    key = hashlib.sha256("".join(manifest["files"][w]["sha256"] for w in manifest["wheels"]).encode()).hexdigest()
    site = site or pathlib.Path(tempfile.gettempdir()) / f"gpu-check-site-{key[:12]}"
    marker = site / ".complete"
    if not marker.exists():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(site), *[str(bundle / w) for w in manifest["wheels"]]]
        log(f"[gpu-check] installing {len(manifest['wheels'])} carried wheels into {site}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise BuildError(f"{bundle}/wheels: pip install failed (exit {done.returncode}):\n{done.stderr.strip()}")
        marker.touch()
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return site


def ensure_carried_packages(bundle: pathlib.Path, manifest: dict, log=print) -> str:
    """Make the carried packages importable at their versions: already installed, or from the wheels."""
    if carried_versions_present(manifest):
        return "installed"
    site = install_wheels(bundle, manifest, log=log)
    if not carried_versions_present(manifest):
        found = {name: _version_or_none(name) for name in manifest["carried"]}
        raise BuildError(f"{site}: after installing the wheels the versions are {found}, "
                         f"expected {manifest['carried']}")
    return str(site)


def _version_or_none(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run(args) -> int:
    """``run``: make Keras importable, choose JAX, run the check, print a summary."""
    started = time.monotonic()  # the deadline counts the wheel install too
    if args.as_gpu_machine:
        hide_packages_missing_on_gpu_machine()
    bundle = _absolute(args.bundle)
    from components.benchmarks import gpu_check as check  # stdlib and NumPy only at import

    manifest = check.load_manifest(bundle)
    packages = ensure_carried_packages(bundle, manifest)
    from components.backend import activate_backend

    activate_backend("jax")
    options = run_options(args, check)
    deadline = check.Deadline(options.deadline_s)
    deadline.started = started
    out = _absolute(args.out or os.environ.get("OUT") or "build/gpu-check-out")
    print(f"[gpu-check] carried packages: {packages}; results -> {out / check.RESULT_FILE}", flush=True)
    results = check.run_check(bundle, out, options, log=lambda line: print(line, flush=True), deadline=deadline)
    for line in summary_lines(results):
        print(line)
    return 0


def run_options(args, check):
    """RunOptions from the command line: the quick or full defaults, with what was given explicitly."""
    given = {"deadline_s": args.deadline_s, "batch_size": args.batch_size, "tta_budget_s": args.tta_budget_s,
             "zoo_dataset": args.zoo_dataset, "decode_workers": args.decode_workers,
             "sections": tuple(args.sections.split(",")) if args.sections else None,
             "zoo_models": tuple(args.zoo_models.split(",")) if args.zoo_models else None,
             "precisions": tuple(args.precisions.split(",")) if args.precisions else None}
    given = {key: value for key, value in given.items() if value is not None}
    unknown = set(given.get("sections", ())) - set(check.RunOptions().sections)
    if unknown:
        raise BuildError(f"--sections: unknown {sorted(unknown)}; known: {', '.join(check.RunOptions().sections)}")
    return check.RunOptions.quick_defaults(**given) if args.quick else check.RunOptions(**given)


def summary_lines(results: dict) -> list[str]:
    """A few lines for the console (the device call returns the end of the output)."""
    lines = [f"[gpu-check] {results.get('status')} in {results.get('elapsed_s')} s on {results.get('device')}"
             + (" (quick: not GPU figures)" if results.get("quick") else "")]
    for policy, entry in (results.get("resnet20") or {}).get("by_precision", {}).items():
        lines.append(f"  resnet20 {policy:15s} {entry.get('images_per_s', entry.get('status'))} img/s")
    section = results.get("input") or {}
    if "images_per_s" in section:
        lines.append(f"  input {section['images_per_s']} img/s = {section.get('input_over_train')}x training")
    section = results.get("time_to_accuracy") or {}
    lines.append(f"  time_to_accuracy {section.get('model', '')} {section.get('status')}: "
                 f"test {section.get('test_accuracy')} / flip {section.get('test_accuracy_flip')} after "
                 f"{section.get('train_time_s')} s")
    zoo = (results.get("zoo") or {}).get("models", {})
    done = [name for name, entry in zoo.items() if entry.get("status") == "ok"]
    lines.append(f"  zoo: {len(done)} of {len(zoo)} models run")
    return lines


def _absolute(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    return path if path.is_absolute() else pathlib.Path.cwd() / path


# =========================================================================== check-imports, report
def check_imports_command() -> int:
    """``check-imports``: import what ``run`` imports with the GPU machine's packages only; print the
    third-party distributions loaded, as JSON (for ``build``)."""
    hide_packages_missing_on_gpu_machine()
    from components.backend import activate_backend

    activate_backend("jax")
    for module in RUNTIME_MODULES:
        importlib.import_module(module)
    if "tensorflow" in sys.modules:
        raise BuildError("tensorflow was imported")
    distributions = importlib.metadata.packages_distributions()
    loaded = sorted({normalize(d) for m in list(sys.modules) for d in distributions.get(m.partition(".")[0], ())}
                    - {PROJECT})
    print(json.dumps({"third_party": loaded}))
    return 0


def report(args) -> int:
    """``report``: the README's markdown from a GPU run's gpu_check.json."""
    from components.benchmarks import gpu_check as check

    path = pathlib.Path(args.results)
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise check.GpuCheckError(f"{path}: cannot read results ({error})") from None
    print(check.render_markdown(results, str(path)), end="")
    return 0


# =========================================================================== command line
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m pipeline.gpu_check", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="{build,run,report}")

    build_args = commands.add_parser("build", help="assemble build/gpu-check/ and print the device command")
    build_args.add_argument("--fashion-mnist", action="store_true", help="carry Fashion-MNIST too (30 MB)")
    build_args.add_argument("--wheels-from", type=pathlib.Path, help="copy the wheels from here instead of pip")
    build_args.add_argument("--skip-import-check", action="store_true")

    run_args = commands.add_parser("run", help="the check itself (on the GPU machine, or --quick here)")
    run_args.add_argument("--bundle", default=str(BUNDLE))
    run_args.add_argument("--out", help="results folder (default: $OUT, else build/gpu-check-out)")
    run_args.add_argument("--quick", action="store_true", help="tiny budgets for a CPU; marked quick in the JSON")
    run_args.add_argument("--deadline-s", type=float, help="global deadline, seconds (default 450; quick 360)")
    run_args.add_argument("--sections", help="comma-separated: resnet20,input,time_to_accuracy,zoo")
    run_args.add_argument("--precisions", help="comma-separated Keras policies for the resnet20 section")
    run_args.add_argument("--zoo-models", help="comma-separated model names (default: every registered model)")
    run_args.add_argument("--zoo-dataset", choices=("cifar10", "fashion_mnist"))
    run_args.add_argument("--batch-size", type=int)
    run_args.add_argument("--tta-budget-s", type=float, help="time-to-accuracy training budget (default 60)")
    run_args.add_argument("--decode-workers", type=int)
    run_args.add_argument("--as-gpu-machine", action="store_true",
                          help="hide installed packages the GPU machine lacks (a run here proves it needs none)")

    report_args = commands.add_parser("report", help="markdown for the README from a GPU run's JSON")
    report_args.add_argument("results", help="gpu_check.json of a run on the GPU machine")

    commands.add_parser("check-imports")  # for build: what run imports, with the GPU machine's packages only
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "check-imports":
        return check_imports_command()
    from components.benchmarks.gpu_check import GpuCheckError

    try:
        if args.command == "build":
            manifest = build(fashion_mnist=args.fashion_mnist, wheels_from=args.wheels_from,
                             check_imports=not args.skip_import_check)
            print_instructions(manifest, REPO / BUNDLE)
            return 0
        if args.command == "run":
            return run(args)
        return report(args)
    except (BuildError, GpuCheckError) as error:
        print(f"gpu_check {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
