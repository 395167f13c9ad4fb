"""Training callbacks: the β schedule, the plateau LR decay, IS NLL logging, checkpoints, backups, NaN stop."""

import csv
import math
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from standin_model import StandInBundle, StandInModel

from tflatent.config import TrainConfig
from tflatent.training import callbacks as cb
from tflatent.training import checkpoint_files, optimizers

F = 1e-5


def standin(**kwargs):
    model = StandInModel(88, music=True, **kwargs)
    model.compile(optimizer=optimizers.make_optimizer(TrainConfig()))
    model.build()
    model.optimizer.build(model.trainable_variables)
    return model, StandInBundle(music=True)


class Recorder(keras.callbacks.Callback):
    """Records β at every training batch and at every validation batch, per epoch."""

    def __init__(self):
        super().__init__()
        self.train, self.valid, self.epoch = {}, {}, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.train.setdefault(self.epoch, []).append(float(self.model.beta))

    def on_test_batch_begin(self, batch, logs=None):
        self.valid.setdefault(self.epoch, set()).add(float(self.model.beta))


# ----------------------------------------------------------------------------- KLAnnealing

def test_epoch_weights_of_the_ptb_schedule():
    annealing = cb.KLAnnealing(4, 10)
    assert [annealing.weight(i) for i in range(-1, 5)] == [F] * 6
    for i in range(4, 15):
        assert annealing.weight(i) == pytest.approx(F + (1 - F) * (i - 4) / 10, abs=1e-12)
    assert annealing.weight(14) == 1.0 and annealing.weight(40) == 1.0
    assert [annealing.done(i) for i in (0, 14, 15, 16)] == [False, False, True, True]


def test_music_schedule_is_done_from_epoch_36_and_the_baseline_from_the_start():
    music = cb.KLAnnealing(20, 15)
    assert music.weight(20) == F and music.weight(35) == 1.0 and music.weight(21) == pytest.approx(F + (1 - F) / 15)
    assert (music.done(35), music.done(36)) == (False, True)
    baseline = cb.KLAnnealing(0, 0)
    assert (baseline.weight(-1), baseline.weight(0), baseline.done(0)) == (1.0, 1.0, True)
    step = cb.KLAnnealing(3, 0)  # no ramp: a step from the floor to 1 at epoch 3
    assert [step.weight(i) for i in (2, 3)] == [F, 1.0] and (step.done(3), step.done(4)) == (False, True)


def test_beta_is_interpolated_per_batch_and_validation_uses_the_epoch_weight():
    model, bundle = standin()
    annealing = cb.KLAnnealing(1, 2, steps_per_epoch=4)
    recorder = Recorder()
    model.fit(bundle.batches("train", True, repeat=True), validation_data=bundle.batches("valid", False),
              epochs=4, steps_per_epoch=4, callbacks=[annealing, recorder], verbose=0, shuffle=False)
    w = [F, F, F + (1 - F) / 2, 1.0]  # w(i) for i = 0..3; w(−1) = F
    for epoch in range(4):
        before = w[epoch - 1] if epoch else F
        expected = [before + (w[epoch] - before) * b / 4 for b in range(4)]
        np.testing.assert_allclose(recorder.train[epoch], expected, rtol=1e-6)
        assert len(recorder.valid[epoch]) == 1
        assert recorder.valid[epoch].pop() == pytest.approx(w[epoch], rel=1e-6)
    assert model.history.history["beta"] == pytest.approx(w)


def test_annealing_needs_beta_and_a_batch_count():
    model, bundle = standin()
    annealing = cb.KLAnnealing(1, 2)
    annealing.set_model(types.SimpleNamespace(kl_weight=None))
    with pytest.raises(ValueError, match="needs a model with a KL weight"):
        annealing.on_test_begin()
    annealing.set_model(model)
    annealing.set_params({"steps": None})
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        annealing.on_train_batch_begin(0)


# ----------------------------------------------------------------------------- PlateauLRDecay

def _moments(optimizer):
    return [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]


