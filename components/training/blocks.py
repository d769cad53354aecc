"""One input element per compiled call: ``fit`` trains on blocks of batches.

Keras 3.15's TensorFlow trainer runs ``steps_per_execution`` steps per call by taking
them one by one from the input's iterator (``get_next_as_optional`` and a ``tf.cond`` per
step). Each of those hands a batch from tf.data's threads to the step, and on this
project's 2-core CPU that per-batch work and those hand-offs took 8-13% of LeNet-5's
epoch (best epochs at 0.83-0.89 of the compute ceiling against 0.95-1.0 for the same
``fit`` on one resident batch; measured with scratch scripts beside ``bench train``, README
"Benchmarks"). Here the input
hands over a whole call's batches at once, stacked into one block (``[k, batch, ...]``,
``k`` the call's steps; the last block of a pass shorter), and the call's compiled
function runs ``train_step`` on each of them in turn: one hand-off per call.

The steps, their order and their data are Keras' own (the same ``train_step`` on the
same batches), so the weights are the same as one step per call (tested). Keras counts
``steps_per_execution`` steps per call and calls the function once per call, so with
``steps_per_epoch`` given and an endless stream of blocks, each epoch's calls take its
pass's blocks exactly (the stream is ``epoch_passes(..., block=k)``). One device only,
under the default strategy: under any other ``tf.distribute`` strategy (several replicas,
or one replica of ``MirroredStrategy``) and with several workers Keras' own function stays.
"""
from __future__ import annotations


def use_block_train_function(model) -> None:
    """Make ``model.fit`` take one block of batches (``[k, batch, ...]`` per input) per
    compiled call and run ``model.train_step`` on each of its ``k`` batches.

    Call after ``compile`` (which resets the train function); Keras' ``fit`` keeps a
    train function already set (``make_train_function`` returns it). The step is its own
    ``tf.function`` (XLA when the model compiles with it), called from the loop as Keras'
    function calls it.
    """
    import tensorflow as tf

    step = tf.function(tf.autograph.experimental.do_not_convert(model.train_step), reduce_retracing=True,
                       jit_compile=bool(model.jit_compile))

    @tf.function(reduce_retracing=True)
    def train_block(iterator):
        block = next(iterator)
        logs = step(tf.nest.map_structure(lambda part: part[0], block))
        for index in tf.range(1, tf.shape(tf.nest.flatten(block)[0])[0]):
            logs = step(tf.nest.map_structure(lambda part: part[index], block))  # noqa: B023 (traced once)
        return logs

    model.train_function = train_block
