"""The user's hooks from ``code/<SAGEMAKER_PROGRAM>``, or the toolkit's defaults, bound to one model directory.

Works like ``sagemaker_inference.transformer`` with the PyTorch toolkit's default handler
(``docs/runtime.md``, "The inference contract"), so a ``model.tar.gz`` written for SageMaker runs
here unchanged; the defaults themselves are in ``defaults.py``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from neurondock_workers.hosting.contract import JSON, Context
from neurondock_workers.hosting.defaults import (
    default_input_fn,
    default_model_fn,
    default_output_fn,
    default_predict_fn,
)
from neurondock_workers.hosting.pipeline import Pipeline

DEFAULT_PROGRAM = "inference.py"

Hook = Callable[..., Any]
_HOOK_NAMES = (
    "model_fn",
    "input_fn",
    "predict_fn",
    "output_fn",
    "transform_fn",
    "pre_model_fn",
    "model_warmup_fn",
)


def _arity(fn: Hook) -> int:
    return len(inspect.signature(fn).parameters)


def _call(fn: Hook, args: tuple[Any, ...], context: Context, arity: int | None = None) -> Any:
    # The toolkit picks by arity: a hook with one parameter more than the contract gets the context.
    count = _arity(fn) if arity is None else arity
    if count == len(args):
        return fn(*args)
    if count == len(args) + 1:
        return fn(*args, context)
    name = getattr(fn, "__name__", repr(fn))
    raise TypeError(f"{name} takes {count} arguments but {len(args)} were given.")


# The contract's arguments of each per-request hook, the context not counted.
_ARGS = {"input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}


def _caller(fn: Hook, given: int) -> Hook:
    """``fn`` as a callable taking its contract's arguments and then the context, whatever its arity.

    Built once per hook: the call a request makes is then the hook's own (plus one frame when the
    hook does not take the context), not an arity check and two argument tuples.
    """
    count = _arity(fn)
    if count == given + 1:
        return fn
    if count == given:
        return lambda *args: fn(*args[:-1])
    return lambda *args: _call(fn, args[:-1], args[-1], count)  # raises the toolkit's TypeError


def _module_name(program: str) -> str:
    return program[:-3] if program.endswith(".py") else program


class Handler:
    """The user's hooks (or the defaults) bound to one model directory."""

    def __init__(self, model_dir: Path | str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.model_dir = Path(model_dir)
        self.code_dir = self.model_dir / "code"
        self.program = env.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON
        self.model: Any = None
        # Which startup hook is running, so a failure can name it ("model_fn raised: ...").
        self.load_stage = "model_fn"
        self.module = self._import_user_module(explicit="SAGEMAKER_PROGRAM" in env)

        hooks: dict[str, Hook | None] = {
            name: getattr(self.module, name, None) if self.module is not None else None for name in _HOOK_NAMES
        }
        if hooks["transform_fn"] and (hooks["input_fn"] or hooks["predict_fn"] or hooks["output_fn"]):
            raise ValueError(
                "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, "
                "and/or output_fn implementation"
            )
        # None where the program defines no such hook: the pipeline treats the defaults differently.
        self.user_predict_fn = hooks["predict_fn"]
        self.user_transform_fn = hooks["transform_fn"]
        self.model_fn: Hook = hooks["model_fn"] or default_model_fn
        self.pre_model_fn = hooks["pre_model_fn"]
        self.model_warmup_fn = hooks["model_warmup_fn"]
        self._hooks: dict[str, Hook] = {
            "input_fn": hooks["input_fn"] or default_input_fn,
            "predict_fn": hooks["predict_fn"] or default_predict_fn,
            "output_fn": hooks["output_fn"] or default_output_fn,
        }
        if self.user_transform_fn is not None:
            self._hooks["transform_fn"] = self.user_transform_fn
        # inspect.signature costs ~10 µs; the hooks never change, so each is bound to its arity once.
        self._callers = {name: _caller(fn, _ARGS[name]) for name, fn in self._hooks.items()}
        self.pipeline = Pipeline(self)
        # Answer one request through the hooks, as an unbatched replica does; never raises.
        self.invoke = self.pipeline.invoke

    def _import_user_module(self, explicit: bool) -> ModuleType | None:
        name = _module_name(self.program)
        path = self.code_dir / f"{name}.py"
        if not path.is_file():
            if explicit:
                # The toolkit silently falls back to the defaults here; say so where the user will look.
                print(
                    f"neurondock: SAGEMAKER_PROGRAM={self.program} but the model archive has no "
                    f"code/{name}.py; using the default PyTorch handler",
                    file=sys.stderr,
                    flush=True,
                )
            return None
        # The code dir and its lib/ go on sys.path so the program can import its own helpers.
        for extra in (self.code_dir / "lib", self.code_dir):
            if extra.is_dir() and str(extra) not in sys.path:
                sys.path.insert(0, str(extra))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"Cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def call(self, hook: str, *args: Any) -> Any:
        """Call ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn``; the last argument is the context."""
        return self._callers[hook](*args)

    def load_model(self) -> Any:
        """Run pre_model_fn, model_fn and model_warmup_fn once, as the toolkit does at startup."""
        context = Context(model_dir=str(self.model_dir))
        model_dir = str(self.model_dir)
        if self.pre_model_fn is not None:
            self.load_stage = "pre_model_fn"
            _call(self.pre_model_fn, (model_dir,), context)
        self.load_stage = "model_fn"
        self.model = _call(self.model_fn, (model_dir,), context)
        if self.model_warmup_fn is not None:
            self.load_stage = "model_warmup_fn"
            _call(self.model_warmup_fn, (model_dir, self.model), context)
        return self.model


def load_handler(model_dir: Path | str, environ: Mapping[str, str] | None = None) -> Handler:
    """Import the user's program and load the model; what a replica does before it listens."""
    handler = Handler(model_dir, environ)
    handler.load_model()
    return handler
