"""Secrets and signatures: the only code that touches key material."""
