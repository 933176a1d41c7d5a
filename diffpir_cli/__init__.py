"""The ``diffpir`` command line: one module per command group, each registering itself on the app."""
