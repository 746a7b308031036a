"""The `streamrec` commands, one module per command group: each adds its parser (``register``)
next to the function that runs it. streamrec/cli.py assembles them."""
