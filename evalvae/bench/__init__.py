"""Throughput and memory of VAEs over a grid of resolutions, batch sizes, dtypes and memory modes.

``python -m evalvae bench`` (:func:`evalvae.cli.bench_app`) calls :func:`evalvae.bench.runner.bench`.
The modules, in the order a configuration meets them: :mod:`~evalvae.bench.grid` (options),
:mod:`~evalvae.bench.inputs` (photos and their latents), :mod:`~evalvae.bench.isolate` (one
process per configuration on CPU), :mod:`~evalvae.bench.worker` (one configuration, measured with
:mod:`~evalvae.bench.timing`, :mod:`~evalvae.bench.memory` and :mod:`~evalvae.bench.fidelity`),
:mod:`~evalvae.bench.results` and :mod:`~evalvae.bench.plots` (outputs), and
:mod:`~evalvae.bench.nonfinite` (the non-finite findings, with the override that upcasts them).
"""
