"""The SageMaker PyTorch handler contract: defaults, user hooks, context arity, errors and statuses."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch

from neurondock_workers.hosting.contract import CUSTOM_ATTRIBUTES_HEADER, Context, ModelLoadError
from neurondock_workers.hosting.defaults import default_model_fn
from neurondock_workers.hosting.handler import Handler, load_handler

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.fixture(autouse=True)
def _isolate_imports(tmp_path):
    """User programs go on sys.path and into sys.modules; leave both as they were."""
    path, modules = sys.path[:], set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def expected(model_dir, reference_model) -> np.ndarray:
    """The tiny model's output for X, computed in-process."""
    model = reference_model(model_dir / "model.pth")
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --- the default handler ----------------------------------------------------------------------------


def test_default_handler_json_in_json_out(model_dir, expected):
    handler = load_handler(model_dir, {})

    result = handler.invoke(json.dumps(X.tolist()).encode(), "application/json", "application/json")

    assert (result.status, result.content_type) == (200, "application/json")
    np.testing.assert_allclose(np.array(json.loads(result.body)), expected, rtol=1e-6)
    assert result.model_latency_us > 0


@pytest.mark.parametrize("accept", ["application/x-npy", "application/json"])
def test_default_output_fn_encodes_a_tensor_that_requires_grad_like_one_that_does_not(accept):
    # A user's predict_fn may return a tensor still attached to autograd; numpy() alone refuses that one.
    from neurondock_workers.hosting.defaults import default_output_fn

    plain = torch.from_numpy(X.copy())
    attached = torch.from_numpy(X.copy()).requires_grad_(True) * 1.0

    assert attached.requires_grad
    assert default_output_fn(attached, accept) == default_output_fn(plain, accept)
    body, media = default_output_fn(plain, accept)
    assert media == accept
    decoded = np.load(io.BytesIO(body)) if media == "application/x-npy" else np.array(json.loads(body))
    np.testing.assert_array_equal(decoded, X)


def test_default_handler_csv_in_csv_out(model_dir, expected):
    handler = load_handler(model_dir, {})
    body = "\n".join(",".join(str(v) for v in row) for row in X.tolist()).encode()

    result = handler.invoke(body, "text/csv", "text/csv")

    assert (result.status, result.content_type) == (200, "text/csv")
    np.testing.assert_allclose(np.loadtxt(io.StringIO(result.body.decode()), delimiter=","), expected, rtol=1e-6)


def test_default_handler_npy_in_npy_out_keeps_dtype(model_dir, expected):
    handler = load_handler(model_dir, {})

    result = handler.invoke(npy(X), "application/x-npy", "application/x-npy")

    assert (result.status, result.content_type) == (200, "application/x-npy")
    out = np.load(io.BytesIO(result.body))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("accept", "env", "content_type"),
    [
        (None, {}, "application/json"),
        ("*/*", {}, "application/json"),
        ("*/*", {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/x-npy"}, "application/x-npy"),
        ("text/html, text/csv;q=0.9, application/json", {}, "text/csv"),
    ],
)
def test_default_accept_and_accept_lists(model_dir, accept, env, content_type):
    handler = load_handler(model_dir, env)

    result = handler.invoke(npy(X), "application/x-npy", accept)

    assert (result.status, result.content_type) == (200, content_type)


def test_content_type_parameters_are_ignored(model_dir, expected):
    handler = load_handler(model_dir, {})

    result = handler.invoke(json.dumps(X.tolist()).encode(), "application/json; charset=utf-8", None)

    np.testing.assert_allclose(np.array(json.loads(result.body)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "message"),
    [
        (b"\x89PNG", "image/png", "application/json", 415, "Content type image/png is not supported"),
        (b"", None, "application/json", 415, "Content type application/octet-stream is not supported"),
        (npy(X), "application/x-npy", "application/xml", 406, "Accept type application/xml is not supported"),
        (b"[[1, 2", "application/json", None, 400, "Could not decode the request body as application/json"),
        (b'[["a", "b"]]', "application/json", None, 400, "Could not decode the request body"),
        (b"1,2,x,4", "text/csv", None, 400, "Could not decode the request body as text/csv"),
        (b"  ", "text/csv", None, 400, "The request body is empty"),
        (b"\xff\xfe", "application/json", None, 400, "not valid UTF-8"),
        (
            b"not npy",
            "application/x-npy",
            None,
            400,
            "Could not decode the request body as application/x-npy",
        ),
    ],
)
def test_format_errors_carry_their_own_status(model_dir, body, content_type, accept, status, message):
    handler = load_handler(model_dir, {})

    result = handler.invoke(body, content_type, accept)

    assert result.status == status
    assert message in result.message
    assert "Traceback (most recent call last)" not in result.message and result.failure is not None
    assert "Traceback (most recent call last)" in result.failure.text()
    assert result.body.decode() == result.message


def test_pickled_npy_bodies_are_refused(model_dir):
    handler = load_handler(model_dir, {})
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)

    result = handler.invoke(buffer.getvalue(), "application/x-npy", None)

    assert result.status == 400
    assert "allow_pickle=False" in result.message


