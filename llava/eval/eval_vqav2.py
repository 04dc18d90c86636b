"""VQAv2 test-dev's declaration and score stub: scored by the EvalAI server (see docs/Evaluation.md).

Usage (``vqav2.sh`` runs it after building the upload file with ``scripts/convert_vqav2_for_submission.py``)::

    python -m llava.eval.eval_vqav2 \\
        --result-file playground/data/eval/vqav2/answers/llava_vqav2_mscoco_test-dev2015/CKPT/merge.jsonl \\
        --upload-file playground/data/eval/vqav2/answers_upload/llava_vqav2_mscoco_test-dev2015/CKPT.json

There is no local metric. This writes ``merge.scores.json`` beside the answers with
``"server_score": null`` (a number already there is kept); write the server's test-dev accuracy there
by hand, or pass it to ``llava.eval.report`` with ``--server-score NAME:VQAv2=...``.
"""

from __future__ import annotations

from llava.eval.benchmarks import SERVER_SCORE, SHORT_ANSWER_SUFFIX, Benchmark, register, server_stub_main
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor

BENCHMARK = register(
    Benchmark(
        name="vqav2",
        column="VQAv2",
        metric=SERVER_SCORE,
        metric_name="VQA accuracy on test-dev x100 from the EvalAI server (challenge 830), entered by hand",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_vqav2",
        script="vqav2.sh",
        server_scored=True,
        table1=0,
        prompt_suffix=SHORT_ANSWER_SUFFIX,
        parse_answer=EvalAIAnswerProcessor(),
        fixed_answers_stem="merge",
        legacy_folders=("vqav2",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    return server_stub_main(BENCHMARK, argv)


if __name__ == "__main__":
    main()
