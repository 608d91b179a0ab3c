"""Text from a language-model checkpoint, through the recurrent state (hgrn.eval.generation):

    python -m hgrn.generate --ckpt <run>/checkpoints/best.ckpt --prompt "The market" --max-new-tokens 50 \
        --temperature 0.8 --top-k 50 --top-p 0.95 --seed 0

Prints the prompt and its continuation; temperature 0 is greedy; the same seed gives the same text.
"""

from __future__ import annotations

import argparse

import torch

from hgrn.data.lm.tokenizer import gpt2_tokenizer
from hgrn.eval.checkpoint import load_causal_lm
from hgrn.eval.cli import exit_on_bad_input
from hgrn.eval.generation import Sampling, generate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hgrn.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a checkpoint of an LM run (python -m hgrn.train)")
    p.add_argument("--prompt", required=True, help="the text to continue (at least one token)")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="sample among the most likely tokens holding this probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, ...; default: the GPU if any")
    return p


def main(argv: list[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    tokenizer = gpt2_tokenizer()
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids:
        cli.error("--prompt is empty: give some text to continue")
    with exit_on_bad_input():
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        loaded = load_causal_lm(args.ckpt, args.device)
        prompt = torch.tensor([prompt_ids], dtype=torch.long)
        generator = torch.Generator(loaded.device).manual_seed(args.seed)
        tokens = generate(loaded.model, prompt, args.max_new_tokens, sampling, generator, eot_id=tokenizer.eot_id)
    new_tokens = [t for t in tokens[0].tolist() if t != tokenizer.eot_id]
    print(args.prompt + tokenizer.decode(new_tokens))


if __name__ == "__main__":
    main()
