"""What every package of the system shares, at the bottom of the layers: the typed data contracts
(:mod:`core.types`), the config section base and the one YAML + ``--set`` loader (:mod:`core.config`), the root
of the user-facing errors (:mod:`core.errors`) and the one template fusion (:mod:`core.fusion`).

``core`` imports no other package of the system; every other package may import it.
"""
