"""A stand-in for Colab's ``google.colab`` for tests/test_colab.py (put on PYTHONPATH for the kernel only)."""
