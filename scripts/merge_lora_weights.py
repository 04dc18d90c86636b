"""Merge a LoRA checkpoint into its base LLM and save a full LLaVA-1.5 checkpoint.

    python scripts/merge_lora_weights.py --model-path ./checkpoints/llava-v1.5-7b-lora \
        --model-base lmsys/vicuna-7b-v1.5 --save-model-path ./checkpoints/llava-v1.5-7b-merged

The LoRA folder is recognised by its adapter_config.json (its name does not matter); --model-base
must be the base LLM it was trained on, not a LLaVA checkpoint. Runs on the CPU in float32 by
default (`--dtype float16` halves the file size). The token reduction recorded in the LoRA config
is kept (override it with --token-reduction).
"""

import argparse

import torch

from llava.model.loader import load_pretrained_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", required=True)
    parser.add_argument("--save-model-path", required=True)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--token-reduction", default=None)
    args = parser.parse_args(argv)
    tokenizer, model, _, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        device="cpu",
        dtype=getattr(torch, args.dtype),
        token_reduction=args.token_reduction,
    )
    model.save_pretrained(args.save_model_path)
    tokenizer.save_pretrained(args.save_model_path)
    print(f"Merged model saved to {args.save_model_path}")


if __name__ == "__main__":
    main()
