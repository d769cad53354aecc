"""The model zoo: every registered model, tested for free by parametrising over the registry.

Speed (the file must stay well under 4 minutes on 2 CPU cores): each model is built once
on 32x32x3 for the whole module (a module-scoped fixture parametrised by name, so pytest
runs one model's tests together and then drops it) and once on 28x28x1; batches are 2-8
images. The deeper variants of a builder (``COVERED_BY``) get the forward-pass,
parameter-count and depth tests only; the training step and the save/load round trip of
their builder run on the shallower variant named there, through the same code.
"""
from __future__ import annotations

import contextlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.models import (
    ModelConfigError,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    summary,
)
from pipeline import models as models_cli

MODELS = list_models()
NUM_CLASSES = 10
SEED = 0

# Deeper variant -> the shallower variant of the same builder that runs its training and
# save/load tests (eager steps and deserialisation cost ~2-10 s each for these).
COVERED_BY = {
    "resnet34": "resnet18",
    "resnet44": "resnet20",
    "resnet56": "resnet20",
    "resnet110": "resnet20",
    "resnet110v2": "resnet56v2",
    "resnet164v2": "resnet56v2",
    "resnet101v2": "resnet50v2",
    "resnet152v2": "resnet50v2",
    "resnet200v2": "resnet50v2",
}

