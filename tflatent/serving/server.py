"""Serve an exported model over TF Serving's REST API: ``python -m tflatent.serve --model saved_models/<name>``.

A local stand-in for TF Serving, built on KServe's Python ``ModelServer`` (``pip install "tflatent[serve]"``),
whose V1 protocol is TF Serving's predict API. It serves the latest version in the folder written by
``python -m tflatent.export`` (the signatures are listed there), under the folder's name (``--name``
to change it), on ``--host`` (default 127.0.0.1) and ``--port`` (default 8501, TF Serving's)::

    GET  /v1/models/<name>[/versions/<n>]           → {"model_version_status": [{"version": "1", "state":
                                                       "AVAILABLE", "status": {"error_code": "OK", ...}}]}
    GET  /v1/models/<name>[/versions/<n>]/metadata  → {"model_spec": ..., "metadata": {"signature_def":
                                                       {"signature_def": {<name>: SignatureDef JSON}}}}
    POST /v1/models/<name>:predict    {"signature_name": "log_likelihood",      (default: serving_default)
                                       "inputs": {"x": [[5, 9, 2]], "lengths": [3], "seed": 0}}
                                      → {"outputs": {"log_likelihood": [...], "nll_per_token": [...]}}
                                      {"instances": [{"x": [5, 9, 2], "lengths": 3}, ...]}
                                      → {"predictions": [{"log_likelihood": ..., "nll_per_token": ...}, ...]}

As in TF Serving, the columnar format (``inputs``) takes each input whole, the row format (``instances``)
stacks one value per instance along a new first dimension (so every input must be batched: a scalar
``temperature`` or ``seed`` needs the columnar format), and an input may be given bare when the signature
has only one. A malformed request (bad JSON, an unknown signature, a missing, unknown or mistyped input,
or an ``InvalidArgumentError`` from the model's input checks) answers 400 ``{"error": "<what is wrong>"}``
and the server goes on serving; an unknown model name answers 404. A request holding more than
``--max-positions`` sequences x steps (default 65,536, about 0.75 GB of memory) answers 400 naming the
limit.

The same folder serves under TF Serving itself:
``docker run -p 8501:8501 -v $PWD/saved_models/<name>:/models/<name> -e MODEL_NAME=<name> tensorflow/serving``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Optional

import numpy as np
import tensorflow as tf

from tflatent.errors import ExpectedError

try:
    import fastapi
    import kserve
    from fastapi.responses import JSONResponse
    from google.protobuf import json_format
    from kserve.errors import InvalidInput
    from kserve.model_server import app as kserve_app
    from tensorflow.core.protobuf import saved_model_pb2
except ImportError as err:  # the optional extra
    raise ImportError(f"python -m tflatent.serve needs KServe ({err}): pip install 'tflatent[serve]'") from None

DEFAULT_SIGNATURE = "serving_default"
# Sequences x steps per request: 1,000 x 180 PTB characters took +2 GB (~11 KB per position with the
# importance samples), so 65,536 keeps one request under ~0.75 GB. --max-positions changes it.
DEFAULT_MAX_POSITIONS = 65_536


class RequestError(ValueError):
    """A request the model cannot answer; the message says what is wrong and how to fix it."""


def latest_version(model_dir: str) -> tuple[int, str]:
    """(version, path) of the largest integer version folder in ``model_dir``."""
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()] if os.path.isdir(model_dir) else []
    if not versions:
        raise FileNotFoundError(f"{model_dir} holds no SavedModel version folder (1/, 2/, ...): export a run "
                                "first with python -m tflatent.export --run runs/<name> --out " + model_dir)
    return max(versions), os.path.join(model_dir, str(max(versions)))


# ---------------------------------------------------------------------- TF Serving's request format
def parse_request(payload, signatures) -> tuple[str, dict, bool]:
    """A predict request's JSON body → (signature name, {input: tf.Tensor}, row format?).

    ``signatures``: the loaded SavedModel's ``signatures`` mapping. Raises RequestError.
    KServe decodes JSON bodies sent as application/json; others (curl -d's default form type, as TF Serving
    accepts) arrive as bytes and are read as JSON here.
    """
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError as err:
            raise RequestError(f"the request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise RequestError('the request body must be a JSON object such as {"inputs": {...}} or '
                           '{"instances": [...]}')
    name = payload.get("signature_name", DEFAULT_SIGNATURE)
    if name not in signatures:
        raise RequestError(f"unknown signature_name {name!r}; this model has: {', '.join(sorted(signatures))}")
    specs = signatures[name].structured_input_signature[1]  # {input name: TensorSpec}
    if ("inputs" in payload) == ("instances" in payload):
        raise RequestError('give exactly one of "inputs" (columnar format) and "instances" (row format); '
                           f"signature {name!r} takes {_describe(specs)}")
    unknown = sorted(set(payload) - {"signature_name", "inputs", "instances"})
    if unknown:
        raise RequestError(f"unknown request key(s) {', '.join(unknown)}; use signature_name and inputs or "
                           "instances")
    rows = "instances" in payload
    columns = _row_columns(payload["instances"], specs) if rows else _named(payload["inputs"], specs, "inputs")
    missing, extra = sorted(set(specs) - set(columns)), sorted(set(columns) - set(specs))
    if missing or extra:
        problems = ([f"missing input(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown input(s) {', '.join(extra)}"] if extra else [])
        raise RequestError(f"{'; '.join(problems)}: signature {name!r} takes {_describe(specs)}")
    return name, {key: _to_tensor(key, value, specs[key], rows) for key, value in columns.items()}, rows


def _named(value, specs, where):
    """{input: value} from a JSON object, or a bare value when the signature has one input."""
    if isinstance(value, dict):
        return value
    if len(specs) == 1:
        return {next(iter(specs)): value}
    raise RequestError(f'"{where}" must be an object naming the inputs: {_describe(specs)}')


def _row_columns(instances, specs) -> dict:
    """The row format's instances → {input: [value per instance]}."""
    if not isinstance(instances, list) or not instances:
        raise RequestError('"instances" must be a non-empty list, one entry per example')
    rows = [_named(instance, specs, "instances") for instance in instances]
    names = set(rows[0])
    if any(set(row) != names for row in rows):
        raise RequestError('every entry of "instances" must name the same inputs')
    return {key: [row[key] for row in rows] for key in names}