def _plateau_model():
    variable = tf.Variable([1.0, 2.0])
    optimizer = optimizers.make_optimizer(TrainConfig(learning_rate=0.01))
    optimizer.build([variable])
    optimizer.apply([tf.constant([0.3, -0.1])], [variable])
    return types.SimpleNamespace(optimizer=optimizer)


def test_lr_decays_after_patience_only_once_annealing_is_done_and_resets_adam():
    model = _plateau_model()
    plateau = cb.PlateauLRDecay("val_loss", patience=2, factor=4, active_after=lambda epoch: epoch >= 3)
    plateau.set_model(model)
    losses = [5.0, 6.0, 7.0,      # annealing: ignored, however bad
              4.0,                # first active epoch: the best
              4.5, 4.2,           # two without improvement: lr 0.01 -> 0.0025, Adam reset
              3.0,                # improvement
              3.0, 3.1]           # equal is no improvement: lr -> 0.000625
    lrs = []
    for epoch, loss in enumerate(losses):
        logs = {"val_loss": loss}
        if epoch == 5:
            assert all(np.any(m.numpy() != 0) for m in _moments(model.optimizer))
        plateau.on_epoch_end(epoch, logs)
        lrs.append(float(model.optimizer.learning_rate))
        assert logs["lr"] == pytest.approx(lrs[epoch - 1] if epoch else 0.01)
        if epoch == 5:
            assert all(np.all(m.numpy() == 0) for m in _moments(model.optimizer))
            assert int(model.optimizer.iterations) == 0
    assert lrs == pytest.approx([0.01] * 5 + [0.0025] * 3 + [0.000625])
    assert plateau.get_state() == {"best": 3.0, "wait": 0}


def test_decay_without_reset_keeps_the_moments():
    model = _plateau_model()
    plateau = cb.PlateauLRDecay(patience=1, reset_optimizer=False)
    plateau.set_model(model)
    plateau.on_epoch_end(0, {"val_loss": 1.0})
    plateau.on_epoch_end(1, {"val_loss": 2.0})
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0025)
    assert all(np.any(m.numpy() != 0) for m in _moments(model.optimizer))


def test_plateau_needs_its_monitor():
    plateau = cb.PlateauLRDecay()
    plateau.set_model(_plateau_model())
    with pytest.raises(KeyError, match="'val_loss'.*pass validation data"):
        plateau.on_epoch_end(0, {"loss": 1.0})


# ----------------------------------------------------------------------------- NLL, checkpoints, logs

def test_importance_sampled_nll_is_logged_every_n_epochs(tmp_path):
    model, bundle = standin()
    valid = bundle.batches("valid", False)
    best = str(tmp_path / "best.weights.h5")
    history = model.fit(bundle.batches("train", True, repeat=True), validation_data=valid, epochs=4,
                        steps_per_epoch=3, verbose=0, shuffle=False,
                        callbacks=[cb.ImportanceSampledNLL(valid, every=2, num_samples=3, chunk=2),
                                   cb.BestCheckpoint(best, monitor="val_nll")]).history
    assert len(history["val_nll"]) == 2  # epochs 2 and 4 only
    expected = model.evaluate_nll(valid, num_samples=3, chunk=2)
    assert history["val_nll"][-1] == pytest.approx(expected["nll"])
    assert history["val_nats_per_frame"][-1] == pytest.approx(expected["nats_per_frame"])
    record = checkpoint_files.read_record(best)
    assert record["epoch"] in (2, 4) and record["value"] == pytest.approx(min(history["val_nll"]))


