"""Backends as plug-ins: the protocol a backend implements (`base`), the registry of them (`registry`), and one
module per provider. Nothing outside this package (and `clients/`) names a provider."""
