"""``python -m evalvae <command> [args]`` and the ``evalvae`` console script."""

from __future__ import annotations

import sys

USAGE = """usage: evalvae <command> [hydra overrides]

commands:
  run      evaluate VAEs on an image dataset        evalvae run +vae=ft-mse dataset=folder dataset.path=DIR

Hydra options (--help, --cfg job, -m for sweeps) follow the command."""

COMMANDS = {"run": "run_app"}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"evalvae: unknown command {command!r}; choose one of {', '.join(COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from evalvae import cli

    sys.argv = [f"evalvae {command}", *rest]
    getattr(cli, COMMANDS[command])()


if __name__ == "__main__":
    main()