pytestmark = pytest.mark.filterwarnings(
    # Keras 3.15 converting tensors with numpy 2: harmless, and thousands of lines of noise.
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def skip_if_covered(name: str) -> None:
    """Skip a deep variant whose builder is exercised by a shallower registered model."""
    if name in COVERED_BY:
        pytest.skip(f"same builder as {COVERED_BY[name]}, which runs this test")


# The interface promised by issue 4: these names must exist.
REQUIRED = {
    "mlp", "lenet5", "baseline", "alexnet", "alexnet8", "vgg11", "vgg13", "vgg16", "vgg19",
    "googlenet", "inception10", "resnet18", "resnet34", "resnet20", "resnet32", "resnet44",
    "resnet56", "resnet110", "resnet56v2", "resnet110v2", "resnet164v2", "resnet50v2",
    "resnet101v2", "resnet152v2", "resnet200v2", "densenet_bc_100", "densenet", "ynet",
}

# Parameter counts on 32x32x3 with 10 classes: He et al. 2016 Table 6, He et al. 2016b,
# Huang et al. 2017 Table 2, and the usual CIFAR ResNet-18. Tolerance 3%.
PARAM_REFERENCES = {
    "resnet20": 0.27e6,
    "resnet32": 0.46e6,
    "resnet44": 0.66e6,
    "resnet56": 0.85e6,
    "resnet110": 1.7e6,
    "resnet164v2": 1.7e6,
    "densenet_bc_100": 0.8e6,
    "resnet18": 11.2e6,
}


def images(shape, count: int = 4, seed: int = SEED) -> np.ndarray:
    """A fixed batch of standard-normal "already normalised" images."""
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype("float32")


def build(name: str, shape, **hparams) -> keras.Model:
    """Build with a fixed seed, so weights (and so outputs) are reproducible."""
    keras.utils.set_random_seed(SEED)
    return create_model(name, shape, NUM_CLASSES, **hparams)


@contextlib.contextmanager
def global_policy(policy: str):
    """Temporarily set Keras's global dtype policy (restored even if the build fails)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module", params=MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def cifar_model(name) -> keras.Model:
    """The model on 32x32x3, built once and shared by the tests of this model.

    pytest runs all tests of one ``name`` together and then drops this fixture, so only
    one model is alive at a time.
    """
    return build(name, (32, 32, 3))


# --------------------------------------------------------------------------- registry
def test_required_models_are_registered_and_sorted():
    assert MODELS == sorted(MODELS)
    assert set(COVERED_BY.values()) <= set(MODELS) - set(COVERED_BY)
    missing = REQUIRED - set(MODELS)
    assert not missing, f"models promised by the interface are not registered: {sorted(missing)}"


def test_model_info_has_metadata(name):
    info = model_info(name)
    assert info.name == name and info.family and info.paper and info.reference and info.source
    assert info.description, f"{name}: the builder needs a docstring (its first line is the description)"
    assert info.min_input_size <= 28, f"{name} must accept 28x28 inputs"


# --------------------------------------------------------------------------- forward pass
# 32x32x3 runs in float32 and inference mode. 28x28x1 runs under mixed_float16 in training
# mode, the way mixed precision is used: it checks that the logits stay float32 and finite
# while the rest of the net computes in float16. (In inference mode an *untrained* deep
# net is not normalised at all, since BN's moving statistics start at mean 0 / variance 1,
# and the un-normalised residual sum of a ResNet with 27 or more residual units overflows
# float16's 65504 (components/models/resnet.py, FLOAT16_UNSAFE; tests/test_precision_models.py);
# after a few training steps the moving statistics are real and this does not happen.)
@pytest.mark.parametrize(
    "shape, policy, training",
    [((32, 32, 3), "float32", False), ((28, 28, 1), "mixed_float16", True)],
    ids=["32x32x3", "28x28x1-mixed"],
)
def test_forward_pass_shape_dtype_and_finite(name, cifar_model, shape, policy, training):
    if shape == (32, 32, 3):
        model = cifar_model
    else:
        with global_policy(policy):
            model = build(name, shape)
    logits = model(images(shape, count=2), training=training)
    assert tuple(logits.shape) == (2, NUM_CLASSES)
    assert logits.dtype == tf.float32, f"{name} under {policy}: logits are {logits.dtype}"
    assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"
    assert np.isfinite(np.asarray(logits)).all(), f"{name} on {shape} ({policy}) gave non-finite logits"
    assert model.name == name and tuple(model.input_shape) == (None, *shape)


def test_layers_have_fixed_readable_names(cifar_model):
    # No auto-generated names such as "conv2d_17": they change with build order.
    generated = re.compile(r"^(conv2d|dense|batch_normalization|activation|max_pooling2d|add|concatenate)(_\d+)?$")
    auto = [layer.name for layer in cifar_model.layers if generated.match(layer.name)]
    assert not auto, f"layers without a fixed name: {auto[:5]}"


# --------------------------------------------------------------------------- training
def test_one_optimisation_step_lowers_the_loss(name, cifar_model):
    """One SGD step on a fixed batch lowers that batch's loss.

    The loss is evaluated in training mode both times, so BN normalises with the batch's
    own statistics and the loss is a deterministic function of the weights. Dropout would
    draw new masks for each evaluation, so models that have it are rebuilt with
    ``dropout=0``; the others reuse the shared model (the step changes its weights, which
    the other tests of the model do not depend on). The loss is the data term only (the
    L2 terms in ``model.losses`` are left out), so the drop is not just shrinking weights.
    The step is a gradient step of length <= 0.01 (global_clipnorm): small enough to be
    first-order for every model in the zoo, which all still improve with 10x that step.
    """
    skip_if_covered(name)
    has_dropout = model_info(name).defaults.get("dropout", 0.0) > 0
    model = build(name, (32, 32, 3), dropout=0.0) if has_dropout else cifar_model
    x, y = images((32, 32, 3), count=8), np.arange(8) % NUM_CLASSES
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=1.0)

    def loss():
        return loss_fn(y, model(x, training=True))

    with tf.GradientTape() as tape:
        value = loss()
    before = float(value)
    gradients = tape.gradient(value, model.trainable_variables)
    assert all(g is not None for g in gradients), f"{name}: some weights get no gradient"
    optimizer.apply(gradients, model.trainable_variables)
    after = float(loss())
    assert np.isfinite(after) and after < before, f"{name}: loss {before:.5f} -> {after:.5f} after one step"


# --------------------------------------------------------------------------- save / load
def test_save_and_load_give_identical_outputs(name, cifar_model, tmp_path):
    skip_if_covered(name)
    path = tmp_path / f"{name}.keras"
    cifar_model.save(path)
    restored = keras.models.load_model(path)
    x = images((32, 32, 3), count=2)
    np.testing.assert_array_equal(
        np.asarray(restored(x, training=False)), np.asarray(cifar_model(x, training=False))
    )
    assert [layer.name for layer in restored.layers] == [layer.name for layer in cifar_model.layers]


# --------------------------------------------------------------------------- parameter counts
def test_parameter_count_matches_the_paper(name, cifar_model):
    if name not in PARAM_REFERENCES:
        pytest.skip("no published parameter count for this variant")
    expected, params = PARAM_REFERENCES[name], cifar_model.count_params()
    assert abs(params - expected) / expected <= 0.03, f"{name}: {params:,} params, paper {expected:,.0f}"


def test_depth_is_the_papers_layer_count(name, cifar_model):
    """The number in a model's name is its paper's depth: weight layers on the longest path."""
    match = re.search(r"(\d+)(v2)?$", name)
    expected = 22 if name == "googlenet" else int(match.group(1)) if match else None
    if expected is None:
        pytest.skip("the name does not state a depth")
    assert summary.count_depth(cifar_model) == expected


def test_lenet5_has_exactly_61706_parameters():
    assert build("lenet5", (32, 32, 1)).count_params() == 61_706
    # 28x28 digits are zero-padded to LeNet's 32x32 plane, as LeCun did.
    assert build("lenet5", (28, 28, 1)).count_params() == 61_706


def test_airbench_small_is_in_lenet5s_size_class():
    """Issue 14's Fashion-MNIST goal is for a LeNet-5-class model: at most 100k parameters."""
    assert build("airbench_small", (28, 28, 1)).count_params() == 93_538
    # The same design at the paper's widths (64, 256, 256): airbench94's network.
    assert build("airbench_small", (32, 32, 3), widths=[64, 256, 256]).count_params() == 1_973_954
    with pytest.raises(ModelConfigError, match=r"airbench: widths must list 3 blocks' filters, got \[64, 128\]"):
        create_model("airbench", (32, 32, 3), NUM_CLASSES, widths=[64, 128])


def test_resnet_projection_shortcut_is_available_and_close_to_the_paper():
    params = build("resnet20", (32, 32, 3), shortcut="projection").count_params()
    assert abs(params - 0.27e6) / 0.27e6 <= 0.03


# --------------------------------------------------------------------------- input sizes
@pytest.mark.parametrize("small_name", [n for n in MODELS if model_info(n).min_input_size > 1])
def test_declared_minimum_input_size_is_exact(small_name):
    size = model_info(small_name).min_input_size
    logits = build(small_name, (size, size, 1))(images((size, size, 1), count=1), training=False)
    assert tuple(logits.shape) == (1, NUM_CLASSES)
    with pytest.raises(ModelConfigError, match=rf"'{small_name}'.*\({size - 1}, {size - 1}, 1\).*too small.*>= {size}"):
        create_model(small_name, (size - 1, size - 1, 1), NUM_CLASSES)


# --------------------------------------------------------------------------- errors
def test_unknown_name_suggests_close_matches_and_lists_all():
    with pytest.raises(UnknownModelError) as error:
        create_model("resnet-20", (32, 32, 3), NUM_CLASSES)
    message = str(error.value)
    assert "unknown model 'resnet-20'" in message
    assert "Did you mean 'resnet20'" in message
    assert all(n in message for n in MODELS)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    "hparams, expected",
    [
        ({"dropuot": 0.1}, r"'vgg16': unknown hyperparameter\(s\) \['dropuot'\]; allowed .*dropout=0\.2.*weight_decay=0\.0"),
        ({"dropout": -0.1}, r"'vgg16': hyperparameter dropout=-0\.1 is invalid; expected a float in \[0, 1\)"),
        ({"dropout": 1.0}, r"dropout=1\.0 is invalid; expected a float in \[0, 1\)"),
        ({"dropout": True}, r"dropout=True is invalid"),
        ({"weight_decay": -1e-4}, r"'vgg16': hyperparameter weight_decay=-0\.0001 is invalid; expected a float >= 0"),
        ({"weight_decay": "1e-4"}, r"weight_decay='1e-4' is invalid"),
    ],
)
def test_bad_hyperparameters_say_what_was_received_and_allowed(hparams, expected):
    with pytest.raises(ModelConfigError, match=expected):
        create_model("vgg16", (32, 32, 3), NUM_CLASSES, **hparams)


