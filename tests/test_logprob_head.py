"""Chunked log-probs and padding-free batches change nothing but memory and time.

Each objective's loss and gradients on one batch are computed three ways: through TRL's fused head
with one tile over the whole (tiny) vocabulary, which is the plain unchunked computation; through
our head with the vocabulary cut into uneven chunks; and through our head on packed rows. They
agree to float32 precision, for full fine-tuning, LoRA and NeST. A packed row keeps attention inside
each sequence: changing one sequence's tokens leaves every other sequence's log-probs unchanged.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from align_train.data import DataBundle
from align_train.inference.logprobs import LogprobHead, compact_token_logprobs, install_logprob_head, logprob_head_of
from align_train.models import frozen_copy, load_model, load_tokenizer
from align_train.objectives import make_objective
from align_train.training_args import common_trainer_args
from align_train.tuning import make_tuning
from tests.conftest import compose_config
from tests.test_bco import feedback_rows
from tests.test_losses import one_batch, pairs

PLAIN = ["objective.chunked_logprobs=false"]  # TRL's head: one tile holds the whole 2,048-token vocabulary
CHUNKED = ["objective.logprob_vocab_chunk=300"]  # seven tiles, the last one short
PACKED = [*CHUNKED, "objective.padding_free=true"]
BATCH = ["train.global_batch_size=4", "train.per_device_batch_size=4"]


def messages(n: int) -> list[dict]:
    return [{"messages": p["prompt"] + p["chosen"]} for p in pairs(n)]


CASES = {  # name: (recipe overrides, rows, data format)
    "dpo-sigmoid": (["recipe=tiny/dpo"], pairs, "preference"),
    "dpo-ipo": (["recipe=tiny/dpo", "objective.loss_type=[ipo]"], pairs, "preference"),
    "dpo-hinge-sft": (["recipe=tiny/dpo", "objective.loss_type=[hinge,sft]", "objective.loss_weights=[1.0,0.5]"],
                      pairs, "preference"),
    "dpo-wpo": (["recipe=tiny/dpo", "objective.use_weighting=true"], pairs, "preference"),
    "kto": (["recipe=tiny/kto"], feedback_rows, "feedback"),
    "bco": (["recipe=tiny/bco"], feedback_rows, "feedback"),
    "sft": (["recipe=tiny/sft", "eval=none", "objective.assistant_only_loss=false"], messages, "messages"),
    "simpo": (["recipe=tiny/simpo"], pairs, "preference"),
    "orpo": (["recipe=tiny/orpo"], pairs, "preference"),
    "cpo": (["recipe=tiny/cpo"], pairs, "preference"),
}


def loss_and_grads(overrides, rows, fmt, tmp_path):
    """One batch's loss and the gradient of every trainable parameter, through the run's own wiring."""
    trainer, _, _, batch = one_batch(compose_config(*overrides, *BATCH), rows, fmt, tmp_path)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert grads and any(g.abs().sum() > 0 for g in grads.values())
    return loss.item(), grads, trainer


def assert_same(a, b):
    (loss_a, grads_a, _), (loss_b, grads_b, _) = a, b
    assert loss_b == pytest.approx(loss_a, abs=1e-5, rel=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        # float32 sums in another order: equal to 1e-5 of the gradient's own scale
        scale = float(grads_a[name].abs().max())
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5 * scale + 1e-8,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_and_packed_give_the_unchunked_loss_and_gradients(case, tmp_path):
    overrides, rows, fmt = CASES[case]
    plain = loss_and_grads([*overrides, *PLAIN], rows(4), fmt, tmp_path / "plain")
    assert logprob_head_of(plain[2].model) is None
    chunked = loss_and_grads([*overrides, *CHUNKED], rows(4), fmt, tmp_path / "chunked")
    assert logprob_head_of(chunked[2].model) == LogprobHead(vocab_chunk=300)
    assert_same(plain, chunked)
    packed = loss_and_grads([*overrides, *PACKED], rows(4), fmt, tmp_path / "packed")
    assert logprob_head_of(packed[2].model).padding_free
    assert_same(plain, packed)


@pytest.mark.parametrize("tuning", ["lora", "nest"])
@pytest.mark.parametrize("case", ["dpo-sigmoid", "kto", "simpo"])
def test_lora_and_nest_read_the_same_log_probs_chunked_and_packed(case, tuning, tmp_path):
    overrides, rows, fmt = CASES[case]
    overrides = [*overrides, f"tuning={tuning}"]
    plain = loss_and_grads([*overrides, *PLAIN], rows(4), fmt, tmp_path / "plain")
    assert_same(plain, loss_and_grads([*overrides, *CHUNKED], rows(4), fmt, tmp_path / "chunked"))
    assert_same(plain, loss_and_grads([*overrides, *PACKED], rows(4), fmt, tmp_path / "packed"))


@pytest.fixture(scope="module")
def tiny_model():
    cfg = compose_config("recipe=tiny/dpo")
    torch.manual_seed(0)
    return load_model(cfg.model).eval()


def padded_batch(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 2048, (n,), generator=generator)
        mask[i, :n] = 1
    return ids, mask


def test_no_token_attends_across_a_sequence_boundary(tiny_model):
    """Packed into one row, changing every token of one sequence changes no other sequence's log-probs."""
    ids, mask = padded_batch([9, 17, 5, 12])
    labels = ids.masked_fill(mask == 0, -100)
    packed = LogprobHead(vocab_chunk=500, padding_free=True)
    with torch.no_grad():
        before = compact_token_logprobs(tiny_model, ids, labels=labels, attention_mask=mask, head=packed).log_probs
        for victim in range(len(ids)):
            changed = ids.clone()
            changed[victim, : int(mask[victim].sum())] = torch.randint(5, 2048, (int(mask[victim].sum()),),
                                                                      generator=torch.Generator().manual_seed(100 + victim))
            after = compact_token_logprobs(tiny_model, changed, labels=changed.masked_fill(mask == 0, -100),
                                           attention_mask=mask, head=packed).log_probs
            others = [i for i in range(len(ids)) if i != victim]
            torch.testing.assert_close(after[others], before[others], rtol=0, atol=0)
            assert not torch.equal(after[victim], before[victim])  # the probe itself moves what it touches
        # and the packed row gives each sequence the log-probs it has alone in a padded batch
        padded = compact_token_logprobs(tiny_model, ids, labels=labels, attention_mask=mask,
                                        head=LogprobHead(vocab_chunk=500)).log_probs
        full = torch.log_softmax(tiny_model(input_ids=ids, attention_mask=mask).logits[:, :-1], -1)
        by_hand = full.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
    torch.testing.assert_close(before, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded, by_hand, rtol=1e-5, atol=1e-5)


