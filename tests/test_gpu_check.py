"""The GPU check (pipeline/gpu_check.py, components/benchmarks/gpu_check.py): bundle, digests, sizes, deadline.

Everything that needs Keras runs in a subprocess on the JAX backend (this process may
already hold Keras on TensorFlow). The quick run on the real CIFAR-10 JPEGs is the one
slow test (a few minutes on 2 cores).
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import numpy as np
import pytest
from PIL import Image

from components.benchmarks import gpu_check as check
from pipeline import gpu_check as cli
from tests.conftest import REPO, require_shared, write_cifar10_dir

PINS = {"keras": "3.15.1", "namex": "0.1.0", "optree": "0.20.0", "google-crc32c": "1.9.0"}


# --------------------------------------------------------------------------- fixtures
def write_jpeg_archive(path: pathlib.Path, train: int = 24, test: int = 12, seed: int = 0) -> pathlib.Path:
    """A tiny CIFAR-10 JPEG copy in the shared layout: cifar10-jpeg/<split>/<class>/NNNN.jpg."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", train), ("test", test)):
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
                name = f"cifar10-jpeg/{split}/{check.CIFAR10_CLASSES[index % 10]}/{index:04d}.jpg"
                info = tarfile.TarInfo(name)
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def write_wheel(directory: pathlib.Path, name: str, version: str, requires: tuple[str, ...] = (),
                module: str | None = None) -> pathlib.Path:
    """A minimal valid pure-Python wheel (pip installs it offline) with the given Requires-Dist lines."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    module = module or f"fake_{dist}"
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {line}\n" for line in requires)
    files = {f"{module}/__init__.py": f"VERSION = {version!r}\n", f"{info}/METADATA": metadata,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(member, text)
    return path


@pytest.fixture
def fake_wheels(tmp_path):
    """Stand-ins for the carried wheels, named as constraints.txt pins them (no registry needed)."""
    directory = tmp_path / "wheels-src"
    write_wheel(directory, "keras", PINS["keras"], ("numpy", "rich", "namex", "optree", 'tomli; python_version < "3.11"',
                                                     "pytest; extra == 'test'"))
    for name in ("namex", "optree", "google-crc32c"):
        write_wheel(directory, name, PINS[name])
    return directory


def git_repo(path: pathlib.Path, files: dict[str, bytes], ignore: str = "/build/\n*.ignored\n",
             tracked: tuple[str, ...] = ()) -> pathlib.Path:
    """A git checkout holding ``files`` (those in ``tracked`` added to the index), a .gitignore and constraints.txt."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / ".gitignore").write_text(ignore)
    (path / "constraints.txt").write_text("".join(f"{name}=={version}\n" for name, version in PINS.items()))
    for relative, data in files.items():
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        (path / relative).write_bytes(data)
    subprocess.run(["git", "-C", str(path), "add", ".gitignore", "constraints.txt", *tracked], check=True)
    return path


@pytest.fixture
def bundle(tmp_path, fake_wheels):
    """A bundle built from a tiny JPEG archive (no canonical archive: digests from decoding)."""
    shared = tmp_path / "shared"
    write_jpeg_archive(shared / cli.CIFAR10_JPEG)
    repo = git_repo(tmp_path / "repo", {"code.py": b"print(1)\n"}, tracked=("code.py",))
    manifest = cli.build(repo=repo, shared=shared, canonical=tmp_path / "absent.tar.gz", wheels_from=fake_wheels,
                         check_imports=False, log=lambda *_: None)
    return repo / cli.BUNDLE, manifest


