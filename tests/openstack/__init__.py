"""A real OpenStack control plane for the provider's tests (and `make openstack`)."""
