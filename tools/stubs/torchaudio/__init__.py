"""Empty stand-in for torchaudio: openunmix imports it at import time, but the model,
the Separator and its torch filterbank never use it, and no torchaudio wheel matches
torch 2.13. Only for the fixture scripts run in the torch venv (PYTHONPATH=tools/stubs)."""
