"""loopml benchmarks: each ``bench_*.py`` module has ``main(argv)``; ``python -m benchmarks [NAME ...]`` runs them."""
