"""Command-line front end of gradscore (installed as the ``gradscore_cli`` package)."""
