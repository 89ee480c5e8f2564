"""tumorbench's Ray Serve application, shipped inside the package so an installed tumorbench can serve.

``tumorbench serve --models DIR`` or ``serve run serve/config.yaml`` (import path
``tumorbench.serving.app:build_app``) start it.
"""