def test_hyperparameters_of_other_families_are_rejected_with_this_models_list():
    with pytest.raises(ModelConfigError, match=r"'resnet20': unknown hyperparameter\(s\) \['dropout'\]; allowed .*shortcut='identity'"):
        create_model("resnet20", (32, 32, 3), NUM_CLASSES, dropout=0.5)
    with pytest.raises(ModelConfigError, match=r"shortcut='option_c' is invalid; expected one of 'identity', 'projection'"):
        create_model("resnet20", (32, 32, 3), NUM_CLASSES, shortcut="option_c")
    with pytest.raises(ModelConfigError, match=r"block_layers=\[6, 0\] is invalid; expected a non-empty list of positive ints"):
        create_model("densenet", (32, 32, 3), NUM_CLASSES, block_layers=[6, 0])


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True, "10"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ModelConfigError, match=rf"'mlp': num_classes={re.escape(repr(num_classes))} is invalid; expected an int >= 2"):
        create_model("mlp", (28, 28, 1), num_classes)


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 3, 1), (0, 32, 3), (32.0, 32, 3), "32,32,3", None])
def test_bad_input_shape(shape):
    with pytest.raises(ModelConfigError, match=r"'resnet20': input_shape=.* is invalid; expected \(height, width, channels\)"):
        create_model("resnet20", shape, NUM_CLASSES)