def _to_tensor(name, value, spec: tf.TensorSpec, rows: bool) -> tf.Tensor:
    """A JSON value as a tensor of ``spec``'s dtype and shape, or a RequestError naming the input."""
    try:
        array = np.asarray(value)
    except ValueError:  # rows of different lengths
        array = None
    if array is None or array.dtype.kind not in "iuf" and array.size:
        raise RequestError(f"input {name!r} must be a rectangular array of numbers (every row the same length; "
                           "pad shorter sequences)")
    if spec.dtype.is_integer and array.size:
        if array.dtype.kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
            raise RequestError(f"input {name!r} must hold integers ({spec.dtype.name})")
        info = np.iinfo(spec.dtype.as_numpy_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise RequestError(f"input {name!r} holds a value outside the range of {spec.dtype.name}")
    if not spec.shape.is_compatible_with(array.shape):
        hint = (" (the row format stacks each input along a new first dimension, so a scalar input needs the "
                'columnar format {"inputs": {...}})') if rows and spec.shape.rank == 0 else ""
        raise RequestError(f"input {name!r} has shape {list(array.shape)}; the signature takes "
                           f"{_shape(spec)}{hint}")
    return tf.constant(array.astype(spec.dtype.as_numpy_dtype))


def request_positions(inputs: dict) -> int:
    """Sequences x steps of a request: x's first two dimensions, else len(lengths) x max(lengths)."""
    if "x" in inputs:
        shape = inputs["x"].shape
        return int(shape[0]) * int(shape[1]) if shape.rank >= 2 else 0
    if "lengths" in inputs and inputs["lengths"].shape.rank == 1 and inputs["lengths"].shape[0]:
        return int(inputs["lengths"].shape[0]) * max(int(tf.reduce_max(inputs["lengths"])), 0)
    return 0


def format_response(outputs: dict, rows: bool) -> dict:
    """TF Serving's answer: {"outputs": ...} to a columnar request, {"predictions": [...]} to a row request."""
    values = {key: _json_value(np.asarray(value.numpy())) for key, value in outputs.items()}
    if not rows:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    batch = {len(value) if isinstance(value, list) else 0 for value in values.values()}
    if len(batch) != 1 or 0 in batch:
        raise RequestError("this signature's outputs do not share a batch dimension; use the columnar format")
    predictions = [{key: value[i] for key, value in values.items()} for i in range(batch.pop())]
    return {"predictions": [next(iter(p.values())) for p in predictions] if len(values) == 1 else predictions}


def _json_value(array: np.ndarray):
    if array.dtype.kind in "OS":  # tf.string: bytes, answered as UTF-8 text
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist()
    return array.tolist()


def _describe(specs) -> str:
    return ", ".join(f"{key} ({spec.dtype.name} {_shape(spec)})" for key, spec in sorted(specs.items())) or "no inputs"


def _shape(spec: tf.TensorSpec) -> str:
    return "scalar" if spec.shape.rank == 0 else str([d if d is not None else -1 for d in spec.shape.as_list()])


def error_message(error: tf.errors.InvalidArgumentError) -> str:
    """The failed input check's own text ("lengths: every length must be >= 1 ...") of a graph error."""
    for line in error.message.splitlines():
        if line.strip().startswith("assertion failed:"):
            return line.strip()[len("assertion failed:"):].strip()
    return error.message.strip()


# ---------------------------------------------------------------------- the KServe model and server
class SavedModelServable(kserve.Model):
    """The latest SavedModel version in ``model_dir``, answering TF Serving predict requests."""

    def __init__(self, name: str, model_dir: str, max_positions: int = DEFAULT_MAX_POSITIONS):
        super().__init__(name)
        self.model_dir = model_dir
        self.max_positions = max_positions
        self.version = None
        self.signatures = None

    def load(self) -> bool:
        self.version, path = latest_version(self.model_dir)
        self.signatures = tf.saved_model.load(path).signatures
        self.signature_defs = signature_defs(path)
        self.ready = True
        return self.ready

    def status(self) -> dict:
        """TF Serving's GetModelStatusResponse as JSON: the one version served, AVAILABLE."""
        return {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(self) -> dict:
        """TF Serving's GetModelMetadataResponse as JSON: the model spec and every signature's inputs and
        outputs (dtype, shape, tensor name) as the SignatureDef protos give them."""
        return {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
                "metadata": {"signature_def": {"signature_def": self.signature_defs}}}

    async def predict(self, payload, headers=None, response_headers=None) -> dict:
        # The model runs in a worker thread, so the server answers status requests meanwhile.
        return await asyncio.get_running_loop().run_in_executor(None, self.answer, payload)

    def answer(self, payload) -> dict:
        """The JSON answer to a predict request's body; InvalidInput (400) for a bad request."""
        try:
            name, inputs, rows = parse_request(payload, self.signatures)
            positions = request_positions(inputs)
            if positions > self.max_positions:
                raise RequestError(f"the request holds {positions:,} sequence positions (sequences x steps); "
                                   f"this server answers at most {self.max_positions:,} per request "
                                   "(--max-positions): "
                                   "split it into smaller requests")
            return format_response(self.signatures[name](**inputs), rows)
        except RequestError as err:
            raise InvalidInput(str(err)) from None
        except tf.errors.InvalidArgumentError as err:
            raise InvalidInput(error_message(err)) from None


def signature_defs(path: str) -> dict:
    """{signature name: SignatureDef as JSON} of the SavedModel in ``path`` (its ``saved_model.pb``)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    defs = saved_model.meta_graphs[0].signature_def
    return {name: json_format.MessageToDict(defs[name], preserving_proto_field_name=True)
            for name in sorted(defs) if not name.startswith("__")}


def add_tf_serving_routes(app: "fastapi.FastAPI", servables: dict) -> None:
    """TF Serving's status and metadata endpoints, and predict under ``/versions/<n>``, for ``servables``
    ({name: SavedModelServable}); added before KServe's routes, so its own status answer is never reached::

        GET  /v1/models/<name>[/versions/<n>]            → GetModelStatusResponse
        GET  /v1/models/<name>[/versions/<n>]/metadata   → GetModelMetadataResponse
        POST /v1/models/<name>/versions/<n>:predict      → as /v1/models/<name>:predict
    """
    def find(name: str, version: Optional[str] = None) -> "SavedModelServable":
        if name not in servables:
            raise fastapi.HTTPException(404, f"Servable not found for request: Latest({name})")
        servable = servables[name]
        if version is not None and version != str(servable.version):
            raise fastapi.HTTPException(404, f"Servable not found for request: Specific({name}, {version}); "
                                             f"this server has version {servable.version}")
        return servable

    def answer(make):
        try:
            return make()
        except fastapi.HTTPException as err:
            return JSONResponse(status_code=err.status_code, content={"error": err.detail})

    app.add_api_route("/v1/models/{name}/metadata", lambda name: answer(lambda: find(name).metadata()),
                      methods=["GET"])
    app.add_api_route("/v1/models/{name}/versions/{version}/metadata",
                      lambda name, version: answer(lambda: find(name, version).metadata()), methods=["GET"])
    app.add_api_route("/v1/models/{name}/versions/{version}",
                      lambda name, version: answer(lambda: find(name, version).status()), methods=["GET"])
    app.add_api_route("/v1/models/{name}", lambda name: answer(lambda: find(name).status()), methods=["GET"])

    async def versioned_predict(name: str, version_predict: str, request: fastapi.Request):
        version, _, verb = version_predict.partition(":")
        if verb != "predict":
            return JSONResponse(status_code=404, content={"error": f"unknown verb {verb!r}; use :predict"})
        try:
            servable = find(name, version)
        except fastapi.HTTPException as err:
            return JSONResponse(status_code=err.status_code, content={"error": err.detail})
        try:
            return await servable.predict(await request.body())
        except InvalidInput as err:
            return JSONResponse(status_code=400, content={"error": str(err)})

    app.add_api_route("/v1/models/{name}/versions/{version_predict}", versioned_predict, methods=["POST"])


class LocalModelServer(kserve.ModelServer):
    """KServe's ModelServer (REST only) listening on ``host``; KServe itself listens on every interface.

    TF Serving's status and metadata endpoints are added to KServe's REST application
    (:func:`add_tf_serving_routes`)."""

    def __init__(self, host: str, port: int):
        super().__init__(http_port=port, enable_grpc=False, workers=1)
        self.host = host
        self.servables = {}

    def start(self, models) -> None:
        self.servables = {model.name: model for model in models}
        super().start(models)

    def setup_event_loop(self):
        # start() has created the REST server but not yet bound its socket (nor registered KServe's
        # routes): this is the last moment to choose the host and to put our routes first.
        self._rest_server.config.host = self.host
        add_tf_serving_routes(kserve_app, self.servables)
        super().setup_event_loop()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tflatent.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a folder written by tflatent.export (saved_models/<name>)")
    parser.add_argument("--name", help="the model name in the URLs (default: the folder's name)")
    parser.add_argument("--port", type=int, default=8501, help="HTTP port (default 8501, as TF Serving)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--max-positions", type=int, default=DEFAULT_MAX_POSITIONS,
                        help="most sequences x steps one request may hold; larger ones answer 400 (default "
                             f"{DEFAULT_MAX_POSITIONS:,}, about 0.75 GB of server memory)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.max_positions < 1:
        print(f"error: --max-positions = {args.max_positions} must be >= 1", file=sys.stderr)
        return 2
    servable = SavedModelServable(args.name or os.path.basename(os.path.normpath(args.model)), args.model,
                                  args.max_positions)
    try:
        servable.load()
    except (ExpectedError, OSError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    print(f"serving {args.model}/{servable.version} as {servable.name} on http://{args.host}:{args.port}"
          f"/v1/models/{servable.name} (signatures: {', '.join(sorted(servable.signatures))})", flush=True)
    LocalModelServer(args.host, args.port).start([servable])
    return 0
