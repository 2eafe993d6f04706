"""The `python -m central` commands: one function per subcommand; reports, verify and the demo.

May import: everything (it is the top, with central.app which it starts)."""