def test_hyperparameter_overrides_reach_the_model():
    model = build("ynet", (28, 28, 1), dropout=0.1, weight_decay=1e-3, base_filters=8)
    assert model.get_layer("left_conv1").filters == 8
    assert model.get_layer("head_dropout").rate == 0.1
    assert model.get_layer("left_conv1").kernel_regularizer.l2 == pytest.approx(1e-3)
    assert len(model.losses) == 7  # six convs and the logits layer carry L2


# --------------------------------------------------------------------------- summary / CLI
def test_macs_follow_the_layer_formulas():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8*8*3*3*3*4 = 6912
    x = keras.layers.Conv2D(4, 3, strides=2, groups=2, padding="same", name="grouped")(x)  # 4*4*9*2*4 = 1152
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)  # 4*4*9*4*2 = 1152
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)  # 8*5 = 40
    model = keras.Model(inputs, outputs)
    assert summary.count_macs(model) == 6912 + 1152 + 1152 + 40
    assert summary.count_depth(model) == 4 and summary.count_weight_layers(model) == 4


def test_resnet20_macs_match_the_known_41m():
    # ~40.6M multiply-adds per 32x32 image is the figure usually quoted for ResNet-20.
    assert 40e6 <= summary.count_macs(build("resnet20", (32, 32, 3))) <= 41.5e6


def test_cli_prints_a_table(capsys):
    assert models_cli.main(["--input-shape", "28,28,1", "--models", "lenet5", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "input 28x28x1" in out
    assert re.search(r"lenet5\s+lenet\s+61,706\s+\S+\s+5\s+5\s+LeCun et al\. 1998", out)
    assert re.search(r"mlp\s+mlp\s+397,510", out)


def test_cli_plot_writes_a_diagram(tmp_path, capsys):
    out_file = tmp_path / "resnet20.png"
    assert models_cli.main(["--plot", "resnet20", "--out", str(out_file)]) == 0
    message = capsys.readouterr().out
    written = out_file if out_file.exists() else out_file.with_suffix(".txt")
    assert written.exists() and written.stat().st_size > 0, message
    assert str(written) in message


def test_cli_reports_bad_names_without_a_traceback(capsys):
    assert models_cli.main(["--plot", "resnet-20"]) == 2
    assert "Did you mean 'resnet20'" in capsys.readouterr().err
