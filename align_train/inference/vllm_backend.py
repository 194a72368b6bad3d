"""Generation through vLLM: for scoring saved models on a GPU, many times faster than transformers' generate.

Optional (``generation.backend=vllm``): it needs vLLM installed and a CUDA GPU, and it loads the
model from its saved directory or hub id, so it serves ``align-eval``, not the in-training hook
(which scores the weights in memory). Prompts are rendered by ``prompts.render_prompt``, the same
text the transformers path tokenises; greedy unless the config samples.
"""

from __future__ import annotations

import importlib.util

_ENGINES: dict[str, object] = {}


def vllm_unavailable() -> str | None:
    """Why the vLLM backend cannot run here, or None when it can."""
    import torch

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm)"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and this machine has none"
    return None


def generate_with_vllm(model_path: str, tokenizer, prompts: list, cfg, chat: bool = True) -> list[str]:
    """Completions for the prompts, in order, from a vLLM engine over the saved model (one engine per path)."""
    from vllm import LLM, SamplingParams

    from align_train.inference.prompts import render_prompt

    reason = vllm_unavailable()
    if reason:
        raise RuntimeError(f"generation.backend=vllm: {reason}")
    if model_path not in _ENGINES:
        _ENGINES.clear()  # one engine at a time: each holds most of the GPU's memory
        _ENGINES[model_path] = LLM(model=model_path, tokenizer=model_path)
    params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature if cfg.do_sample else 0.0,
                            top_p=cfg.top_p if cfg.do_sample else 1.0)
    texts = [render_prompt(tokenizer, p, cfg.system_prompt, chat=chat) for p in prompts]
    outputs = _ENGINES[model_path].generate(texts, params, use_tqdm=False)
    return [out.outputs[0].text.strip() for out in outputs]
