"""A name -> object registry whose lookup errors list the known names."""

from sft_keras.errors import ConfigError


class Registry:
    """Maps names to builders (or any object) for one kind of component.

    Args:
        kind: str. What the registry holds, used in error messages
            (e.g. `"backbone"`).
        config_key: str. The config key users set to pick a name, used in
            error messages (e.g. `"model.backbone"`).

    Example:

    >>> optimizers = Registry("optimizer", config_key="train.optimizer")
    >>> _ = optimizers.register("sgd", lambda lr: f"SGD({lr})")
    >>> optimizers.get("sgd")(0.1)
    'SGD(0.1)'
    >>> optimizers.get("adm")
    Traceback (most recent call last):
    ...
    sft_keras.errors.ConfigError: Unknown optimizer 'adm' for train.optimizer. Known optimizers: 'sgd'.
    """

    def __init__(self, kind, config_key):
        self.kind = kind
        self.config_key = config_key
        self._entries = {}

    def register(self, name, value):
        """Registers `value` under `name`; returns `value`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered.")
        self._entries[name] = value
        return value

    def get(self, name):
        """Returns the entry for `name`, or raises `ConfigError` listing the known names."""
        if name not in self._entries:
            known = ", ".join(repr(n) for n in sorted(self._entries))
            raise ConfigError(
                f"Unknown {self.kind} {name!r} for {self.config_key}. "
                f"Known {self.kind}s: {known}."
            )
        return self._entries[name]

    def names(self):
        """Returns the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
