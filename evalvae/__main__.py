"""``python -m evalvae <command> [args]`` and the ``evalvae`` console script."""

from __future__ import annotations

import atexit
import difflib
import gc
import importlib
import sys

# command -> (module:function, one-line help). Hydra commands take overrides; others take flags.
COMMANDS = {
    "run": (
        "evalvae.cli:run_app",
        "evaluate VAEs on an image dataset: evalvae run +vae=ft-mse [dataset=folder dataset.path=DIR]",
    ),
    "vaes": (
        "evalvae.cli:vaes_main",
        "list the VAEs and codecs that +vae=NAME selects, with their default weights: evalvae vaes",
    ),
    "protocols": (
        "evalvae.cli:protocols_main",
        "list the published protocols that protocol=NAME sets (dataset, metrics, settings): evalvae protocols",
    ),
    "ref": (
        "evalvae.cli:ref_app",
        "cache the originals' rFID/KID statistics: evalvae ref dataset=folder dataset.path=DIR",
    ),
    "compare": (
        "evalvae.compare.cli:main",
        "check results against a baseline for CI: evalvae compare BASELINE.json RUN_DIR [--tolerances FILE]",
    ),
    "report": (
        "evalvae.report.cli:main",
        "HTML and markdown report of runs, side by side: evalvae report RUN_DIR [RUN_DIR ...] [--out DIR]",
    ),
    "cache": (
        "evalvae.cache:main",
        "show or clean the cache (latents, results, ...): evalvae cache ls | prune [KIND ...] [--older-than DAYS]",
    ),
    "bench": (
        "evalvae.cli:bench_app",
        "time and memory per image: evalvae bench +vae=[taesd,ft-mse] bench.resolutions=[256,512]",
    ),
    "latents": (
        "evalvae.cli:latents_app",
        "latent statistics, suggested scaling/shift factors, spectra, noise sensitivity: evalvae latents +vae=taesd",
    ),
    "robustness": (
        "evalvae.cli:robustness_app",
        "tiled, fp16/bf16 and 256-1024 px against each VAE's own fp32 output: evalvae robustness +vae=[taesd,taef2]",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return (
        "usage: evalvae <command> [args]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nHydra commands accept overrides, --help, --cfg job and -m (sweeps)."
    )


def main(argv: list[str] | None = None) -> None:
    # Python's last garbage collections at exit walk every object torch and pandas made (about half
    # a second); frozen, they are skipped. Exit handlers still run (logging flushes and closes its files).
    atexit.register(gc.freeze)
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        print(
            f"evalvae: unknown command {command!r}; {hint}choose one of {', '.join(COMMANDS)}\n\n{usage()}",
            file=sys.stderr,
        )
        sys.exit(2)
    module, func = COMMANDS[command][0].split(":")
    hydra_app = module == "evalvae.cli"
    if hydra_app:  # misspelt keys and options get "did you mean" before Hydra composes
        from evalvae import cli

        cli.check_command_line(command, rest)
        cli.reset_status()
    sys.argv = [f"evalvae {command}", *rest]
    try:
        getattr(importlib.import_module(module), func)()
    except KeyboardInterrupt as e:  # a job says how far it got (evalvae.errors.Interrupted)
        print(f"evalvae: {e.message() if hasattr(e, 'message') else 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    if hydra_app and cli.exit_status():  # an incomplete job of the run or sweep (cli._call)
        sys.exit(int(cli.exit_status()))


if __name__ == "__main__":
    main()
