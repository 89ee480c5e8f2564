"""The Serve config (``serve run serve/config.yaml``) and the HTTP client; the application is ``tumorbench.serving``."""
