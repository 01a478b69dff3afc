"""Talking to an Ollama server over its HTTP API."""
