"""Reading models: how a prompt becomes model input, and what comes back.

One way to render a prompt (``prompts``), one batched generator (``generation``), one reader of
pooled hidden states and module inputs (``activations``), one log-prob scorer (``logprobs``) and
one loader of side models such as judges and encoders (``side_models``). Training data goes
through TRL's own tokenisation; everything else that reads a model (the evaluation suites and
judges, NeST's probe, BCO's distribution matching, spec-document generation) comes through here,
so they all see a prompt as the same token ids.
"""

from align_train.inference.activations import pooled_hidden_states, pooled_module_inputs
from align_train.inference.generation import generate
from align_train.inference.logprobs import completion_logprobs, encode_completion
from align_train.inference.prompts import prompt_ids, render_prompt
from align_train.inference.side_models import load_side_model

__all__ = ["completion_logprobs", "encode_completion", "generate", "load_side_model", "pooled_hidden_states",
           "pooled_module_inputs", "prompt_ids", "render_prompt"]
