"""Prompt sets and batched generation for the generation-based suites (refusal, over-refusal).

Generation is greedy by default so that the same checkpoint always gets the same score, and
batched with left padding so that large models are evaluated at a sensible speed.
"""

from __future__ import annotations

import random

import torch

from align_train.data.sources import read_records
from align_train.errors import ConfigError, DataError


def prompt_text(value) -> str | None:
    """A prompt from a string, or the last user turn of a list of chat messages; None if neither."""
    if isinstance(value, list):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else None
    return value if isinstance(value, str) and value.strip() else None


def load_prompts(key: str, cfg, seed: int) -> list[str]:
    """The prompts of a ``PromptSetConfig``: filtered by ``where``, then a seeded sample of ``max_prompts``.

    The column may hold plain prompts or chat messages (training data), whose last user turn is taken.
    """
    if not cfg.path:
        raise ConfigError(f"{key}.path: the suite is enabled but names no prompt file or dataset")
    prompts = []
    for where, row in read_records(key, cfg.path, cfg.subset, cfg.split):
        if cfg.column not in row:
            raise DataError(f"{where}: no column '{cfg.column}' ({key}.column); present: {sorted(row)}")
        missing = [c for c in cfg.where if c not in row]
        if missing:
            raise DataError(f"{where}: {key}.where names column(s) {missing} that are absent; present: {sorted(row)}")
        if all(str(row[c]) == str(v) for c, v in cfg.where.items()):
            text = prompt_text(row[cfg.column])
            if text is None:
                raise DataError(f"{where}: '{cfg.column}' is empty, or neither a string nor chat messages with a user turn")
            prompts.append(text)
    if not prompts:
        raise DataError(f"{key}: no prompts in '{cfg.path}' match {dict(cfg.where)}")
    if len(prompts) > cfg.max_prompts:
        prompts = random.Random(seed).sample(prompts, cfg.max_prompts)
    return prompts


def render(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """The prompt as the model sees it: a user turn in its chat template, or the raw text without one."""
    if not tokenizer.chat_template:
        return prompt
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], cfg) -> list[str]:
    """Completions for the prompts (a ``GenerationConfig`` says how), in order."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    device = next(model.parameters()).device
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), cfg.batch_size):
            texts = [render(tokenizer, p, cfg.system_prompt) for p in prompts[start:start + cfg.batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)
            batch = {k: v.to(device) for k, v in batch.items()}
            sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.do_sample else {
                "do_sample": False}
            generated = model.generate(
                **batch, max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [o.strip() for o in outputs]
