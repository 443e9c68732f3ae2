"""Fine-tuning a GPT or a Llama: instruction tuning (SFT) with prompt masking, DPO, and (with
``tinygrad_llm.nn.lora``) LoRA adapters. See docs/finetune.md.

    from tinygrad_llm.checkpoint import load_for_sampling
    from tinygrad_llm.finetune import (load_records, encode_records, with_end_of_text,
                                       SFTConfig, train_sft, generate_responses)
    model, tok, _ = load_for_sampling(hf="path/to/gpt2")
    model, tok, eos = with_end_of_text(model, tok)
    examples = encode_records(load_records("data.json"), tok, eos)
    train_sft(model, examples, [], SFTConfig(epochs=2, lr=5e-5), pad_id=eos)

The command-line scripts are examples/finetune_instructions.py and examples/dpo.py.
"""
from .data import (DPO_FIELDS, END_OF_TEXT, IGNORE_INDEX, SFT_FIELDS, check_lengths, encode_records,
                   format_prompt, load_records, pair_batch, sft_batch, split_records)
from .dpo import DPOConfig, evaluate_dpo, sequence_logprobs, train_dpo
from .loop import FinetuneConfig
from .models import frozen_copy, grow_vocab, save_finetuned, with_end_of_text
from .sft import SFTConfig, evaluate_loss, exact_match, generate_responses, train_sft

__all__ = [
    "IGNORE_INDEX", "END_OF_TEXT", "SFT_FIELDS", "DPO_FIELDS", "format_prompt", "load_records", "encode_records",
    "check_lengths", "split_records", "sft_batch", "pair_batch",
    "FinetuneConfig", "SFTConfig", "train_sft", "evaluate_loss", "generate_responses", "exact_match",
    "DPOConfig", "sequence_logprobs", "train_dpo", "evaluate_dpo",
    "with_end_of_text", "grow_vocab", "frozen_copy", "save_finetuned",
]
