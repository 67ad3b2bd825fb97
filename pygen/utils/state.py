"""The training state a resumed run needs besides the model's weights."""

from __future__ import annotations

from typing import Any


class Resumable:
    """``state_dict`` / ``load_state_dict`` over the attributes named in ``resumable``: the
    optimizers, loss scalers, moving averages and image pools of a trainer, each with its own
    ``state_dict`` (an attribute that is None, e.g. an EMA that is off, is skipped)."""

    resumable: tuple[str, ...] = ()

    def _kept(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in self.resumable if getattr(self, name) is not None
        }

    def state_dict(self) -> dict[str, Any]:
        """The states of the ``resumable`` attributes, by name."""
        return {name: obj.state_dict() for name, obj in self._kept().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; a state that lacks one of the attributes is an error."""
        kept = self._kept()
        missing = sorted(set(kept) - set(state))
        if missing:
            raise ValueError(f"the {type(self).__name__} state lacks {', '.join(missing)}")
        for name, obj in kept.items():
            obj.load_state_dict(state[name])
