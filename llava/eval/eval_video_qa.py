"""The declarations of PruMerge Table 3's zero-shot video-QA benchmarks: MSVD-QA, MSRVTT-QA, ActivityNet-QA.

They are scored by the LLM judge :mod:`llava.eval.video_qa_judge` (which stamps its score files with them)
and answered by :mod:`llava.eval.model_video_qa`. They live in this ``eval_<name>`` module so that the
registry finds them as it finds every other benchmark, and ``python -m llava.eval.report`` puts them in
its Table 3 layout (accuracy / average score, with the mean visual tokens and kept fraction) without
importing the judge. See docs/VideoQA.md.
"""

from __future__ import annotations

from llava.eval.benchmarks import Benchmark, register

_COMMON = {
    "metric": "accuracy_percent",
    "metric_name": "LLM judge (Video-ChatGPT protocol): answers judged 'yes' / (judged 'yes' + judged 'no'), "
    "x100; the average 0-5 score is 'average_score'",
    "second_metric": "average_score",
    "runner": "llava.eval.model_video_qa",
    "scorer": "llava.eval.video_qa_judge",
    "max_new_tokens": 1024,
    "fixed_answers_stem": "merge",
}
#: One declaration per dataset of PruMerge Table 3 (not Table 1 columns), keyed by the judge's --dataset.
BENCHMARKS = {
    dataset: register(
        Benchmark(
            name=f"{dataset}_qa",
            column=column,
            table3=i,
            **_COMMON,
        )
    )
    for i, (dataset, column) in enumerate(
        (("msvd", "MSVD-QA"), ("msrvtt", "MSRVTT-QA"), ("activitynet", "ActivityNet-QA"))
    )
}
