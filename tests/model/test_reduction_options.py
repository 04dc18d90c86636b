"""The reduction's options: declared once on ReductionConfig, checked by each reducer, and every surface
(command lines, training flags, lmms-eval model_args, Cog, the demo) generated from that declaration."""

import argparse
import subprocess
import sys

import pytest
import transformers

from llava.model.token_reduction import ReductionConfig, available_reducers, get_reducer
from llava.model.token_reduction.args import (
    CLEAR,
    ReductionArguments,
    add_reduction_args,
    apply_changes,
    option_specs,
    reduction_changes,
    reduction_keys,
)
from llava.model.token_reduction.config import option_fields


def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_reduction_args(parser)
    return parser


def test_every_option_reaches_every_surface():
    fields = [f.name for f in option_fields()]
    assert fields == [
        "method",
        "variant",
        "form",
        "budget",
        "ratio",
        "num_neighbors",
        "iqr_scale",
        "iqr_group",
        "grid",
        "llm_layer",
        "atp_layers",
        "atp_target_tokens",
        "atp_temperature",
        "atp_spatial_lambda",
        "atp_redundancy_threshold",
        "atp_spatial_threshold",
    ]
    cli_flags = {a.option_strings[0] for a in cli_parser()._actions if a.option_strings and a.dest != "help"}
    training = {f for f in ReductionArguments.__dataclass_fields__}
    assert len(cli_flags) == len(training) == len(reduction_keys()) == len(fields)
    for name, spec in option_specs().items():
        assert f"--{spec.flag}" in cli_flags
        assert spec.arg_name in training and spec.arg_name in reduction_keys()
        training_default = getattr(ReductionArguments(), spec.arg_name)
        if spec.format is not None and training_default is not None:  # a tuple option is a string flag
            training_default = spec.parse(training_default)
        assert training_default == getattr(ReductionConfig(), name)  # one default


def test_cli_reaches_fastv_and_spatial_options():
    """FastV's layer and ratio and the spatial grid were reachable from no command line before."""
    args = cli_parser().parse_args(
        ["--token-reduction", "fastv", "--reduction-ratio", "0.25", "--reduction-llm-layer", "3"]
    )
    config = apply_changes(ReductionConfig(), reduction_changes(args))
    assert (config.method, config.ratio, config.llm_layer) == ("fastv", 0.25, 3)
    args = cli_parser().parse_args(["--token-reduction", "spatial", "--reduction-grid", "5x8"])
    assert apply_changes(ReductionConfig(), reduction_changes(args)).grid == (5, 8)
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["--reduction-grid", "five"])


def test_training_flags_are_generated_for_hf_argument_parser():
    parser = transformers.HfArgumentParser((ReductionArguments,))
    argv = ["--token_reduction", "fastv", "--reduction_ratio", "0.5", "--reduction_llm_layer", "1"]
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    assert args.to_config() == ReductionConfig("fastv", ratio=0.5, llm_layer=1)
    (args,) = parser.parse_args_into_dataclasses(
        args=["--token_reduction", "spatial", "--reduction_grid", "4x6"]
    )
    assert args.to_config() == ReductionConfig("spatial", grid=(4, 6))
    (args,) = parser.parse_args_into_dataclasses(args=[])
    assert args.to_config() == ReductionConfig()


def test_model_args_strings_are_parsed_by_each_option():
    changes = reduction_changes(
        {"token_reduction": "fastv", "reduction_ratio": "0.5", "reduction_llm_layer": "4"}
    )
    assert changes == {"method": "fastv", "ratio": 0.5, "llm_layer": 4}
    assert reduction_changes({"reduction_budget": "0"}) == {"budget": CLEAR}
    with pytest.raises(ValueError, match="reduction_llm_layer='deep'"):
        reduction_changes({"reduction_llm_layer": "deep"})


def test_an_option_the_method_does_not_read_is_refused():
    with pytest.raises(ValueError, match="the 'sequential' reducer has none"):
        ReductionConfig("sequential", budget=4, grid=(2, 2))
    with pytest.raises(ValueError, match="the 'prumerge' reducer has none"):
        ReductionConfig("prumerge", llm_layer=5)
    with pytest.raises(ValueError, match="the 'none' reducer has none"):
        ReductionConfig("none", grid=(2, 2))
    with pytest.raises(ValueError, match="keeps every token"):
        ReductionConfig("none", budget=8)
    # variant is every method's: which reading to run
    assert ReductionConfig("sequential", budget=4, variant="paper").variant == "paper"


def test_each_reducer_declares_options_that_exist():
    names = {f.name for f in option_fields()}
    for method in available_reducers():
        assert get_reducer(method).options <= names, method


def test_a_method_switch_resets_what_the_new_method_does_not_read():
    recorded = ReductionConfig("fastv", ratio=0.5, llm_layer=4)
    assert apply_changes(recorded, {"method": "prumerge"}) == ReductionConfig("prumerge", ratio=0.5)
    assert apply_changes(recorded, {"method": "none"}) == ReductionConfig()
    # a budget replaces a recorded ratio, and clearing the budget clears a ratio
    assert apply_changes(recorded, {"budget": 64}) == ReductionConfig("fastv", budget=64, llm_layer=4)
    assert apply_changes(ReductionConfig("prumerge", ratio=0.1), {"budget": CLEAR}) == ReductionConfig(
        "prumerge"
    )


def test_looking_up_a_reducer_does_not_import_the_language_model():
    code = (
        "import sys\n"
        "from llava.model.token_reduction import get_reducer, ReductionConfig\n"
        "assert get_reducer('fastv').in_llm and ReductionConfig('fastv', ratio=0.5).in_llm\n"
        "print(sorted(m for m in sys.modules if m.startswith('llava.model.language_model')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
