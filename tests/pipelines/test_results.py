"""pipelines.results: finished reproductions gathered into results/ with goals, curves and a JSON round trip."""

import json

from pipelines import results


def row(key, dataset, nll, status="done", epochs=40):
    curve = [{"epoch": e, "seconds": 30.0 * (e + 1), "val_nll": nll + 1.0 / (e + 1)} for e in range(epochs)]
    return {"key": key, "label": results.LABELS[key], "dataset": dataset, "config": f"configs/{dataset}_{key}.yaml",
            "overrides": [], "user_overrides": [], "paper": {"nll": results.PAPER_TABLE3[key][dataset]},
            "ours": {"nll": nll}, "samples": 30, "epochs": epochs, "train_seconds": 30.0 * epochs,
            "evaluate_seconds": 3.0, "config_values": {}, "curve": curve, "commands": [], "status": status}


def source(tmp_path, name, scale, rows):
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"table": 3, "scale": scale, "machine": {"cpu": "test CPU", "code_version": "abc"},
                                "rows": rows}))
    return f"{name}={path}"


def test_rows_of_several_sources_get_goals_and_curves_and_rebuild_from_json(tmp_path):
    jsb = [row("lstm", "jsb_chorales", 8.15), row("af_af", "jsb_chorales", 7.43),
           row("iaf_scf", "jsb_chorales", 6.95, status="training failed")]
    sources = [source(tmp_path, "cpu short", "cpu", jsb),
               source(tmp_path, "paper size, K = 50", "paper", [row("af_af", "jsb_chorales", 6.50)]),
               source(tmp_path, "notts", "cpu", [row("lstm", "nottingham", 3.40), row("af_af", "nottingham", 3.50),
                                                 row("af_scf", "nottingham", 3.00)])]
    out = tmp_path / "results"
    assert results.main(["--name", "table3_cpu", "--out", str(out)] + sum((["--source", s] for s in sources), [])) == 0
    record = json.loads((out / "table3_cpu.json").read_text())
    assert len(record["rows"]) == 6  # the failed row is left out
    text = (out / "table3_cpu.md").read_text()
    assert "≤ 7.00: missed by 0.43" in text  # JSB AF / AF at CPU width
    assert "≤ 6.53: met" in text  # JSB AF / AF at paper size
    assert "| paper size, K = 50 |" in text  # a variant may hold "=": the path follows the last one
    assert "< LSTM 3.40: missed by 0.10" in text and "< LSTM 3.40: met" in text  # Nottingham AF / AF, AF / SCF
    assert "best at epoch 40 of 40" in text
    for dataset in ("jsb_chorales", "nottingham"):
        assert (out / f"table3_cpu_{dataset}.png").read_bytes()[:4] == b"\x89PNG"
    (out / "table3_cpu.md").unlink()
    assert results.main(["--name", "table3_cpu", "--out", str(out), "--from-json"]) == 0
    assert (out / "table3_cpu.md").read_text() == text


def test_bad_sources_are_one_line_errors(tmp_path, capsys):
    assert results.main(["--name", "t", "--out", str(tmp_path), "--source", "no-equals-sign"]) == 2
    assert "VARIANT=PATH" in capsys.readouterr().err
    assert results.main(["--name", "t", "--out", str(tmp_path), "--source", f"x={tmp_path}/missing.json"]) == 2
    assert "run pipelines.reproduce_table first" in capsys.readouterr().err
    assert results.main(["--name", "t", "--out", str(tmp_path), "--from-json"]) == 2
