"""python -m tflatent.serve: TF Serving's REST API on KServe, for an exported tiny PTB model, in a subprocess."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import train_tiny

from tflatent.serving import export

STARTUP_SECONDS = 180


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_dir, tfds_dir):
    root = tmp_path_factory.mktemp("serve")
    run = train_tiny(root / "run", "ptb_lstm_small", data_dir, tfds_dir)
    out = root / "saved_models" / "ptb"
    assert export.main(["--run", run, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def in_process(model_dir):
    """The same SavedModel loaded here, to check the server's answers against."""
    return tf.saved_model.load(str(model_dir / "1"))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """The server's base URL for the model; the server is stopped (SIGTERM, then SIGKILL) afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tflatent.serve", "--model", str(model_dir), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}/v1/models/ptb"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while request("GET", url)[0] != 200:
            log = log_path.read_text()[-3000:]
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{log}"
            assert time.monotonic() < deadline, f"no answer in {STARTUP_SECONDS} s:\n{log}"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request(method, url, body=None, content_type="application/json"):
    """(HTTP status, JSON answer); status 0 when nothing listens yet. ``body``: a dict or raw bytes."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, None


AVAILABLE = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                       "status": {"error_code": "OK", "error_message": ""}}]}


def test_status_and_versions_answer_in_tf_serving_s_shape(server):
    assert request("GET", server) == (200, AVAILABLE)
    assert request("GET", server + "/versions/1") == (200, AVAILABLE)
    code, answer = request("GET", server + "/versions/2")
    assert code == 404 and "Specific(ptb, 2)" in answer["error"]
    code, answer = request("POST", server + "/versions/1:predict",
                           {"inputs": {"lengths": [2], "temperature": 1.0, "seed": 0}})
    assert code == 200 and answer["outputs"]["lengths"] == [2]


def test_metadata_lists_the_signatures_as_tf_serving_does(server):
    for url in (server + "/metadata", server + "/versions/1/metadata"):
        code, answer = request("GET", url)
        assert code == 200, answer
        assert answer["model_spec"] == {"name": "ptb", "signature_name": "", "version": "1"}
        signatures = answer["metadata"]["signature_def"]["signature_def"]
        assert sorted(signatures) == ["log_likelihood", "metadata", "serving_default"]
        x = signatures["log_likelihood"]["inputs"]["x"]
        assert x["dtype"] == "DT_INT32" and [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "-1"]
        assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_samples_equal_the_saved_model_s(server, in_process):
    status, answer = request("POST", server + ":predict",
                             {"inputs": {"lengths": [5, 3], "temperature": 0.9, "seed": 4}})
    assert status == 200, answer
    expected = in_process.signatures["serving_default"](
        lengths=tf.constant([5, 3]), temperature=tf.constant(0.9), seed=tf.constant(4))
    assert answer["outputs"]["lengths"] == [5, 3]
    assert answer["outputs"]["x"] == expected["x"].numpy().tolist()
    assert answer["outputs"]["x"][1][3:] == [0, 0]


def test_a_body_sent_as_curl_d_sends_it_is_read_as_json(server):
    body = {"inputs": {"lengths": [2], "temperature": 1.0, "seed": 0}}
    status, answer = request("POST", server + ":predict", body, content_type="application/x-www-form-urlencoded")
    assert status == 200 and answer["outputs"]["lengths"] == [2], answer
    status, answer = request("POST", server + ":predict", b"{not json",
                             content_type="application/x-www-form-urlencoded")
    assert status == 400 and answer["error"].startswith("the request body is not valid JSON"), answer


def test_log_likelihood_in_row_and_columnar_format(server, in_process):
    x, lengths = [[5, 6, 7, 0], [8, 9, 10, 11]], [3, 4]
    expected = in_process.signatures["log_likelihood"](x=tf.constant(x), lengths=tf.constant(lengths))
    status, rows = request("POST", server + ":predict", {
        "signature_name": "log_likelihood", "instances": [{"x": x[0], "lengths": 3}, {"x": x[1], "lengths": 4}]})
    assert status == 200, rows
    assert [sorted(row) for row in rows["predictions"]] == [["log_likelihood", "nll_per_token"]] * 2
    np.testing.assert_allclose([row["log_likelihood"] for row in rows["predictions"]],
                               expected["log_likelihood"], rtol=1e-6)
    status, columns = request("POST", server + ":predict",
                              {"signature_name": "log_likelihood", "inputs": {"x": x, "lengths": lengths}})
    assert status == 200, columns
    np.testing.assert_allclose(columns["outputs"]["nll_per_token"], expected["nll_per_token"], rtol=1e-6)


def test_metadata_carries_the_vocabulary(server):
    status, answer = request("POST", server + ":predict", {"signature_name": "metadata", "inputs": {}})
    assert status == 200, answer
    metadata = json.loads(answer["outputs"]["metadata"])
    assert metadata["vocabulary"][:2] == ["<pad>", "<unk>"] and metadata["model"] == "lstm"
    assert "model:\n  type: lstm" in answer["outputs"]["config"]


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "Unrecognized request format"),
    ({"signature_name": "decode", "inputs": {}}, 400, "unknown signature_name 'decode'; this model has: "
     "log_likelihood, metadata, serving_default"),
    ({"inputs": {"lengths": [5]}}, 400, "missing input(s) seed, temperature: signature 'serving_default' takes "
     "lengths (int32 [-1]), seed (int32 scalar), temperature (float32 scalar)"),
    ({"inputs": {"lengths": [5, 0], "temperature": 1.0, "seed": 1}}, 400, "lengths: every length must be >= 1"),
    ({"inputs": {"lengths": [[5, 2]], "temperature": 1.0, "seed": 1}}, 400,
     "input 'lengths' has shape [1, 2]; the signature takes [-1]"),
    ({"signature_name": "log_likelihood", "inputs": {"x": [[5, 6], [7]], "lengths": [2, 1]}}, 400,
     "input 'x' must be a rectangular array of numbers"),
    ({"signature_name": "log_likelihood", "inputs": {"x": [[5, 6, 999]], "lengths": [3]}}, 400,
     "x: token ids must be in [0, "),
    ({"instances": [{"lengths": 5, "temperature": 1.0, "seed": 1}]}, 400, "needs the columnar format"),
    ({"inputs": {"lengths": [300] * 300, "temperature": 1.0, "seed": 1}}, 400,
     "holds 90,000 sequence positions (sequences x steps); this server answers at most 65,536"),
    ({"signature_name": "log_likelihood", "inputs": {"x": [[5, 0, 6]], "lengths": [3]}}, 400,
     "x: the padding id 0 appears inside a sequence"),
])
def test_a_malformed_request_gets_a_4xx_with_the_message_and_the_server_goes_on(server, body, status, message):
    code, answer = request("POST", server + ":predict", body)
    assert code == status and message in answer["error"], answer
    assert request("POST", server + ":predict",
                   {"inputs": {"lengths": [2], "temperature": 1.0, "seed": 0}})[0] == 200


def test_an_unknown_model_is_404(server):
    code, answer = request("POST", server.replace("/ptb", "/other") + ":predict", {"inputs": {}})
    assert code == 404 and "other" in answer["error"]
