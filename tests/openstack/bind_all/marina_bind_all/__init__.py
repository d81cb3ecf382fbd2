"""An ML2 mechanism driver that binds every port on any segment, ACTIVE at once.

The test control plane has no L2 agent (nothing would plug a port into a
real switch), and without a driver that binds them nova's fake servers never
get past their network setup. Binding here is bookkeeping only: no traffic
flows, which is all a provider test needs.
"""

from __future__ import annotations

from typing import Any

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAll(api.MechanismDriver):  # type: ignore[misc]
    """Binds whatever port is offered, on the first segment offered."""

    def initialize(self) -> None:
        """Nothing to connect to."""

    def bind_port(self, context: Any) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OTHER,
                {portbindings.CAP_PORT_FILTER: False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
