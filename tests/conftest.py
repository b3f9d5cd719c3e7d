import os

# Before any test module imports torch: see ssl_audio/__init__.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