def run_jax(code: str, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh interpreter on Keras' JAX backend; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- data and digests
def load_shared_script():
    spec = importlib.util.spec_from_file_location("build_cifar10_binary",
                                                  require_shared("build_cifar10_binary.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_gives_the_records_build_cifar10_binary_writes(tmp_path):
    """Same pixels, labels and order as the shared script (its decode, then its fixed permutation)."""
    archive = write_jpeg_archive(tmp_path / "cifar10-jpeg.tar.gz", train=30, test=10)
    script = load_shared_script()
    expected = script.read_records(archive)
    rng = np.random.default_rng(20091111)
    train = [expected["train"][i] for i in rng.permutation(len(expected["train"]))]
    test = [expected["test"][i] for i in rng.permutation(len(expected["test"]))]
    records = check.decode_cifar10_jpeg(archive, workers=1)
    assert records["train"].tobytes() == b"".join(train)
    assert records["test"].tobytes() == b"".join(test)
    split = check.records_to_split(records["train"])
    assert split.images.shape == (30, 32, 32, 3) and split.labels.dtype == np.int64
    assert split.images[0].transpose(2, 0, 1).tobytes() == train[0][1:] and split.labels[0] == train[0][0]


def test_canonical_archive_digest_is_the_sha256_of_its_batches(tmp_path):
    write_cifar10_dir(tmp_path, per_batch=4, test=5)
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    digests = check.canonical_archive_digests(tmp_path / "cifar-10-binary.tar.gz")
    train = b"".join(members[name] for name in check.CIFAR10_TRAIN_MEMBERS)
    assert digests == {"train": {"examples": 20, "records_sha256": check.sha256_bytes(train)},
                       "test": {"examples": 5, "records_sha256": check.sha256_bytes(members[check.CIFAR10_TEST_MEMBER])}}


def test_a_bad_member_name_names_the_archive_and_member(tmp_path):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar10-jpeg/train/unicorn/0001.jpg")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(check.GpuCheckError, match=r"bad\.tar\.gz: member 'cifar10-jpeg/train/unicorn/0001\.jpg'"):
        check.decode_cifar10_jpeg(path)


# --------------------------------------------------------------------------- build and manifest
def test_build_writes_a_manifest_that_run_accepts(bundle):
    directory, manifest = bundle
    assert sorted(manifest["carried"]) == sorted(PINS)
    assert (directory / "run.sh").read_text().startswith("#!/usr/bin/env bash")
    assert manifest["datasets"]["cifar10"]["digest_source"] == "decoded cifar10-jpeg.tar.gz"
    assert manifest["size"]["total_bytes"] < cli.LIMIT_BYTES
    loaded = check.load_manifest(directory)
    check.verify_files(directory, loaded)
    datasets, report = check.load_datasets(directory, loaded, check.RunOptions(decode_workers=1))
    dataset = datasets["cifar10"]
    assert report["cifar10"]["verified"] and (len(dataset.train), len(dataset.test)) == (24, 12)
    assert dataset.info()["image_shape"] == [32, 32, 3]
    with pytest.raises(check.GpuCheckError, match="--zoo-dataset fashion_mnist, but the bundle does not carry it"):
        check.load_datasets(directory, loaded, check.RunOptions(decode_workers=1, zoo_dataset="fashion_mnist"))


def test_a_wrong_manifest_digest_is_a_clear_error(bundle):
    directory, manifest = bundle
    manifest["datasets"]["cifar10"]["decoded"]["test"]["records_sha256"] = "0" * 64
    with pytest.raises(check.DigestMismatch) as error:
        check.load_cifar10(directory, manifest, workers=1)
    message = str(error.value)
    assert "cifar10-jpeg.tar.gz" in message and "test records_sha256" in message and "0" * 64 in message
    assert "not the pixels and labels of our canonical archive" in message


def test_a_changed_or_missing_bundle_file_is_named(bundle):
    directory, manifest = bundle
    wheel = next((directory / "wheels").glob("namex-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"x")
    with pytest.raises(check.GpuCheckError, match=rf"{wheel.name}: .* bytes, the manifest says"):
        check.verify_files(directory, manifest)
    wheel.unlink()
    with pytest.raises(check.GpuCheckError, match=rf"{wheel.name}: listed in .*manifest.json but missing"):
        check.verify_files(directory, manifest)


def test_a_missing_manifest_says_to_build(tmp_path):
    with pytest.raises(check.GpuCheckError, match=r"manifest.json: no manifest \(run `python -m pipeline.gpu_check build`"):
        check.load_manifest(tmp_path)


def test_the_wheels_needs_are_checked_against_the_gpu_machine(tmp_path):
    wheel = write_wheel(tmp_path, "keras", "3.15.1", ("numpy", "tensorflow>=2", "namex", "tomli; python_version < '3.11'"))
    unmet = cli.unmet_requirements([wheel], set(cli.GPU_MACHINE_PACKAGES) | {"namex"})
    assert unmet == ["keras-3.15.1-py3-none-any.whl: tensorflow>=2"]


def test_pins_come_from_constraints(tmp_path):
    (tmp_path / "constraints.txt").write_text("Keras==3.15.1\nnamex==0.1.0\n")
    assert cli.read_pins(tmp_path / "constraints.txt", ("keras", "namex")) == {"keras": "3.15.1", "namex": "0.1.0"}
    with pytest.raises(cli.BuildError, match=r"constraints.txt: no name==version pin for \['optree'\]"):
        cli.read_pins(tmp_path / "constraints.txt", ("keras", "optree"))
    assert cli.read_pins(REPO / "constraints.txt")["keras"] == "3.15.1"


def test_carried_wheels_install_offline_and_become_importable(tmp_path):
    wheel = write_wheel(tmp_path / "bundle" / "wheels", "gpu-check-probe", "1.2.3", module="gpu_check_probe")
    manifest = {"wheels": [f"wheels/{wheel.name}"], "files": {f"wheels/{wheel.name}": {"sha256": "ab"}},
                "carried": {"gpu-check-probe": "1.2.3"}}
    assert not cli.carried_versions_present(manifest)
    saved = list(sys.path)
    try:
        site = cli.install_wheels(tmp_path / "bundle", manifest, site=tmp_path / "site", log=lambda *_: None)
        assert (site / "gpu_check_probe" / "__init__.py").is_file() and (site / ".complete").exists()
        assert cli.carried_versions_present(manifest)
    finally:
        sys.path[:] = saved


# --------------------------------------------------------------------------- size limit
def test_working_tree_size_counts_tracked_and_untracked_not_ignored(tmp_path):
    repo = git_repo(tmp_path / "repo", {"tracked.bin": b"t" * 1000, "new.bin": b"n" * 300,
                                        "skip.ignored": b"i" * 5000, "build/gpu-check/data.bin": b"b" * 7000},
                    tracked=("tracked.bin",))
    sizes = cli.tree_bytes(repo)
    gitfiles = len((repo / ".gitignore").read_bytes()) + len((repo / "constraints.txt").read_bytes())
    assert sizes == {"tracked": 1000 + gitfiles, "untracked": 300}


def test_the_64_mib_limit_is_checked_with_a_breakdown():
    assert cli.check_size({"working tree": 10 * 2 ** 20, "bundle": 50 * 2 ** 20}) == 60 * 2 ** 20
    with pytest.raises(cli.BuildError) as error:
        cli.check_size({"working tree": 10 * 2 ** 20, "bundle": 60 * 2 ** 20})
    assert "70.0 MiB, over its 64.0 MiB limit (bundle 60.0 MiB, working tree 10.0 MiB)" in str(error.value)
    assert "--fashion-mnist" in str(error.value)


def test_build_refuses_a_bundle_over_the_limit(tmp_path, fake_wheels):
    shared = tmp_path / "shared"
    write_jpeg_archive(shared / cli.CIFAR10_JPEG)
    repo = git_repo(tmp_path / "repo", {"big.bin": os.urandom(200_000)}, tracked=("big.bin",))
    with pytest.raises(cli.BuildError, match=r"over its 0.1 MiB limit"):
        cli.build(repo=repo, shared=shared, canonical=tmp_path / "absent", wheels_from=fake_wheels,
                  check_imports=False, limit=100_000, log=lambda *_: None)


# --------------------------------------------------------------------------- deadline
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_deadline_allows_only_what_fits():
    clock = FakeClock()
    deadline = check.Deadline(100, clock=clock)
    assert deadline.allows(None) and deadline.allows(99)
    clock.now = 40
    assert deadline.remaining() == 60 and deadline.allows(59) and not deadline.allows(60)
    clock.now = 100
    assert not deadline.allows(None)


def test_zoo_models_past_the_deadline_are_not_run_never_estimated():
    clock = FakeClock()
    deadline = check.Deadline(100, clock=clock)
    seen, updates = [], []

    def train_one(name):
        seen.append(name)
        if name == "broken":
            raise ValueError("out of memory")
        clock.now += 40  # each model takes 40 s
        return {"status": "ok", "images_per_s": 1.0}

    entries = check.run_zoo(["a", "broken", "b", "c", "d"], train_one, deadline, updates.append, log=lambda *_: None)
    assert seen == ["a", "broken", "b", "c"]  # d: only 10 s left, under MIN_MODEL_S
    assert entries["a"]["status"] == "ok" and entries["c"]["status"] == "ok"
    assert entries["broken"]["status"] == "error" and "ValueError: out of memory" in entries["broken"]["error"]
    assert entries["d"] == {"status": "not run (deadline)"}
    assert len(updates) == 4


def test_zoo_order_lists_registered_models_cheapest_first():
    """ZOO_ORDER may go stale (a new model runs last), but it must name only registered models, once each."""
    registered = run_jax("import json; from components.models import list_models; print(json.dumps(list_models()))")
    assert len(set(check.ZOO_ORDER)) == len(check.ZOO_ORDER) and set(check.ZOO_ORDER) <= set(registered)
    assert check.zoo_order(["vgg19", "newnet", "lenet5"]) == ["lenet5", "vgg19", "newnet"]


def test_cost_model_scales_with_layers_and_macs():
    costs = check.CostModel(safety=1.0, step_overhead_s=0.0)
    assert costs.predict(layers=20, macs=10, batch_size=1, steps=1) is None
    costs.observe(layers=20, compile_s=20.0, macs=1_000_000, batch_size=100, step_s=0.5)
    assert costs.predict(layers=20, macs=1_000_000, batch_size=100, steps=10) == pytest.approx(20 * 1.5 + 5)
    assert costs.predict(layers=40, macs=2_000_000, batch_size=100, steps=10) == pytest.approx(40 * 1.5 + 10)


def test_plan_steps_fills_the_budget_in_whole_epochs():
    assert check.plan_steps(budget_s=60, spent_s=1, step_s=0.02, steps_per_epoch=97) == 2716  # 28 epochs
    assert check.plan_steps(budget_s=30, spent_s=8, step_s=2.0, steps_per_epoch=32) == 10  # under one epoch
    assert check.plan_steps(budget_s=30, spent_s=40, step_s=2.0, steps_per_epoch=32) == 1


def test_a_failing_section_is_recorded_and_a_late_one_not_run(tmp_path):
    clock = FakeClock()
    deadline = check.Deadline(100, clock=clock)
    results = check.Results(tmp_path / "out" / "gpu_check.json", {"quick": True})

    def broken():
        raise RuntimeError("no kernel")

    results.set("one", check.guarded(broken, deadline, None))
    results.set("two", check.guarded(lambda: {"value": 1}, deadline, 200))
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert written["one"]["status"] == "error" and "RuntimeError: no kernel" in written["one"]["error"]
    assert written["two"] == {"status": "not run (deadline)"}
    assert not list((tmp_path / "out").glob(".*.tmp"))


# --------------------------------------------------------------------------- report
def gpu_results() -> dict:
    return {
        "quick": False, "device": "GPU", "started_at": "2026-12-02T10:00:00+00:00", "elapsed_s": 431.0,
        "deadline_s": 450, "environment": {"device_name": "NVIDIA H200", "python": "3.12.3",
                                           "versions": {"keras": "3.15.1", "jax": "0.11.2"}},
        "resnet20": {"batch_size": 512, "by_precision": {"mixed_bfloat16": {"images_per_s": 24000.0},
                                                         "float32": {"images_per_s": 9000.0}}},
        "input": {"images_per_s": 90000.0, "train_images_per_s": 24000.0, "input_over_train": 3.75, "met": True},
        "time_to_accuracy": {"model": "resnet18", "train_time_s": 59.1, "epochs_done": 24.0, "test_accuracy": 0.925,
                             "test_accuracy_flip": 0.931, "goal_test_accuracy": 0.93, "budget_s": 60, "met": True},
        "zoo": {"budget_train_images": 49664, "budget_epochs": 1.0, "batch_size": 512, "test_images": 10000,
                "models": {"lenet5": {"status": "ok", "params": 62006, "macs_per_image": 651720,
                                      "images_per_s": 150000.0, "compile_s": 3.2, "test_accuracy": 0.41},
                           "vgg19": {"status": "not run (deadline)"}}},
    }


def test_report_renders_a_gpu_run():
    text = check.render_markdown(gpu_results())
    assert "Measured on NVIDIA H200" in text
    assert "| ResNet-20 train img/s, mixed_bfloat16, batch 512 | 24,000 | 20,000 | yes |" in text
    assert "| resnet18 test acc. after 59.1 s of training" in text and "93.10% with flip" in text
    assert "| lenet5 | 62.01K | 651.72K | 150,000 | 3.2 | 41.00% | ok |" in text
    assert "| vgg19 |  |  |  |  |  | not run (deadline) |" in text


@pytest.mark.parametrize("change", [{"quick": True}, {"device": "CPU"}])
def test_report_refuses_quick_or_cpu_results(change):
    with pytest.raises(check.GpuCheckError, match="not GPU figures"):
        check.render_markdown({**gpu_results(), **change}, "out/gpu_check.json")


def test_report_command_exits_2_on_quick_results(tmp_path, capsys):
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps({**gpu_results(), "quick": True}))
    assert cli.main(["report", str(path)]) == 2
    assert "not GPU figures" in capsys.readouterr().err


# --------------------------------------------------------------------------- Keras on JAX (subprocesses)
def test_run_imports_only_what_the_gpu_machine_has():
    """check-imports hides every package the GPU machine lacks; TensorFlow never loads."""
    done = subprocess.run([sys.executable, "-m", "pipeline.gpu_check", "check-imports"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1])["third_party"])
    assert {"keras", "jax", "numpy"} <= loaded and not {"tensorflow", "tf-keras", "mlflow"} & loaded
    assert loaded <= cli.GPU_MACHINE_PACKAGES | set(cli.CARRIED)


def test_stretched_schedule_is_read_inside_the_compiled_step():
    """The planned length is an optimizer variable: changing it between fits changes the rates used.

    One weight, loss = mean(w * 1), plain SGD: each step subtracts exactly that step's rate."""
    result = run_jax("""
        import dataclasses, json
        import numpy as np, keras
        from components.benchmarks import gpu_check as check
        from components.training.config import ScheduleConfig
        from components.training.schedules import RecipeSchedule
        inner = RecipeSchedule(1.0, 10, 100, dataclasses.asdict(ScheduleConfig(name="one_cycle")))
        schedule = check.stretched_schedule(inner)
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.0)
        schedule.attach(optimizer, 100)
        inputs = keras.Input((1,))
        model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs))
        model.compile(optimizer=optimizer, loss=lambda y, p: keras.ops.mean(p))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        model.fit(x, y, batch_size=4, epochs=3, verbose=0)
        first = float(model.get_weights()[0].ravel()[0])
        schedule.planned.assign(10.0)
        model.fit(x, y, batch_size=4, epochs=4, verbose=0)
        second = float(model.get_weights()[0].ravel()[0])
        expected_first = -sum(float(inner(s)) for s in range(3))
        expected_second = expected_first - sum(float(inner(s * 10)) for s in range(3, 7))
        print(json.dumps({"first": [first, expected_first], "second": [second, expected_second]}))
    """)
    assert result["first"][0] == pytest.approx(result["first"][1], rel=1e-5)
    assert result["second"][0] == pytest.approx(result["second"][1], rel=1e-5)


def test_time_to_accuracy_keeps_its_budget_and_scores_test_once():
    """A tiny time-to-accuracy run (LeNet-5, random images): training stays within the budget, compile
    excluded; the schedule is planned from the probe; the test split is scored with and without flip."""
    result = run_jax("""
        import json
        import numpy as np
        from components.benchmarks import gpu_check as check
        rng = np.random.default_rng(0)
        train = check.Split(rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 512))
        test = check.Split(rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 128))
        options = check.RunOptions.quick_defaults(tta_model="lenet5", tta_budget_s=3.0, batch_size=32,
                                                  eval_batch_size=64)
        result = check.time_to_accuracy(check.Dataset("cifar10", train, test, 10), options, check.Deadline(200),
                                        log=lambda *_: None)
        print(json.dumps(result))
    """)
    assert result["train_time_s"] <= 3.0 * 1.1 and result["steps_done"] > result["planned_steps"] * 0.5
    assert result["compile_s"] > 0 and result["validation_images"] == 0 and result["test_images"] == 128
    assert 0 <= result["test_accuracy"] <= 1 and "test_accuracy_flip" in result
    assert result["recipe"]["schedule"] == "one_cycle" and result["recipe"]["label_smoothing"] == 0.1


# --------------------------------------------------------------------------- the quick run
# `make gpu-check` runs exactly this; 3-5 minutes on 2 cores, more than the CI suite's budget
# has room for, so it is marked long (deselected by default; `pytest -m long` runs it).
@pytest.mark.slow
@pytest.mark.long
def test_quick_run_on_the_real_jpegs(tmp_path, fake_wheels):
    """build + run --quick --as-gpu-machine on the real CIFAR-10 JPEG copy (about 3-5 minutes on 2 cores)."""
    require_shared("cifar10-jpeg", "cifar10-jpeg.tar.gz")
    out = tmp_path / "bundle"
    manifest = cli.build(out=out, wheels_from=fake_wheels, check_imports=False, log=lambda *_: None)
    assert manifest["datasets"]["cifar10"]["decoded"]["train"]["examples"] == 50000
    done = subprocess.run([sys.executable, "-m", "pipeline.gpu_check", "run", "--quick", "--as-gpu-machine",
                           "--bundle", str(out), "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / check.RESULT_FILE).read_text())
    assert results["status"] == "complete" and results["quick"] is True and results["device"] == "CPU"
    assert results["data"]["cifar10"]["verified"]
    assert set(results["resnet20"]["by_precision"]) == set(check.PRECISIONS)
    assert results["input"]["images_per_s"] > 0 and results["time_to_accuracy"]["status"] == "ok"
    assert set(results["zoo"]["models"]) == {"lenet5", "mlp", "alexnet"}
    with pytest.raises(check.GpuCheckError):
        check.render_markdown(results)
