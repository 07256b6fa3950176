"""Defence benchmark: ART poisoning attacks vs gradscore and peer defences (see run.py)."""
