"""Learning-rate schedules and optimizers built from recipe config.

One schedule class covers every recipe's shape (constant, step drops, exponential,
cosine, one-cycle), each with optional linear warm-up; ``plateau`` is a constant
schedule plus Keras's ReduceLROnPlateau callback, since it reacts to validation loss.
"""
from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

from components.training.config import OptimizerConfig, ScheduleConfig


@keras.saving.register_keras_serializable(package="cnn_zoo")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at optimizer step ``step``: ``peak * warmup(step) * shape(step)``."""

    def __init__(self, peak: float, steps_per_epoch: int, total_steps: int, config: dict):
        self.peak = float(peak)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = int(total_steps)
        self.config = dict(config)
        self.schedule = ScheduleConfig(**self.config)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        schedule, epoch = self.schedule, step / self.steps_per_epoch
        warmup_steps = schedule.warmup_epochs * self.steps_per_epoch
        warmup = ops.minimum(1.0, (step + 1.0) / warmup_steps) if warmup_steps > 0 else 1.0
        # Progress after warm-up, 0..1, for the shapes defined over the whole run.
        span = max(self.total_steps - warmup_steps, 1.0)
        progress = ops.clip((step - warmup_steps) / span, 0.0, 1.0)
        if schedule.name == "step":
            factor = ops.convert_to_tensor(1.0)
            for boundary, drop in zip(schedule.boundaries, schedule.factors):
                factor = ops.where(epoch >= boundary, drop, factor)
        elif schedule.name == "exponential":
            periods = epoch / schedule.decay_epochs
            factor = ops.power(schedule.decay_rate, ops.floor(periods) if schedule.staircase else periods)
        elif schedule.name == "cosine":
            final = schedule.final_fraction
            factor = final + (1 - final) * 0.5 * (1 + ops.cos(math.pi * progress))
        elif schedule.name == "one_cycle":
            start, final, peak_at = schedule.start_fraction, schedule.final_fraction, schedule.peak_at
            rising = start + (1 - start) * progress / peak_at
            falling = final + (1 - final) * 0.5 * (1 + ops.cos(math.pi * (progress - peak_at) / (1 - peak_at)))
            factor = ops.where(progress < peak_at, rising, falling)
        else:  # constant, plateau (the callback scales the optimizer's rate itself)
            factor = 1.0
        return self.peak * warmup * factor

    def get_config(self):
        return {"peak": self.peak, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "config": self.config}


def build_schedule(optimizer: OptimizerConfig, schedule: ScheduleConfig, steps_per_epoch: int, epochs: int):
    """The optimizer's learning rate: a float for ``plateau`` (the callback changes it), else a schedule."""
    if schedule.name == "plateau":
        return optimizer.learning_rate
    return RecipeSchedule(optimizer.learning_rate, steps_per_epoch, steps_per_epoch * epochs,
                          dataclasses.asdict(schedule))


def build_optimizer(config: OptimizerConfig, learning_rate, ema_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """A Keras optimizer from config; ``ema_decay`` > 0 keeps a moving average of the weights."""
    common = dict(learning_rate=learning_rate, global_clipnorm=config.global_clipnorm,
                  use_ema=ema_decay > 0, ema_momentum=ema_decay or 0.99)
    if config.name == "sgd":
        return keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov, **common)
    if config.name == "adam":
        return keras.optimizers.Adam(beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon, **common)
    if config.name == "adamw":
        return keras.optimizers.AdamW(weight_decay=config.decoupled_weight_decay, beta_1=config.beta_1,
                                      beta_2=config.beta_2, epsilon=config.epsilon, **common)
    return keras.optimizers.RMSprop(rho=config.rho, momentum=config.momentum, epsilon=config.epsilon, **common)


def plateau_callback(optimizer: OptimizerConfig, schedule: ScheduleConfig):
    """ReduceLROnPlateau for the ``plateau`` schedule, else None."""
    if schedule.name != "plateau":
        return None
    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=schedule.plateau_factor,
                                             patience=schedule.plateau_patience,
                                             min_lr=optimizer.learning_rate * schedule.min_fraction, verbose=0)
