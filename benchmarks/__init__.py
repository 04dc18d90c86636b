"""The benchmarks (``python benchmarks/bench_*.py``; see ``benchmarks/README.md``), importable as a package for the tests."""