def test_best_checkpoint_saves_improvements_only_and_survives_a_restart(tmp_path):
    model, _ = standin()
    path = str(tmp_path / "best.weights.h5")
    first = cb.BestCheckpoint(path)
    first.set_model(model)
    first.on_epoch_end(0, {"val_loss": 2.0})
    first.on_epoch_end(1, {"loss": 1.0})  # no val_loss: skipped
    first.on_epoch_end(2, {"val_loss": 3.0})
    record = checkpoint_files.read_record(path)
    assert record["epoch"] == 1 and record["value"] == 2.0
    model.scale.assign(7.0)
    second = cb.BestCheckpoint(path)  # a resumed session: the record's best is the threshold
    second.set_model(model)
    second.on_epoch_end(3, {"val_loss": 2.5})
    assert checkpoint_files.read_record(path)["epoch"] == 1
    reloaded, _ = standin()
    reloaded.load_weights(path)
    assert float(reloaded.scale) == 1.0  # the epoch-1 weights, not the worse epoch-4 ones
    second.on_epoch_end(4, {"val_loss": 1.5})
    assert checkpoint_files.read_record(path)["epoch"] == 5


def test_epoch_log_keeps_occasional_columns_and_the_header_of_an_existing_file(tmp_path):
    path = str(tmp_path / "history.csv")
    log = cb.EpochLog(path, occasional=["val_nll"])
    log.on_train_begin()
    log.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    log.on_epoch_end(1, {"loss": 0.5, "val_loss": 1.5, "val_nll": 1.4})
    log.on_train_end()
    resumed = cb.EpochLog(path, occasional=["val_nll"])
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"val_nll": 1.3, "val_loss": 1.2, "loss": 0.4})
    resumed.on_train_end()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [row["val_nll"] for row in rows] == ["NA", "1.4", "1.3"]
    assert [row["loss"] for row in rows] == ["1.0", "0.5", "0.4"]


def test_run_backup_restores_weights_epoch_optimizer_and_callback_state(tmp_path):
    model, bundle = standin()
    plateau = cb.PlateauLRDecay(patience=3)
    backup = cb.RunBackup(str(tmp_path / "backup"), {"plateau": plateau})
    model.fit(bundle.batches("train", True, repeat=True), validation_data=bundle.batches("valid", False),
              epochs=2, steps_per_epoch=3, callbacks=[plateau, backup], verbose=0, shuffle=False)
    assert cb.RunBackup.completed_epochs(str(tmp_path / "backup")) == 2
    state = plateau.get_state()
    restored, _ = standin()
    restored_plateau = cb.PlateauLRDecay(patience=3)
    again = cb.RunBackup(str(tmp_path / "backup"), {"plateau": restored_plateau})
    again.set_model(restored)
    again.on_train_begin()
    assert restored._initial_epoch == 2
    assert restored_plateau.get_state() == state
    np.testing.assert_array_equal(restored.logits.numpy(), model.logits.numpy())
    assert int(restored.optimizer.iterations) == 6


# ----------------------------------------------------------------------------- StopOnNonFinite

def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_backup(tmp_path):
    model, bundle = standin(nan_at_step=6)  # 4 steps per epoch: NaN at epoch 2, batch 2
    backup_dir = str(tmp_path / "backup")
    best = str(tmp_path / "best.weights.h5")
    snapshots = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(model.logits.numpy().copy()))
    with pytest.raises(cb.NonFiniteLossError) as err:
        model.fit(bundle.batches("train", True, repeat=True), validation_data=bundle.batches("valid", False),
                  epochs=3, steps_per_epoch=4, verbose=0, shuffle=False,
                  callbacks=[cb.StopOnNonFinite(), snapshot, cb.BestCheckpoint(best),
                             cb.RunBackup(backup_dir)])
    message = str(err.value)
    assert "became nan at epoch 2, batch 2" in message and "learning rate" in message and "β = 1" in message
    assert "train.learning_rate" in message and "--resume" in message
    assert cb.RunBackup.completed_epochs(backup_dir) == 1 and checkpoint_files.read_record(best)["epoch"] == 1
    restored, _ = standin()
    restored.load_weights(cb.RunBackup.latest(backup_dir))
    assert np.all(np.isfinite(restored.logits.numpy()))
    np.testing.assert_array_equal(restored.logits.numpy(), snapshots[0])
    assert math.isfinite(float(restored.scale))
