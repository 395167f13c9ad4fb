"""json_files: atomic writes and reading a file that may not exist."""

import json

from tflatent.json_files import read_json, write_json


def test_round_trip_and_a_missing_file_reads_as_none(tmp_path):
    path = str(tmp_path / "record.json")
    assert read_json(path) is None
    assert write_json(path, {"epoch": 3, "values": [1.5, None]}) == path
    assert read_json(path) == {"epoch": 3, "values": [1.5, None]}
    assert not (tmp_path / "record.json.tmp").exists()


def test_a_write_replaces_the_whole_file(tmp_path):
    path = str(tmp_path / "record.json")
    write_json(path, {"long": "x" * 100})
    write_json(path, {"short": 1})
    assert json.loads(open(path).read()) == {"short": 1}