def test_installed_head_answers_only_fused_calls(tiny_model):
    """Generation and evaluation call the model without fused_lm_head: they get logits as before."""
    import copy

    model = copy.deepcopy(tiny_model)
    ids, mask = padded_batch([6, 4])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        install_logprob_head(model, LogprobHead(vocab_chunk=100, padding_free=True))
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, before, rtol=0, atol=0)


def batch_lengths(tmp_path, rows, *overrides):
    """The chosen sequences' token counts in each training batch, in the order the trainer draws them."""
    cfg = compose_config("recipe=tiny/dpo", "train.global_batch_size=4", "train.per_device_batch_size=4", *overrides)
    objective, tuning = make_objective(cfg.objective), make_tuning(cfg.tuning)
    model = load_model(cfg.model)
    data = DataBundle(format="preference", train=Dataset.from_list(rows), eval=None)
    args = objective.make_args(common_trainer_args(cfg, str(tmp_path), 1), data)
    trainer = objective.build_trainer(tuning.apply(model), frozen_copy(model), load_tokenizer(cfg.model), data, args,
                                      [])
    batches = []
    for batch in trainer.get_train_dataloader():
        rows_in_batch = len(batch["input_ids"]) // 2  # chosen first, then rejected
        batches.append(batch["attention_mask"][:rows_in_batch].sum(1).tolist())
    return batches


def test_group_by_length_batches_rows_of_similar_length(tmp_path):
    """Grouped batches (transformers' LengthGroupedSampler) pad far less than shuffled ones, and hold every row."""
    rows = pairs(64)
    for i, row in enumerate(rows):  # lengths spread widely
        row["chosen"] = [{"role": "assistant", "content": row["chosen"][0]["content"] + " More." * (i * 37 % 64)}]
    shuffled = batch_lengths(tmp_path / "a", rows)
    grouped = batch_lengths(tmp_path / "b", rows, "objective.group_by_length=true")
    assert sorted(n for b in grouped for n in b) == sorted(n for b in shuffled for n in b)

    def padding(batches):
        return sum(max(b) * len(b) - sum(b) for b in batches)

    assert padding(grouped) < 0.5 * padding(shuffled)
