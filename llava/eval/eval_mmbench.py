"""MMBench dev's declaration and score stub: scored by the OpenCompass server (see docs/Evaluation.md).

Usage (``mmbench.sh`` runs it after building the upload sheet with
``scripts/convert_mmbench_for_submission.py``)::

    python -m llava.eval.eval_mmbench \\
        --result-file playground/data/eval/mmbench/answers/mmbench_dev_20230712/CKPT.jsonl \\
        --upload-file playground/data/eval/mmbench/answers_upload/mmbench_dev_20230712/CKPT.xlsx

There is no local metric: the server extracts the option letter from the raw answer and applies
CircularEval. This writes ``CKPT.scores.json`` beside the answers with ``"server_score": null`` (a
number already there is kept); write the server's number there by hand, or pass it to
``llava.eval.report`` with ``--server-score NAME:MMB=...``.
"""

from __future__ import annotations

from llava.eval.benchmarks import OPTION_LETTER_SUFFIX, SERVER_SCORE, Benchmark, register, server_stub_main

BENCHMARK = register(
    Benchmark(
        name="mmbench",
        column="MMB",
        metric=SERVER_SCORE,
        metric_name="CircularEval accuracy on dev x100 from the OpenCompass server, entered by hand",
        runner="llava.eval.model_vqa_mmbench",
        scorer="llava.eval.eval_mmbench",
        script="mmbench.sh",
        server_scored=True,
        table1=5,
        prompt_suffix=OPTION_LETTER_SUFFIX["en"],
        suffix_flag="--single-pred-prompt",
        max_new_tokens=1024,
        legacy_folders=("mmbench",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    return server_stub_main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
