"""Which models can run under ``mixed_float16``: ``components.models.resnet.FLOAT16_UNSAFE``, as measured.

The finding (module docstring of ``components/models/resnet.py``): untrained, in inference
mode, BatchNorm's moving statistics (mean 0, variance 1) make every BN the identity, so
nothing is normalised; with He-normal kernels the residual stream's variance doubles per
residual unit and, from about 27 units on, its largest value passes float16's 65504: the
logits come out inf/NaN under ``mixed_float16`` while ``float32`` and ``mixed_bfloat16``
(float32's exponent range) stay finite, and training mode (BN on batch statistics) is
finite in every dtype.

Each test pins one side of that, on the shallowest models that show it, so the file fails
if the behaviour changes (a listed model stops overflowing, an unlisted one starts, the
growth is not the per-unit doubling) and the list must then be re-measured:

* the shallowest listed models of each kind, ``resnet56`` (v1, 27 units) and
  ``resnet110v2`` (v2, 36 units), overflow in float16 inference mode, are finite in
  float16 training mode and in float32 / bfloat16, where their largest activation is
  above 65504;
* the deepest unlisted ones, ``resnet44`` (v1, 21 units) and ``resnet56v2`` (v2, 18 units),
  are finite in float16 inference mode;
* on ``resnet110v2`` in float32 the stream's mean square doubles per unit;
* the same on the JAX backend, in a subprocess (a process's Keras backend is fixed once
  Keras loads).

All with weight seed 0 and one batch of 8 standard-normal 32x32x3 images. The margin of
the unlisted models depends on the seed (over 20 weight seeds the largest activation of
resnet44 was 5.9e3-2.8e4, of resnet56v2 1.1e3-2.0e4; resnet56 overflowed for 19 of 20).
About 40 s on 2 CPU cores (the JAX subprocess runs beside the TensorFlow tests).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from components.models import create_model, list_models, model_info
from components.models.resnet import FLOAT16_MAX, FLOAT16_UNSAFE, FLOAT16_UNSAFE_REASON
from tests.test_models import global_policy

SEED = 0
SHAPE = (32, 32, 3)
UNSAFE = ("resnet56", "resnet110v2")  # the shallowest listed v1 and v2 nets
SAFE = ("resnet44", "resnet56v2")  # the deepest unlisted v1 and v2 nets

# Residual units (one Add each) of every registered ResNet: v1 CIFAR 3n = (depth - 2) / 2,
# v2 CIFAR 3n = (depth - 2) / 3, slim resnet_v2 sum(units), ResNet-18/34 sum(stage_blocks).
UNITS = {
    "resnet18": 8, "resnet34": 16,
    "resnet20": 9, "resnet32": 15, "resnet44": 21, "resnet56": 27, "resnet110": 54,
    "resnet56v2": 18, "resnet110v2": 36, "resnet164v2": 54,
    "resnet50v2": 16, "resnet101v2": 33, "resnet152v2": 50, "resnet200v2": 66,
}
MIN_UNSAFE_UNITS = 27

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    "ignore:The structure of `inputs` doesn't match:UserWarning",
)


def images() -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal((8, *SHAPE)).astype("float32")


@functools.lru_cache(maxsize=None)
def measure(name: str, policy: str, training_too: bool = False) -> dict:
    """Build ``name`` under ``policy`` (seed 0) and run it in inference [then training] mode.

    For each mode: whether the logits are finite, the largest |activation| of any layer
    between input and logits, and the mean square of every residual unit's Add output.
    Inference runs first: training mode updates the BN moving statistics.
    """
    with global_policy(policy):
        keras.utils.set_random_seed(SEED)
        model = create_model(name, SHAPE, 10)
        layers = model.layers[1:]
        probe = keras.Model(model.inputs, [layer.output for layer in layers])
        result = {"adds": sum(layer.name.endswith("_add") for layer in layers)}
        for training in (False, True) if training_too else (False,):
            outputs = [np.abs(np.asarray(keras.ops.convert_to_numpy(out), dtype="float32"))
                       for out in probe(images(), training=training)]
            result[training] = {
                "finite": bool(np.isfinite(outputs[-1]).all()),
                "max_abs": max(float(np.max(a, where=np.isfinite(a), initial=0.0)) for a in outputs[:-1]),
                "add_ms": [float(np.mean(np.square(a, dtype="float64"))) for layer, a in zip(layers, outputs)
                           if layer.name.endswith("_add")],
            }
    keras.backend.clear_session()
    return result


# --------------------------------------------------------------------------- the list
def test_unsafe_list_is_every_resnet_with_27_or_more_units():
    assert set(UNITS) == set(list_models("resnet")), "a ResNet was added or removed: measure it and update UNITS"
    assert FLOAT16_UNSAFE == {name for name, units in UNITS.items() if units >= MIN_UNSAFE_UNITS}
    assert not FLOAT16_UNSAFE - set(list_models("resnet")), "only ResNets overflow (others peak below 12)"


def test_unsafe_models_document_their_dtype():
    assert "65504" in FLOAT16_UNSAFE_REASON and "bfloat16" in FLOAT16_UNSAFE_REASON
    assert "\n" not in FLOAT16_UNSAFE_REASON
    for name in list_models("resnet"):
        doc = model_info(name).builder.__doc__
        assert ("mixed_float16 is unsafe" in doc) == (name in FLOAT16_UNSAFE), name
        assert "Precision" not in model_info(name).description, f"{name}: the one-line description changed"


# --------------------------------------------------------------------------- TensorFlow backend
@pytest.mark.parametrize("name", UNSAFE)
def test_listed_model_overflows_float16_only_in_inference_mode(name):
    f16 = measure(name, "mixed_float16", training_too=True)
    assert f16["adds"] == UNITS[name]
    assert not f16[False]["finite"], f"{name} no longer overflows float16 at init: re-measure FLOAT16_UNSAFE"
    assert f16[True]["finite"] and f16[True]["max_abs"] < 100  # BN on batch statistics normalises
    for policy in ("float32", "mixed_bfloat16"):  # float32's range: finite, and the cause shows
        run = measure(name, policy)[False]
        assert run["finite"] and run["max_abs"] > FLOAT16_MAX, (policy, run["max_abs"])


@pytest.mark.parametrize("name", SAFE)
def test_unlisted_model_is_finite_in_float16(name):
    f16 = measure(name, "mixed_float16")
    assert f16["adds"] == UNITS[name]
    assert f16[False]["finite"] and f16[False]["max_abs"] < FLOAT16_MAX, f"{name} overflows: list it"


@pytest.mark.parametrize("name", UNSAFE)
def test_stream_mean_square_about_doubles_per_unit_in_inference_mode(name):
    # He init keeps each conv's second moment and BN is the identity, so x + F(x) has about
    # twice the mean square of x: log2(mean square) climbs ~1 per unit (0.8-1.3 over seeds).
    mean_square = np.array(measure(name, "float32")[False]["add_ms"])
    slope = np.polyfit(np.arange(len(mean_square)), np.log2(mean_square), 1)[0]
    assert 0.6 < slope < 1.4, f"log2(mean square) per unit {slope:.2f}, expected ~1"
    assert mean_square[-1] > 2 ** (0.6 * len(mean_square))


# --------------------------------------------------------------------------- JAX backend
# Keras fixes its backend when it loads, so JAX runs in a subprocess. Building resnet110v2
# on JAX costs ~20 s (one XLA compile per kernel shape for the He-normal initialiser), so
# the subprocess starts with the first test of this file and runs beside the TensorFlow
# tests; test_same_finding_on_jax (the last) collects it.
JAX_SCRIPT = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("ignore")
    import keras, numpy as np
    from components.models import create_model
    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32")
    keras.mixed_precision.set_global_policy("mixed_float16")
    found = {}
    for name in ("resnet110v2", "resnet56v2"):
        keras.utils.set_random_seed(0)
        logits = create_model(name, (32, 32, 3), 10).predict(x, batch_size=8, verbose=0)
        found[name] = bool(np.isfinite(logits).all())
    print(json.dumps({"backend": keras.backend.backend(), "finite_in_float16": found}))
""")


@pytest.fixture(scope="module", autouse=True)
def jax_run(request):
    """The JAX subprocess, started early when test_same_finding_on_jax is selected."""
    if not any(item.name == "test_same_finding_on_jax" for item in request.session.items):
        yield None
        return
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen([sys.executable, "-c", JAX_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=pathlib.Path(__file__).resolve().parents[1])
    yield process
    if process.poll() is None:  # the JAX test did not run to collect it
        process.kill()
        process.communicate()


def test_same_finding_on_jax(jax_run):
    stdout, stderr = jax_run.communicate(timeout=300)
    assert jax_run.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax"
    # resnet110v2 (listed) overflows, resnet56v2 (not listed) is finite, as on TensorFlow.
    assert report["finite_in_float16"] == {"resnet110v2": False, "resnet56v2": True}