def test_a_failing_model_is_a_500_with_its_error_and_the_traceback_kept_apart(model_dir):
    handler = load_handler(model_dir, {})

    result = handler.invoke(b"[[1, 2, 3]]", "application/json", None)

    assert result.status == 500
    assert result.message.startswith("RuntimeError:")
    assert "mat1 and mat2 shapes cannot be multiplied" in result.message
    # (torch's own message quotes the TorchScript code; the Python traceback is not there.)
    assert "Traceback (most recent call last)" not in result.message and result.failure is not None
    assert "neurondock_workers" not in result.message
    assert "Traceback (most recent call last)" in result.failure.traceback


def test_default_model_fn_needs_exactly_one_model_file(tmp_path, tiny_model_file):
    with pytest.raises(ValueError, match=r"^Exactly one \.pth or \.pt file is required for PyTorch models: \[\]$"):
        default_model_fn(str(tmp_path))

    (tmp_path / "a.pt").write_bytes(tiny_model_file.read_bytes())
    (tmp_path / "b.pth").write_bytes(tiny_model_file.read_bytes())
    with pytest.raises(ValueError, match=r"required for PyTorch models: \['a\.pt', 'b\.pth'\]"):
        default_model_fn(str(tmp_path))

    (tmp_path / "model.pt").write_bytes(tiny_model_file.read_bytes())
    assert isinstance(default_model_fn(str(tmp_path)), torch.jit.ScriptModule), "model.pt wins"


