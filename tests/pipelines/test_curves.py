"""pipelines.curves: the validation curve of a run from its history CSV and TensorBoard event times."""

import os

import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from pipelines import curves

HEADER = "epoch,beta,kl,loss,lr,recon,val_kl,val_loss,val_nll,val_recon\n"


def write_session(folder, start, epoch_ends, tag="epoch_loss"):
    """One training session's event file: a first record at ``start``, then ``tag`` at each (epoch, time)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"events.out.tfevents.{int(start)}.host.1.v2", "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=start, file_version="brain.Event:2").SerializeToString())
        for epoch, wall_time in epoch_ends:
            value = summary_pb2.Summary.Value(tag=tag, simple_value=1.0)
            event = event_pb2.Event(wall_time=wall_time, step=epoch, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())


def test_a_resumed_run_counts_training_time_only_and_keeps_the_last_row_of_an_epoch(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "history.csv").write_text(
        HEADER + "0,1e-05,1,2,0.001,1,1,9.5,NA,9\n1,1e-05,1,2,0.001,1,1,9.0,8.75,8\n"
        "1,1e-05,1,2,0.001,1,1,9.0,8.5,8\n2,1,1,2,0.00025,1,1,8.0,nan,7\n")
    train = run / "tensorboard" / "train"
    write_session(train, 1000.0, [(0, 1010.0), (1, 1030.0)])  # epochs of 10 and 20 s
    os.utime(next(train.iterdir()), (1, 1))  # sessions are ordered by their files' times
    write_session(train, 5000.0, [(1, 5025.0), (2, 5030.0)])  # resumed after a stop: epoch 1 again, 25 s
    curve = curves.read_curve(str(run))
    assert [p["epoch"] for p in curve] == [0, 1, 2]
    assert [p["seconds"] for p in curve] == pytest.approx([10.0, 35.0, 40.0])
    assert [p["val_nll"] for p in curve] == [None, 8.5, None]  # NA and nan are no figure
    assert curve[2]["lr"] == pytest.approx(0.00025) and curve[2]["beta"] == 1.0


def test_a_run_without_logs_has_an_empty_curve_and_plots_write_a_png(tmp_path):
    assert curves.read_curve(str(tmp_path)) == []
    points = [{"epoch": e, "seconds": 60.0 * (e + 1), "val_nll": 9.0 - e} for e in range(4)]
    path = tmp_path / "out" / "curves.png"
    curves.plot_curves({"AF / AF": points, "empty": []}, str(path), "JSB", "nats per frame", paper={"AF / AF": 6.53})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_value_axis_shows_every_curve_after_its_first_quarter_and_the_papers_figures(tmp_path):
    """Nottingham's flows: the paper's 2.39 lies far below our curves; the window must still reach up
    to the LSTM's and the flow's later figures, leaving out only the first epochs' (the KL annealing's)."""
    flow = [{"epoch": e, "seconds": 60.0 * e, "val_nll": v} for e, v in [(4, 63.9), (9, 3.98), (19, 3.46), (29, 3.21)]]
    lstm = [{"epoch": e, "seconds": 30.0 * e, "val_nll": 6.0 - 0.03 * e} for e in range(100)]  # 6.0 → 3.03
    figure = curves.plot_curves({"AF / AF": flow, "LSTM": lstm}, str(tmp_path / "c.png"), "Nottingham",
                                "nats per frame", paper={"AF / AF": 2.39, "LSTM": 3.43})
    low, high = figure.axes[0].get_ylim()
    assert low < 2.39 and 3.98 < high < 63.9
    assert high >= 6.0 - 0.03 * 25  # the LSTM from its epoch 25 (a quarter of 99) on
