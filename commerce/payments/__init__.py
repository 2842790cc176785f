"""Payments through a provider: the provider interface, webhook signatures, the sandbox client and
the ``Payments`` part of ``Commerce`` (checkout -> provider -> signed webhook -> confirm or refund)."""