def test_default_model_fn_says_when_a_file_is_not_torchscript(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pth")

    with pytest.raises(ModelLoadError, match="Please ensure model is saved using torchscript"):
        default_model_fn(str(tmp_path))


# --- user hooks -------------------------------------------------------------------------------------


def test_inference_py_hooks_replace_the_defaults(model_dir, write_code):
    write_code(
        """
        import json
        import os

        CALLS = []

        def model_fn(model_dir):
            CALLS.append("model_fn")
            assert os.path.isfile(os.path.join(model_dir, "model.pth"))
            return lambda values: [v * 2 for v in values]

        def input_fn(input_data, content_type):
            CALLS.append(("input_fn", type(input_data).__name__, content_type))
            return json.loads(input_data)["values"]

        def predict_fn(data, model):
            CALLS.append("predict_fn")
            return model(data)

        def output_fn(prediction, accept):
            CALLS.append(("output_fn", accept))
            return json.dumps({"doubled": prediction}), "application/vnd.doubled+json"
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b'{"values": [1, 2]}', "application/json", "application/json")

    assert (result.status, result.content_type) == (200, "application/vnd.doubled+json")
    assert json.loads(result.body) == {"doubled": [2, 4]}
    assert handler.module is not None
    assert handler.module.CALLS == [
        "model_fn",
        ("input_fn", "str", "application/json"),
        "predict_fn",
        ("output_fn", "application/json"),
    ]


def test_binary_bodies_reach_input_fn_as_bytes_and_body_alone_takes_accept(model_dir, write_code):
    write_code(
        """
        def input_fn(input_data, content_type):
            return input_data

        def predict_fn(data, model):
            return data[::-1]

        def output_fn(prediction, accept):
            return prediction
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b"\x00\x01\x02", "application/octet-stream", "application/octet-stream")

    assert (result.status, result.body, result.content_type) == (
        200,
        b"\x02\x01\x00",
        "application/octet-stream",
    )


def test_transform_fn_handles_the_whole_request(model_dir, write_code):
    write_code(
        """
        def model_fn(model_dir):
            return "m"

        def transform_fn(model, input_data, content_type, accept):
            return f"{model}:{input_data}:{content_type}:{accept}"
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b"1,2", "text/csv", None)

    assert (result.status, result.body, result.content_type) == (
        200,
        b"m:1,2:text/csv:application/json",
        "application/json",
    )


def test_transform_fn_with_any_other_hook_is_refused(model_dir, write_code):
    write_code(
        """
        def transform_fn(model, input_data, content_type, accept):
            return b""

        def input_fn(input_data, content_type):
            return input_data
        """
    )

    with pytest.raises(ValueError, match="Cannot use transform_fn implementation in conjunction with input_fn"):
        Handler(model_dir, {})


def test_hooks_with_a_trailing_context_receive_it(model_dir, write_code):
    write_code(
        """
        SEEN = {}

        def model_fn(model_dir, context):
            SEEN["model_dir"] = context.system_properties["model_dir"]
            return "m"

        def input_fn(input_data, content_type, context):
            SEEN["attributes"] = context.get_request_header(0, "x-amzn-sagemaker-custom-attributes")
            return input_data

        def predict_fn(data, model):
            return data.upper()

        def output_fn(prediction, accept, context):
            context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", "trace=abc")
            return prediction
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b'"hi"', "application/json", None, custom_attributes="tenant=7")

    assert (result.status, result.body, result.custom_attributes) == (200, b'"HI"', "trace=abc")
    assert handler.module is not None
    seen = handler.module.SEEN
    assert seen == {"model_dir": str(model_dir), "attributes": "tenant=7"}


def test_a_hook_with_the_wrong_arity_is_a_500_naming_it(model_dir, write_code):
    write_code(
        """
        def input_fn(input_data, content_type, context, extra):
            return input_data
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b"[1]", "application/json", None)

    assert result.status == 500
    assert "input_fn takes 4 arguments but 2 were given." in result.message


def test_errors_raised_in_user_code_become_500_with_their_type_and_message(model_dir, write_code):
    write_code(
        """
        def predict_fn(data, model):
            raise ValueError("the input has no 'text' field")
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(json.dumps(X.tolist()).encode(), "application/json", None)

    assert result.status == 500
    assert result.message == "ValueError: the input has no 'text' field"
    assert result.failure is not None and "inference.py" in result.failure.traceback


def test_user_code_may_raise_an_error_with_its_own_status(model_dir, write_code):
    write_code(
        """
        from neurondock_workers.hosting.contract import InferenceError

        def input_fn(input_data, content_type):
            raise InferenceError("text too long", status=413)
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(b"{}", "application/json", None)

    assert result.status == 413
    assert result.message == "text too long"


def test_output_must_be_bytes_or_str(model_dir, write_code):
    write_code(
        """
        def output_fn(prediction, accept):
            return {"not": "bytes"}
        """
    )
    handler = load_handler(model_dir, {})

    result = handler.invoke(json.dumps(X.tolist()).encode(), "application/json", None)

    assert result.status == 500
    assert "must return bytes or str" in result.message


def test_sagemaker_program_names_the_module_and_its_helpers_import(model_dir, write_code):
    write_code("def scale(values):\n    return [v * 10 for v in values]\n", name="serve_helpers.py")
    write_code(
        """
        import json

        from serve_helpers import scale

        def model_fn(model_dir):
            return scale

        def transform_fn(model, input_data, content_type, accept):
            return json.dumps(model(json.loads(input_data)))
        """,
        name="serve.py",
    )
    handler = load_handler(model_dir, {"SAGEMAKER_PROGRAM": "serve.py"})

    result = handler.invoke(b"[1, 2]", "application/json", None)

    assert json.loads(result.body) == [10, 20]


def test_a_missing_sagemaker_program_falls_back_to_the_defaults_and_says_so(model_dir, expected, capsys):
    handler = load_handler(model_dir, {"SAGEMAKER_PROGRAM": "absent.py"})

    result = handler.invoke(npy(X), "application/x-npy", "application/x-npy")

    np.testing.assert_allclose(np.load(io.BytesIO(result.body)), expected, rtol=1e-6)
    assert "SAGEMAKER_PROGRAM=absent.py but the model archive has no code/absent.py" in capsys.readouterr().err


def test_pre_model_fn_and_model_warmup_fn_run_around_model_fn(model_dir, write_code):
    write_code(
        """
        ORDER = []

        def pre_model_fn(model_dir):
            ORDER.append("pre")

        def model_fn(model_dir):
            ORDER.append("model")
            return "m"

        def model_warmup_fn(model_dir, model):
            ORDER.append(("warmup", model))
        """
    )
    handler = load_handler(model_dir, {})

    assert handler.module is not None
    assert handler.module.ORDER == ["pre", "model", ("warmup", "m")]


def test_load_stage_names_the_hook_that_raised(model_dir, write_code):
    write_code(
        """
        def model_fn(model_dir):
            raise FileNotFoundError("tokenizer.json")
        """
    )
    handler = Handler(model_dir, {})

    with pytest.raises(FileNotFoundError):
        handler.load_model()

    assert handler.load_stage == "model_fn"


def test_context_header_lookup_is_case_insensitive():
    context = Context(model_dir="/m", request_headers={CUSTOM_ATTRIBUTES_HEADER: "a=1"})

    assert context.get_request_header(0, "X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES") == "a=1"
    assert context.custom_attributes == "a=1"
    assert context.get_request_header(0, "Accept") is None
