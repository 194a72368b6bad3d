"""Log-probabilities of completions given their prompts: the one scorer of held-out rows.

Prompt and completion are tokenised the way TRL tokenises training rows: a conversational
prompt through the chat template with the generation prompt, and the completion as the rest of
the full conversation's tokens; a plain-text prompt and completion as text, the completion ended
by EOS. Only completion tokens are scored.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch

from align_train.inference.sharding import map_batches, parameters_sharded


def encode_completion(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the completion that follows it."""
    if isinstance(completion, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        full_ids = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True)
        prompt_ids, full_ids = _ids(prompt_ids), _ids(full_ids)
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template renders the prompt differently inside the full conversation")
        return prompt_ids, full_ids[len(prompt_ids):]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    if not prompt_ids and tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id]
    return prompt_ids, completion_ids


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@torch.no_grad()
def completion_logprobs(model, tokenizer, pairs, batch_size: int = 8, max_length: int = 1024):
    """Summed log-probability and token count of each completion given its prompt.

    Batches group rows of similar length and are shared out across processes (``sharding``).
    """
    model_was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score(batch: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
        seqs = [(p + c)[:max_length] for p, c in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for i, ((p, _), seq) in enumerate(zip(batch, seqs)):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            scored[i, max(len(p), 1): len(seq)] = True  # the first token has no prediction
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        token_logp = token_logp * scored[:, 1:].to(device)
        return [(token_logp[i].sum().item(), int(scored[i].sum())) for i in range(len(seqs))]

    try:
        encoded = [encode_completion(tokenizer, p, c) for p, c in pairs]
        return map_batches(score, encoded, batch_size, length=lambda pc: min(len(pc[0]) + len(pc[1]), max_length),
                           lockstep=parameters_sharded(model))
    finally:
        model.train(model_was_training)


@torch.no_grad()
def continuation_nll(model, prompt_seqs: list[list[int]], continuation_seqs: list[list[int]], pad_token: int,
                     batch_size: int = 8, around_forward=None) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (exact token ids given).

    Batches are right-padded with real-token position ids, and shared out across processes
    (``sharding``). ``around_forward(prompt_mask)``, when given, returns a context manager entered
    around each batch's forward with the (batch, tokens) mask of that batch's prompt positions (a
    latent perturbation at the prompt, for instance). An empty continuation scores None.
    """
    from contextlib import nullcontext

    from align_train.inference.prompts import pad, position_ids

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def score(batch: list[tuple[list[int], list[int]]]) -> list[float | None]:
        ids, mask = pad([p + c for p, c in batch], pad_token, side="right")
        prompt_mask = torch.zeros_like(mask, dtype=torch.bool)
        scored = torch.zeros_like(mask, dtype=torch.bool)
        for i, (p, c) in enumerate(batch):
            prompt_mask[i, : len(p)] = True
            scored[i, len(p): len(p) + len(c)] = True
        ids, mask = ids.to(device), mask.to(device)
        with (around_forward(prompt_mask) if around_forward else nullcontext()):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                           use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        target = scored[:, 1:].to(device)
        results: list[float | None] = []
        for i in range(len(batch)):
            n = int(target[i].sum())
            results.append(-(logp[i] * target[i]).sum().item() / n if n else None)
        return results

    try:
        return map_batches(score, list(zip(prompt_seqs, continuation_seqs)), batch_size,
                           lockstep=parameters_sharded(model))
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- training-time log-probs

# The per-token fields TRL's trainers read from their fused LM head's output.
ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


@dataclass(frozen=True)
class LogprobHead:
    """How training reads per-token log-probs from a model (``install_logprob_head``).

    ``vocab_chunk``: vocabulary columns of the output projection per tile; the largest logits
    tensor that exists at once is (scored tokens x vocab_chunk), never (batch x length x vocabulary).
    ``padding_free``: the rows of a batch are packed into one row (position ids restarting per
    sequence, attention kept inside each sequence) so no padding token is computed.
    """

    vocab_chunk: int = 8192
    padding_free: bool = False


def install_logprob_head(model, head: LogprobHead, outputs: tuple[str, ...] = ALL_OUTPUTS) -> None:
    """Make ``model(..., labels=..., fused_lm_head=True)`` read log-probs through ``compact_token_logprobs``.

    TRL's trainers call their models this way after ``trl.trainer.utils.add_fused_lm_head``; its
    head projects every position, prompt and padding included, in (tokens x 32,768) tiles. This one
    projects only the positions that have a label, in (scored tokens x ``head.vocab_chunk``) tiles,
    optionally on a packed row, through TRL's own chunked kernel (recomputed in backward), and
    returns the same fields. Calls without ``fused_lm_head`` (generation, evaluation) are untouched.
    """
    previous = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        if not fused_lm_head or args or not _plain_head(getattr(self, "config", None)):
            # generation and evaluation, positional calls, MoE aux losses and rescaled logits: TRL's head
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                            num_items_in_batch=num_items_in_batch, **kwargs)
        return compact_token_logprobs(self, labels=labels, shift_labels=shift_labels,
                                      num_items_in_batch=num_items_in_batch, head=head, outputs=outputs, **kwargs)

    model.forward = types.MethodType(forward, model)
    model._align_train_logprob_head = head


def _plain_head(config) -> bool:
    """Logits are the output projection as it is (no MoE router loss, no logit multiplier TRL knows of)."""
    if not hasattr(config, "get_text_config"):  # not a transformers model's config: leave it to TRL's head
        return False
    text_config = config.get_text_config()
    return not any(getattr(text_config, name, None) for name in (
        "output_router_logits", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))


def logprob_head_of(model) -> LogprobHead | None:
    return getattr(model, "_align_train_logprob_head", None)


def pack_rows(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the real tokens of each row, in row order; their position ids, restarting at 0 in every row)."""
    keep = attention_mask.bool()
    positions = keep.long().cumsum(1) - 1
    return keep, positions[keep].unsqueeze(0)


def compact_token_logprobs(model, input_ids, labels=None, shift_labels=None, num_items_in_batch=None,
                           attention_mask=None, position_ids=None, head: LogprobHead = LogprobHead(),
                           outputs: tuple[str, ...] = ALL_OUTPUTS, **kwargs):
    """TRL's ``FusedCausalLMOutput`` for ``input_ids``, computing logits only for labelled positions.

    ``labels`` are shifted here (the label of position t scores the prediction at t - 1);
    ``shift_labels`` are already aligned. Positions labelled -100 get log-prob 0, as in TRL.
    """
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx

    text_config = model.config.get_text_config()
    batch, length = input_ids.shape
    if shift_labels is None:
        aligned = torch.cat([labels[:, 1:], labels.new_full((batch, 1), -100)], dim=1)
    else:
        aligned = shift_labels
    kwargs["use_cache"] = False
    packed = head.padding_free and attention_mask is not None and position_ids is None and attention_mask.dim() == 2
    if packed:
        # One row; transformers sees position ids restarting without a 2D mask and keeps attention inside each
        # sequence (a block-diagonal causal mask for eager and sdpa, varlen kernels for flash attention).
        keep, positions = pack_rows(attention_mask)
        hidden = model.base_model(input_ids=input_ids[keep].unsqueeze(0), position_ids=positions, **kwargs)
        row_labels = aligned[keep]
    else:
        keep = None
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  **kwargs)
        row_labels = aligned.reshape(-1)
    hidden = hidden.last_hidden_state.reshape(-1, hidden.last_hidden_state.size(-1))
    scored = row_labels != -100
    lm_head = model.get_output_embeddings()
    weight, bias = lm_head.weight, lm_head.bias
    if hasattr(weight, "full_tensor"):  # FSDP2 DTensor: gather the head once, as TRL does
        weight = weight.full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    with maybe_gather_lm_head_ctx(weight, bias):
        values = ChunkedLogProbFunction.apply(
            hidden[scored].to(weight.device), weight, bias, row_labels[scored].to(weight.device), 1.0,
            head.vocab_chunk, getattr(text_config, "final_logit_softcapping", None), 1.0, outputs)
    # Back to the (batch, length) grid, zero where nothing is scored; masked_scatter keeps an all-masked batch
    # connected to the model.
    grid = torch.zeros(batch, length, dtype=torch.bool, device=aligned.device)
    if packed:
        grid[keep] = scored
    else:
        grid = scored.view(batch, length)
    fields = [None if v is None else v.new_zeros(batch, length).masked_scatter(grid, v) for v in values]
    mask = grid
    if shift_labels is None:
        fields = [None if f is None else f[:, :-1] for f in fields]
        mask = grid[:, :-1]
    log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = fields
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(loss=-log_probs.sum() / denominator, log_probs=log_probs, entropy=entropy,
                               log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits,
                               is_top1=None if is_top1 is None else is_top1.bool(), label_mask=mask)
