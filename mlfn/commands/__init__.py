"""Click commands, one module per area; what they share (the option groups and the typed
context object) is declared once in mlfn.commands.options.

A command module imports only click and light mlfn modules at import time; the work is
done by library functions it imports inside the command body. Commands never import each
other's names."""
