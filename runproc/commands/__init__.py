"""One module per subcommand; each exposes `run(context) -> exit code`."""
